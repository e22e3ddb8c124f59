package images

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestRewriteFstab(t *testing.T) {
	in := `# /etc/fstab: static file system information.
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
UUID=0a3407de-014b-458b-b5c1-848e92a327a3 /               ext4    errors=remount-ro 0       1
LABEL=boot /boot ext4 defaults 0 2
/dev/sda15 /boot/efi vfat umask=0077 0 1
PARTUUID=9b1f6c2e-01 none swap sw 0 0
/dev/mapper/vg-home /home xfs defaults 0 2
tmpfs /tmp tmpfs defaults,size=512m 0 0
proc /proc proc defaults 0 0
server:/export /mnt/nfs nfs defaults 0 0
`
	out := rewriteFstab(in)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	var root, kept, commented []string
	for _, l := range lines {
		f := strings.Fields(l)
		switch {
		case len(f) > 1 && f[1] == "/" && !strings.HasPrefix(l, "#"):
			root = append(root, l)
		case strings.HasPrefix(l, "#"):
			commented = append(commented, l)
		default:
			kept = append(kept, l)
		}
	}
	if len(root) != 1 || root[0] != rootFstabLine {
		t.Errorf("root entries %q, want only %q", root, rootFstabLine)
	}
	for _, want := range []string{
		"#UUID=0a3407de-014b-458b-b5c1-848e92a327a3 /               ext4    errors=remount-ro 0       1",
		"#LABEL=boot /boot ext4 defaults 0 2",
		"#/dev/sda15 /boot/efi vfat umask=0077 0 1",
		"#PARTUUID=9b1f6c2e-01 none swap sw 0 0",
		"#/dev/mapper/vg-home /home xfs defaults 0 2",
		"# /etc/fstab: static file system information.",
	} {
		if !slices.Contains(commented, want) {
			t.Errorf("no line %q in\n%s", want, out)
		}
	}
	for _, want := range []string{
		"tmpfs /tmp tmpfs defaults,size=512m 0 0",
		"proc /proc proc defaults 0 0",
		"server:/export /mnt/nfs nfs defaults 0 0",
	} {
		if !slices.Contains(kept, want) {
			t.Errorf("line %q not kept as it was in\n%s", want, out)
		}
	}
	if len(kept) != 3 {
		t.Errorf("active entries %q, want the root line, tmpfs, proc and nfs only", kept)
	}
	if again := rewriteFstab(out); again != out {
		t.Errorf("not idempotent: once\n%s\ntwice\n%s", out, again)
	}

	// mmdebstrap's fstab is a comment only; an image without one gets just the root line.
	for _, in := range []string{"", "# UNCONFIGURED FSTAB FOR BASE SYSTEM\n"} {
		out := rewriteFstab(in)
		if !strings.Contains(out, "\n"+rootFstabLine+"\n") || strings.Count(out, rootFstabLine) != 1 {
			t.Errorf("rewriteFstab(%q) = %q", in, out)
		}
		if rewriteFstab(out) != out {
			t.Errorf("rewriteFstab(%q) not idempotent", in)
		}
	}
}

func TestCompareRelease(t *testing.T) {
	ordered := []string{"5.10.0-30-cloud-amd64", "6.1.0-9-cloud-amd64", "6.1.0-10-cloud-amd64", "6.1.0-57-cloud-amd64", "6.10.0-1-cloud-amd64", "6.10.0-1-cloud-amd64+1"}
	for i := range ordered {
		for j := range ordered {
			c := compareRelease(ordered[i], ordered[j])
			if (i < j && c >= 0) || (i == j && c != 0) || (i > j && c <= 0) {
				t.Errorf("compareRelease(%q, %q) = %d", ordered[i], ordered[j], c)
			}
		}
	}
	shuffled := []string{ordered[3], ordered[5], ordered[0], ordered[2], ordered[4], ordered[1]}
	slices.SortFunc(shuffled, compareRelease)
	if !slices.Equal(shuffled, ordered) {
		t.Errorf("sorted %v, want %v", shuffled, ordered)
	}
}

