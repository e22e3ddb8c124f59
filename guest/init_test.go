package guest

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
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
