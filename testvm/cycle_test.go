//go:build linux && cgo

package testvm_test

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/testvm"
)

// poolVM puts the test image into a fresh loop-backed btrfs pool as images/testvm and makes
// vms/<vmID> from it, the way the appliance lays VMs out. It returns the image as seen from the VM's
// subvolume.
func poolVM(t testing.TB, vmID string) (*btrfs.Pool, *images.Image) {
	t.Helper()
	img := testvm.Require(t)
	pool := btrfstest.NewPool(t, 1<<30)
	ctx := ctxT(t, 60*time.Second)
	err := pool.CreateImage(ctx, "testvm", func(dir string) error {
		for _, f := range []struct{ dst, src string }{
			{images.KernelFile, img.Kernel}, {images.InitrdFile, img.Initrd}, {images.RootfsFile, img.Rootfs},
		} {
			if err := images.CopyDisk(filepath.Join(dir, f.dst), f.src); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := pool.CreateVM(ctx, vmID, "testvm")
	if err != nil {
		t.Fatal(err)
	}
	vmImg := *img
	vmImg.Dir = dir
	vmImg.Kernel = filepath.Join(dir, images.KernelFile)
	vmImg.Initrd = filepath.Join(dir, images.InitrdFile)
	vmImg.Rootfs = filepath.Join(dir, images.RootfsFile)
	return pool, &vmImg
}

// TestBackupRestoreCycle is the appliance's backup and restore, end to end on a real pool and guest:
// write A, freeze, snapshot, thaw, write B, shut down, restore the disk from the snapshot by reflink,
// boot again: the guest sees only A, and it is a new boot.
func TestBackupRestoreCycle(t *testing.T) {
	const vmID, bkID = "vm-cycle1", "bk-cycle1"
	pool, img := poolVM(t, vmID)
	ctx := ctxT(t, 5*time.Minute)

	vm := testvm.Boot(t, testvm.Options{Image: img, Rootfs: img.Rootfs})
	c := vm.Client()
	vm.Exec(t, "sh", "-c", "echo A > /data/f; sync")

	if _, err := c.Freeze(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	snap, err := pool.Backup(ctx, vmID, bkID)
	if thawErr := c.Thaw(ctx); thawErr != nil {
		t.Fatalf("thaw: %v", thawErr)
	}
	if err != nil {
		t.Fatal(err)
	}
	if ro, err := btrfsReadOnly(snap); err != nil || !ro {
		t.Errorf("backup %s read-only = %v, %v; want a read-only snapshot", snap, ro, err)
	}

	vm.Exec(t, "sh", "-c", "echo B > /data/f; sync")
	if got := vm.Exec(t, "cat", "/data/f"); got != "B\n" {
		t.Fatalf("before restore /data/f = %q, want B", got)
	}
	firstBoot := vm.BootID()
	if err := vm.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	if err := pool.RestoreFile(ctx, vmID, bkID, btrfs.RootfsFile); err != nil {
		t.Fatal(err)
	}
	vm2 := testvm.Boot(t, testvm.Options{Image: img, Rootfs: img.Rootfs})
	if got := vm2.Exec(t, "cat", "/data/f"); got != "A\n" {
		t.Errorf("after restore /data/f = %q, want only A", got)
	}
	if vm2.BootID() == firstBoot || vm2.BootID() == "" {
		t.Errorf("boot id after restore %q, before %q: want a new one", vm2.BootID(), firstBoot)
	}
	if got := vm2.Exec(t, "sh", "-c", "grep -c . /data/f"); strings.TrimSpace(got) != "1" {
		t.Errorf("/data/f has %s lines, want 1", got)
	}
}
