package guest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLoadModules(t *testing.T) {
	dir := t.TempDir()
	order := "virtio_ring.ko\n# a comment\n\n  virtio.ko  \nvsock_loopback.ko\nvirtio_blk.ko\n"
	if err := os.WriteFile(filepath.Join(dir, "order"), []byte(order), 0o644); err != nil {
		t.Fatal(err)
	}
	var tried []string
	loaded := loadModules(testLogger(t), dir, func(path string) error {
		tried = append(tried, path)
		if strings.HasSuffix(path, "vsock_loopback.ko") {
			return errors.New("optional module missing")
		}
		return nil
	})
	wantTried := []string{"virtio_ring.ko", "virtio.ko", "vsock_loopback.ko", "virtio_blk.ko"}
	for i := range wantTried {
		wantTried[i] = filepath.Join(dir, wantTried[i])
	}
	if !slices.Equal(tried, wantTried) {
		t.Errorf("tried %q, want %q", tried, wantTried)
	}
	// A failure is logged and loading goes on.
	if want := []string{"virtio_ring.ko", "virtio.ko", "virtio_blk.ko"}; !slices.Equal(loaded, want) {
		t.Errorf("loaded %q, want %q", loaded, want)
	}
	if got := loadModules(testLogger(t), t.TempDir(), nil); got != nil {
		t.Errorf("without an order file loaded %q", got)
	}
}

func TestLoadModuleErrors(t *testing.T) {
	if err := loadModule(filepath.Join(t.TempDir(), "missing.ko")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("loadModule(missing) = %v, want ErrNotExist", err)
	}
}

func TestWaitDevice(t *testing.T) {
	dev := filepath.Join(t.TempDir(), "vdz")
	start := time.Now()
	err := waitDevice(dev, 50*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "did not appear") {
		t.Fatalf("waitDevice(missing) = %v", err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("waitDevice took %s to give up after 50ms", took)
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		_ = os.WriteFile(dev, nil, 0o600)
	}()
	if err := waitDevice(dev, 5*time.Second); err != nil {
		t.Fatalf("waitDevice(appearing) = %v", err)
	}
}

func TestMounted(t *testing.T) {
	if !mounted("/proc") {
		t.Error("/proc is not seen as a mount point")
	}
	if mounted(t.TempDir()) {
		t.Error("a plain directory is seen as a mount point")
	}
}

// TestDeleteTreeStaysOnItsFilesystem builds a tree on a tmpfs with another
// tmpfs mounted inside, as the root disk is mounted inside the initramfs,
// and checks that clearing it deletes everything but the inner mount.
func TestDeleteTreeStaysOnItsFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
	root := t.TempDir()
	if err := unix.Mount("tmpfs", root, "tmpfs", 0, "size=8m"); err != nil {
		t.Skipf("cannot mount tmpfs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(root, unix.MNT_DETACH) })
	for _, d := range []string{"lib/modules/superjolt", "newroot", "dev", "empty"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]int{"init": 1000, "lib/modules/superjolt/virtio.ko": 500, "lib/modules/superjolt/order": 10}
	for f, size := range files {
		if err := os.WriteFile(filepath.Join(root, f), make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("init", filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}
	inner := filepath.Join(root, "newroot")
	if err := unix.Mount("tmpfs", inner, "tmpfs", 0, "size=8m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(inner, unix.MNT_DETACH) })
	keep := filepath.Join(inner, "sbin-superjolt-agent")
	if err := os.WriteFile(keep, []byte("the root disk"), 0o755); err != nil {
		t.Fatal(err)
	}

	freed, err := clearInitramfs(root)
	if err != nil {
		t.Fatalf("clearInitramfs: %v", err)
	}
	if freed != 1510 {
		t.Errorf("freed %d bytes, want 1510", freed)
	}
	if b, err := os.ReadFile(keep); err != nil || string(b) != "the root disk" {
		t.Fatalf("the inner mount was touched: %q, %v", b, err)
	}
	left, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Name() != "newroot" {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("left %q, want only newroot", names)
	}
}

func TestClearInitramfsRefusesADisk(t *testing.T) {
	// The test's own temp dir is on a disk filesystem or a tmpfs; only
	// check the refusal where it is not a tmpfs.
	dir := t.TempDir()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	if sfs.Type == unix.TMPFS_MAGIC || sfs.Type == unix.RAMFS_MAGIC {
		t.Skipf("%s is on a tmpfs: nothing to refuse", dir)
	}
	if err := os.WriteFile(filepath.Join(dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := clearInitramfs(dir); err == nil {
		t.Fatal("clearInitramfs cleared a directory that is not an initramfs")
	}
	if _, err := os.Stat(filepath.Join(dir, "f")); err != nil {
		t.Fatalf("the file is gone: %v", err)
	}
}
