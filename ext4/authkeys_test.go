package ext4

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// mkfsFrom makes an ext4 filesystem of 32 MiB in a new file at path holding
// what the directory src holds (mkfs.ext4 -d).
func mkfsFrom(t testing.TB, path, src string) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, 32<<20); err != nil {
		t.Fatal(err)
	}
	bin, _ := Tool("mkfs.ext4")
	if out, err := exec.Command(bin, "-q", "-F", "-d", src, path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4 -d: %v: %s", err, out)
	}
}

// debugfsR runs one read-only debugfs command on img and returns its stdout.
func debugfsR(t testing.TB, img, cmd string) string {
	t.Helper()
	bin, _ := Tool("debugfs")
	out, err := exec.Command(bin, "-R", cmd, img).Output()
	if err != nil {
		t.Fatalf("debugfs -R %q: %v", cmd, err)
	}
	return string(out)
}

// checkStat fails unless path in img has the mode and owner 0:0.
func checkStat(t testing.TB, img, path, mode string) {
	t.Helper()
	st := debugfsR(t, img, "stat "+path)
	for _, want := range []string{"Mode:  " + mode, "User:     0   Group:     0"} {
		if !strings.Contains(st, want) {
			t.Errorf("stat %s: no %q in\n%s", path, want, st)
		}
	}
}

func requireDebugfs(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"mkfs.ext4", "debugfs"} {
		if _, err := Tool(tool); err != nil {
			t.Skipf("needs %s (apt-get install e2fsprogs)", tool)
		}
	}
}

const (
	keyA = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"
	keyB = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB9Cjdrj1JoU9J0xCa0Hjn8XvZ4x2dT5r0m2ODQrd5aa bob@desk"
)

// TestAddAuthorizedKeys: keys land in /root/.ssh/authorized_keys, 0600 in
// a 0700 directory, all owned by root; a second call appends and skips a
// key already there; an image with /root but no .ssh, one with no /root at
// all, and one whose authorized_keys has lines of its own all work; a file
// that is no ext filesystem is refused with an error that says so.
func TestAddAuthorizedKeys(t *testing.T) {
	requireDebugfs(t)
	ctx := context.Background()
	dir := t.TempDir()

	image := func(t *testing.T, files map[string]string, dirs ...string) string {
		src := t.TempDir()
		for _, d := range dirs {
			if err := os.MkdirAll(filepath.Join(src, d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for name, text := range files {
			p := filepath.Join(src, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		img := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".img")
		mkfsFrom(t, img, src)
		return img
	}

	t.Run("twice appends", func(t *testing.T) {
		img := image(t, map[string]string{"etc/hostname": "x\n"}, "root")
		if err := AddAuthorizedKeys(ctx, img, []string{keyA}); err != nil {
			t.Fatal(err)
		}
		if err := AddAuthorizedKeys(ctx, img, []string{keyA, keyB}); err != nil {
			t.Fatal(err)
		}
		if got, want := debugfsR(t, img, "cat "+AuthorizedKeysPath), keyA+"\n"+keyB+"\n"; got != want {
			t.Errorf("authorized_keys = %q, want %q", got, want)
		}
		checkStat(t, img, AuthorizedKeysPath, "0600")
		checkStat(t, img, "/root/.ssh", "0700")
		// /root was there: left as mkfs made it.
		checkStat(t, img, "/root", "0755")
	})

	t.Run("no root dir", func(t *testing.T) {
		img := image(t, map[string]string{"etc/hostname": "x\n"})
		if err := AddAuthorizedKeys(ctx, img, []string{keyB}); err != nil {
			t.Fatal(err)
		}
		if got := debugfsR(t, img, "cat "+AuthorizedKeysPath); got != keyB+"\n" {
			t.Errorf("authorized_keys = %q", got)
		}
		checkStat(t, img, "/root", "0700")
		checkStat(t, img, "/root/.ssh", "0700")
		checkStat(t, img, AuthorizedKeysPath, "0600")
	})

	t.Run("keeps existing lines", func(t *testing.T) {
		img := image(t, map[string]string{"root/.ssh/authorized_keys": "# mine\n" + keyA})
		if err := AddAuthorizedKeys(ctx, img, []string{keyB}); err != nil {
			t.Fatal(err)
		}
		if got, want := debugfsR(t, img, "cat "+AuthorizedKeysPath), "# mine\n"+keyA+"\n"+keyB+"\n"; got != want {
			t.Errorf("authorized_keys = %q, want %q", got, want)
		}
		checkStat(t, img, AuthorizedKeysPath, "0600")
	})

	t.Run("not ext", func(t *testing.T) {
		p := filepath.Join(dir, "raw.img")
		if err := os.WriteFile(p, make([]byte, 64<<10), 0o644); err != nil {
			t.Fatal(err)
		}
		err := AddAuthorizedKeys(ctx, p, []string{keyA})
		if err == nil || !strings.Contains(err.Error(), "no ext2/3/4 filesystem") {
			t.Fatalf("AddAuthorizedKeys on a raw file: %v; want an error saying it is no ext filesystem", err)
		}
	})

	t.Run("not a directory", func(t *testing.T) {
		img := image(t, map[string]string{"root/.ssh": "a file\n"})
		err := AddAuthorizedKeys(ctx, img, []string{keyA})
		if err == nil || !strings.Contains(err.Error(), "not a directory") {
			t.Fatalf("AddAuthorizedKeys with /root/.ssh a file: %v; want a not-a-directory error", err)
		}
	})

	t.Run("bad line", func(t *testing.T) {
		img := image(t, nil, "root")
		if err := AddAuthorizedKeys(ctx, img, []string{keyA + "\n" + keyB}); err == nil {
			t.Fatal("a key with a newline in it was written")
		}
	})
}
