// Package imagetest makes the files that image import tests give [images.Import]: root trees
// unpacked from a tarball, ext4 file systems, partitioned raw disks and qcow2 disks, made with the
// tools a user would make them with (tar, mkfs.ext4 -d, sfdisk, mkfs.vfat, qemu-img). It also reads
// an image's ext4 file system without mounting it (debugfs). It does not import package images, so
// that package's own tests can use it.
//
// [images.Import]: https://pkg.go.dev/github.com/superjolt/superjolt/appliance/images#Import
package imagetest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Need skips tb, naming what is missing, unless every program is installed (in PATH or an sbin
// directory) and, when root is true, the test runs as root.
func Need(tb testing.TB, root bool, programs ...string) {
	tb.Helper()
	var missing []string
	if root && os.Geteuid() != 0 {
		missing = append(missing, "root (to unpack owners, mount and loop devices)")
	}
	for _, p := range programs {
		if LookPath(p) == "" {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		tb.Skipf("needs %s", strings.Join(missing, ", "))
	}
}

// LookPath finds a program in PATH or in the sbin directories a non-root PATH may lack ("" when it
// is nowhere).
func LookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Run runs a program and fails tb unless it succeeds; it returns its standard output.
func Run(tb testing.TB, name string, args ...string) string {
	tb.Helper()
	out, err := run(name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// RunIn is Run with stdin as the program's standard input.
func RunIn(tb testing.TB, stdin, name string, args ...string) string {
	tb.Helper()
	out, err := runIn(stdin, name, args...)
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

func run(name string, args ...string) (string, error) { return runIn("", name, args...) }

func runIn(stdin, name string, args ...string) (string, error) {
	p := LookPath(name)
	if p == "" {
		return "", fmt.Errorf("%s not found", name)
	}
	cmd := exec.Command(p, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Unpack unpacks a root file system tarball into dir as root does (owners, modes, extended
// attributes), and, when members are given, only those (GNU tar wildcards, which match across /).
func Unpack(tb testing.TB, tarball, dir string, members ...string) {
	tb.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	args := []string{"--extract", "--file", tarball, "--directory", dir, "--numeric-owner",
		"--same-owner", "--preserve-permissions", "--xattrs", "--xattrs-include=*"}
	if len(members) > 0 {
		args = append(args, "--wildcards", "--wildcards-match-slash")
		args = append(args, members...)
	}
	Run(tb, "tar", args...)
}

// Tar packs the tree at dir into a tarball at out, as mmdebstrap's are (members named ./...).
func Tar(tb testing.TB, dir, out string) {
	tb.Helper()
	Run(tb, "tar", "--create", "--file", out, "--directory", dir, "--numeric-owner", "--xattrs", "--xattrs-include=*", ".")
}

// MakeExt4 makes an ext4 file system image at out holding the tree at dir (mkfs.ext4 -d), with
// room to spare, and returns its size in bytes.
func MakeExt4(tb testing.TB, dir, out string) int64 {
	tb.Helper()
	f := strings.Fields(Run(tb, "du", "-s", "-x", "--block-size=1", dir))
	used, err := strconv.ParseInt(f[0], 10, 64)
	if err != nil {
		tb.Fatalf("du %s: %v", dir, err)
	}
	size := (used+used/3+(64<<20))>>20<<20 + 1<<20
	os.Remove(out)
	Run(tb, "mkfs.ext4", "-q", "-F", "-t", "ext4", "-d", dir, out, strconv.FormatInt(size>>10, 10)+"k")
	return size
}

// Partition offsets and sizes in the disks [MakeDisk] makes.
const (
	ESPStart  = 1 << 20
	ESPSize   = 16 << 20
	BootStart = ESPStart + ESPSize
	BootSize  = 32 << 20
	RootStart = BootStart + BootSize
)

// MakeDisk makes a raw disk at out with a GPT (sfdisk) and three partitions, as a cloud image has
// them: an EFI system partition (vfat when mkfs.vfat is installed, else left empty), an ext4 /boot
// without an os-release, both of which Import must pass over, and at RootStart a Linux root
// partition holding the file system image fsImage.
func MakeDisk(tb testing.TB, fsImage, out string) {
	tb.Helper()
	st, err := os.Stat(fsImage)
	if err != nil {
		tb.Fatal(err)
	}
	rootSize := (st.Size() + 1<<20 - 1) >> 20 << 20
	total := int64(RootStart) + rootSize + 1<<20 // and the backup GPT
	os.Remove(out)
	f, err := os.Create(out)
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(total); err != nil {
		f.Close()
		tb.Fatal(err)
	}
	f.Close()
	script := fmt.Sprintf("label: gpt\n"+
		"start=%d, size=%d, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"+
		"start=%d, size=%d, type=BC13C2FF-59E6-4262-A352-B275FD6F7172, name=boot\n"+
		"start=%d, size=%d, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=root\n",
		ESPStart/512, ESPSize/512, BootStart/512, BootSize/512, RootStart/512, rootSize/512)
	RunIn(tb, script, "sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", out)
	if LookPath("mkfs.vfat") != "" {
		esp := out + ".esp"
		Run(tb, "mkfs.vfat", "-C", esp, strconv.Itoa(ESPSize>>10))
		ddInto(tb, esp, out, ESPStart)
		os.Remove(esp)
	}
	bootTree := out + ".boot.d"
	if err := os.MkdirAll(filepath.Join(bootTree, "grub"), 0o755); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bootTree, "grub", "grub.cfg"), []byte("# not a root file system\n"), 0o644); err != nil {
		tb.Fatal(err)
	}
	boot := out + ".boot"
	os.Remove(boot)
	Run(tb, "mkfs.ext4", "-q", "-F", "-L", "boot", "-d", bootTree, boot, strconv.Itoa(BootSize>>10)+"k")
	os.RemoveAll(bootTree)
	ddInto(tb, boot, out, BootStart)
	os.Remove(boot)
	ddInto(tb, fsImage, out, RootStart)
}

// ddInto copies the file src into dst at byte offset off, keeping dst sparse.
func ddInto(tb testing.TB, src, dst string, off int64) {
	tb.Helper()
	Run(tb, "dd", "if="+src, "of="+dst, "bs=1M", "seek="+strconv.FormatInt(off>>20, 10),
		"conv=notrunc,sparse", "status=none")
}

// QCOW2 converts the raw disk at raw into a qcow2 disk at out (qemu-img convert).
func QCOW2(tb testing.TB, raw, out string) {
	tb.Helper()
	os.Remove(out)
	Run(tb, "qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, out)
}

// Debugfs runs one debugfs request (read-only) on the ext4 file system image img and returns its
// output.
func Debugfs(tb testing.TB, img, request string) string {
	tb.Helper()
	p := LookPath("debugfs")
	if p == "" {
		tb.Skip("needs debugfs (e2fsprogs)")
	}
	b, err := exec.Command(p, "-R", request, img).Output()
	if err != nil {
		tb.Fatalf("debugfs -R %q %s: %v", request, img, err)
	}
	return string(b)
}

// Exists says whether the path p is in the ext4 file system image img.
func Exists(tb testing.TB, img, p string) bool {
	tb.Helper()
	p2 := LookPath("debugfs")
	if p2 == "" {
		tb.Skip("needs debugfs (e2fsprogs)")
	}
	cmd := exec.Command(p2, "-R", "stat "+p, img)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("debugfs stat %s: %v", p, err)
	}
	return !strings.Contains(stderr.String(), "File not found")
}
