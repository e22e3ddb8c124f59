//go:build linux && cgo

package btrfs_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// openImage opens a pool with opts and closes it when the test ends (a no-op
// if the test closed it already).
func openImage(tb testing.TB, opts btrfs.OpenImageOptions) *btrfs.Pool {
	tb.Helper()
	p, err := btrfs.OpenImage(context.Background(), opts)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Close() })
	return p
}

// wantUnmounted fails tb if mnt is still mounted or dev still attached.
func wantUnmounted(tb testing.TB, mnt, dev string) {
	tb.Helper()
	if src := mountSource(tb, mnt); src != "" {
		tb.Errorf("%s is still mounted from %s", mnt, src)
	}
	if loopAttached(dev) {
		tb.Errorf("loop device %s is still attached", dev)
	}
}

func TestOpenImageReopen(t *testing.T) {
	btrfstest.Skip(t)
	ctx := context.Background()
	dir := t.TempDir()
	opts := btrfs.OpenImageOptions{
		Image:      filepath.Join(dir, "state", "pool.img"),
		MountPoint: filepath.Join(dir, "pool"),
		Size:       btrfs.MinImageSize,
	}

	// First start: the image is made.
	p := openImage(t, opts)
	dev := mountSource(t, p.Root())
	if !strings.HasPrefix(dev, "/dev/loop") {
		t.Fatalf("pool mounted from %q, want a loop device", dev)
	}
	data := newImage(t, p, "base", 1<<20)
	if _, err := p.CreateVM(ctx, "vm-abc123", "base"); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(opts.Image)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != btrfs.MinImageSize {
		t.Errorf("image is %d bytes, want %d", fi.Size(), btrfs.MinImageSize)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantUnmounted(t, p.Root(), dev)

	// Next start: the same image, with its data (so no mkfs ran again).
	opts.Size = 2 * btrfs.MinImageSize // ignored for an existing image
	p = openImage(t, opts)
	if vms, err := p.VMs(ctx); err != nil || !slices.Equal(vms, []string{"vm-abc123"}) {
		t.Errorf("VMs after reopen = %q, %v", vms, err)
	}
	img, _ := p.ImagePath("base")
	wantContent(t, filepath.Join(img, btrfs.RootfsFile), data)
	if fi, err := os.Stat(opts.Image); err != nil || fi.Size() != btrfs.MinImageSize {
		t.Errorf("image resized or gone after reopen: %v", err)
	}
	dev = mountSource(t, p.Root())

	// A start while the image is still mounted (a daemon that died without
	// unmounting) uses that mount and leaves it mounted on Close.
	again := openImage(t, opts)
	if again.Root() != p.Root() {
		t.Errorf("second OpenImage root %s, want %s", again.Root(), p.Root())
	}
	if vms, err := again.VMs(ctx); err != nil || len(vms) != 1 {
		t.Errorf("VMs through the adopted mount = %q, %v", vms, err)
	}
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	if src := mountSource(t, p.Root()); src != dev {
		t.Errorf("closing the adopting pool unmounted it (source now %q)", src)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantUnmounted(t, p.Root(), dev)
}

// TestOpenImageReusesLoop: an image already attached to a loop device (by
// losetup, say) is mounted from that device rather than attached twice.
func TestOpenImageReusesLoop(t *testing.T) {
	btrfstest.Skip(t)
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Skip("losetup not found: install util-linux")
	}
	dir := t.TempDir()
	opts := btrfs.OpenImageOptions{Image: filepath.Join(dir, "pool.img"), MountPoint: filepath.Join(dir, "pool")}
	opts.Size = btrfs.MinImageSize
	p := openImage(t, opts)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", opts.Image).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v\n%s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if loopAttached(dev) {
			exec.Command("losetup", "-d", dev).Run()
		}
	})
	p = openImage(t, opts)
	if src := mountSource(t, p.Root()); src != dev {
		t.Errorf("pool mounted from %s, want the existing %s", src, dev)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	wantUnmounted(t, p.Root(), dev)
}

func TestOpenImageRefuses(t *testing.T) {
	btrfstest.Skip(t)
	ctx := context.Background()
	dir := t.TempDir()
	other := mountTmpfs(t)
	notBtrfs := filepath.Join(dir, "ext4.img")
	if err := os.WriteFile(notBtrfs, make([]byte, 1<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		opts btrfs.OpenImageOptions
		want string
	}{
		{"no image path", btrfs.OpenImageOptions{MountPoint: filepath.Join(dir, "m1")}, "required"},
		{"too small", btrfs.OpenImageOptions{Image: filepath.Join(dir, "small.img"), MountPoint: filepath.Join(dir, "m2"), Size: 64 << 20}, "mkfs.btrfs needs"},
		{"something else mounted there", btrfs.OpenImageOptions{Image: filepath.Join(dir, "x.img"), MountPoint: other}, "already has tmpfs"},
		{"image that is not btrfs", btrfs.OpenImageOptions{Image: notBtrfs, MountPoint: filepath.Join(dir, "m3")}, "mount pool image"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := btrfs.OpenImage(ctx, tt.opts)
			if err == nil {
				p.Close()
				t.Fatal("OpenImage succeeded")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not mention %q", err, tt.want)
			}
			if tt.opts.MountPoint != "" && tt.opts.MountPoint != other {
				if src := mountSource(t, tt.opts.MountPoint); src != "" {
					t.Errorf("a failed OpenImage left %s mounted from %s", tt.opts.MountPoint, src)
				}
			}
		})
	}
	// A failed attach must not leave a loop device behind on the bad image.
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, bf := range devs {
		b, _ := os.ReadFile(bf)
		if strings.TrimSpace(string(b)) == notBtrfs {
			t.Errorf("%s is left attached to %s", notBtrfs, bf)
		}
	}
}