func TestDetectFormat(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, size int, put map[int]string) string {
		b := make([]byte, size)
		for off, s := range put {
			copy(b[off:], s)
		}
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := bytes.Repeat([]byte("not an image, just some bytes. "), 4096)
	if err := os.WriteFile(filepath.Join(dir, "garbage"), garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		path string
		want Format
	}{
		{file("disk.qcow2", 4096, map[int]string{0: "QFI\xfb\x00\x00\x00\x03"}), FormatQCOW2},
		{file("root.tar", 10240, map[int]string{0: "./", 257: "ustar\x0000"}), FormatTar},
		{file("root.tar.gz", 100, map[int]string{0: "\x1f\x8b\x08"}), FormatTar},
		{file("root.tar.xz", 100, map[int]string{0: "\xfd7zXZ\x00"}), FormatTar},
		{file("root.tar.zst", 100, map[int]string{0: "\x28\xb5\x2f\xfd"}), FormatTar},
		{file("root.tar.bz2", 100, map[int]string{0: "BZh9"}), FormatTar},
		{file("mbr.img", 1<<20, map[int]string{446: "\x80", 510: "\x55\xaa"}), FormatRaw},
		{file("gpt.img", 1<<20, map[int]string{510: "\x55\xaa", 512: "EFI PART"}), FormatRaw},
		{file("ext4.img", 1<<20, map[int]string{1080: "\x53\xef"}), FormatRaw},
		{file("xfs.img", 1<<20, map[int]string{0: "XFSB"}), FormatRaw},
		{file("btrfs.img", 1<<20, map[int]string{0x10040: "_BHRfS_M"}), FormatRaw},
	} {
		got, err := DetectFormat(c.path)
		if err != nil || got != c.want {
			t.Errorf("DetectFormat(%s) = %q, %v; want %q", filepath.Base(c.path), got, err, c.want)
		}
	}
	for _, p := range []string{filepath.Join(dir, "garbage"), file("empty", 0, nil), file("short", 3, map[int]string{0: "QF"})} {
		got, err := DetectFormat(p)
		if !errors.Is(err, ErrUnknownFormat) {
			t.Errorf("DetectFormat(%s) = %q, %v; want ErrUnknownFormat", filepath.Base(p), got, err)
		} else if !strings.Contains(err.Error(), "qcow2") || !strings.Contains(err.Error(), filepath.Base(p)) {
			t.Errorf("DetectFormat(%s): %v: want the file named and what Import takes", filepath.Base(p), err)
		}
	}
	if got, err := DetectFormat(dir); err == nil || errors.Is(err, ErrUnknownFormat) || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("DetectFormat(a directory) = %q, %v; want a not-a-regular-file error", got, err)
	}
	if _, err := DetectFormat(filepath.Join(dir, "absent")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("DetectFormat(absent file): %v, want ErrNotExist", err)
	}
}

func TestCheckPackages(t *testing.T) {
	if err := CheckPackages([]string{"postgresql", "postgresql-15", "foo=1.2-3", "libc6=2.36-9+deb12u4", "g++", "nginx/bookworm-backports", "libstdc++6", "x11-apps"}); err != nil {
		t.Errorf("good names refused: %v", err)
	}
	if err := CheckPackages(nil); err != nil {
		t.Errorf("no packages refused: %v", err)
	}
	for _, bad := range []string{"Foo", "a", "x;rm -rf", "--evil", "-x", "foo bar", "", "foo=", "$(id)", "foo\nbar", "../x", "foo=1.0;ls"} {
		err := CheckPackages([]string{"postgresql", bad})
		if err == nil {
			t.Errorf("CheckPackages(%q) accepted it", bad)
			continue
		}
		if !strings.Contains(err.Error(), "not a Debian package name") || !strings.Contains(err.Error(), "lowercase") {
			t.Errorf("CheckPackages(%q): %v: want a message saying what a name may be", bad, err)
		}
	}
	many := make([]string, 201)
	for i := range many {
		many[i] = "pkg" + strings.Repeat("x", i%5)
	}
	if err := CheckPackages(many); err == nil || !strings.Contains(err.Error(), "200") {
		t.Errorf("201 packages: %v, want refused", err)
	}
}

func TestRecipeNamed(t *testing.T) {
	r, err := RecipeNamed("debian-12")
	if err != nil || r.Suite != "bookworm" {
		t.Errorf("RecipeNamed(debian-12) = %+v, %v", r, err)
	}
	_, err = RecipeNamed("ubuntu-99")
	if err == nil || !strings.Contains(err.Error(), `"ubuntu-99"`) || !strings.Contains(err.Error(), "debian-12") ||
		!strings.Contains(err.Error(), "image import") {
		t.Errorf("RecipeNamed(ubuntu-99): %v: want the name, the recipes there are, and import named", err)
	}
}
