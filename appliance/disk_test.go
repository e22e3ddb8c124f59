package appliance

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/ext4"
	"github.com/superjolt/superjolt/testvm"
)

// requireE2fs skips unless the e2fsprogs tools are there.
func requireE2fs(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"e2fsck", "resize2fs", "mkfs.ext4", "dumpe2fs"} {
		if _, err := ext4.Tool(tool); err != nil {
			t.Skipf("needs %s (apt-get install e2fsprogs)", tool)
		}
	}
}

// allocated returns the bytes the file at path has allocated on disk.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// damagedExt is 64 KiB of zeros but for an ext superblock magic: it looks
// like ext to ext4.Grow, and e2fsck cannot make sense of it.
func damagedExt() []byte {
	b := make([]byte, 64<<10)
	b[ext4.MagicOffset], b[ext4.MagicOffset+1] = 0x53, 0xEF
	return b
}

// TestCreateGrowFailureLeavesNothing: a create whose disk cannot be grown
// to the tier's size is undone like any failed create.
func TestCreateGrowFailureLeavesNothing(t *testing.T) {
	requireE2fs(t)
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if err := e.pool.CreateImage(ctx, "damaged", func(dir string) error {
		if err := fakeImage(ctx, dir); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, RootfsFile), damagedExt(), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	e.reopen() // New seeds the image row
	acct := e.account("unlucky", model.Credit, 0)
	_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", Image: "damaged"})
	wantCode(t, err, "unavailable")
	if !strings.Contains(err.Error(), "grow the disk") {
		t.Errorf("error does not say the disk could not be grown: %v", err)
	}
	if vms, _ := e.a.VMs(ctx, VMFilter{}); len(vms) != 0 {
		t.Errorf("a failed create left %d VMs", len(vms))
	}
	if disk, _ := e.pool.VMs(ctx); len(disk) != 0 {
		t.Errorf("a failed create left subvolumes %v", disk)
	}
	if h := e.hv.(*stubHypervisor); h.launches != 0 {
		t.Errorf("a VM whose disk could not be grown was launched %d times", h.launches)
	}
	if o := lastOp(t, e, model.OpCreate); o.State != model.OpFailed {
		t.Errorf("last create: %s, want failed", o.State)
	}
	e.checkConsistent()
}

// TestRealDiskSizedToTier: a real guest created on tier nano sees a root
// filesystem of the tier's 2 GiB, while its disk file on the pool stays
// sparse; its image keeps its own size.
func TestRealDiskSizedToTier(t *testing.T) {
	requireE2fs(t)
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("sized", 1000*model.Credit, 0)
	tier := model.DefaultTiers()[0]
	if tier.Name != "nano" {
		t.Fatalf("first default tier is %s, want nano", tier.Name)
	}
	want := int64(tier.DiskGiB) << 30
	start := time.Now()
	vm, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: tier.Name})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("create with boot took %s", time.Since(start))

	// The guest's disk and its root filesystem have the tier's size.
	parts := e.guestExec(vm.ID, "cat /proc/partitions")
	var vdaKiB int64 = -1
	for _, line := range strings.Split(parts, "\n") {
		f := strings.Fields(line)
		if len(f) == 4 && f[3] == "vda" {
			vdaKiB, _ = strconv.ParseInt(f[2], 10, 64)
		}
	}
	if vdaKiB != want>>10 {
		t.Errorf("guest sees vda of %d KiB, want %d:\n%s", vdaKiB, want>>10, parts)
	}
	df := e.guestExec(vm.ID, "df -k /")
	lines := strings.Split(strings.TrimSpace(df), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) < 2 {
		t.Fatalf("df -k /: %q", df)
	}
	rootKiB, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		t.Fatalf("df -k /: %q: %v", df, err)
	}
	// ext4 keeps some of it for its own metadata (about 7% with the test
	// image's 1 KiB blocks); the image alone is 256 MiB.
	if rootKiB < want>>10*90/100 || rootKiB > want>>10 {
		t.Errorf("guest's root filesystem is %d KiB, want about %d:\n%s", rootKiB, want>>10, df)
	}

	// On the pool the file has the tier's size and few allocated blocks.
	dir, err := e.pool.VMPath(vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, RootfsFile)
	fi, err := os.Stat(disk)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != want {
		t.Errorf("%s is %d bytes, want %d", disk, fi.Size(), want)
	}
	if a := allocated(t, disk); a > 128<<20 {
		t.Errorf("%s has %d bytes allocated: a grown disk must stay sparse", disk, a)
	} else {
		t.Logf("%s: %d bytes, %d allocated", disk, fi.Size(), a)
	}
	imgDir, _ := e.pool.ImagePath(DefaultImage)
	img, err := os.Stat(filepath.Join(imgDir, RootfsFile))
	if err != nil || img.Size() >= want {
		t.Errorf("the image's rootfs changed: %v, %v", img.Size(), err)
	}

	// What the resize costs, on a copy of the test image.
	cp := filepath.Join(e.pool.Root(), "grow-cost.img")
	if err := images.CopyDisk(cp, testvm.Require(t).Rootfs); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(cp)
	start = time.Now()
	if grown, err := ext4.Grow(ctx, cp, want); err != nil || !grown {
		t.Fatalf("ext4.Grow = %v, %v", grown, err)
	}
	t.Logf("growing the %d MiB test image to %d GiB took %s", img.Size()>>20, tier.DiskGiB, time.Since(start))
	e.checkConsistent()
}
