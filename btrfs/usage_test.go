//go:build linux && cgo

package btrfs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// duShow returns the figures `btrfs filesystem du -s --raw` prints for the
// subvolume at path (Total and Exclusive), which maps the extents of its
// files with FIEMAP as Usage does, after the filesystem is synced (du counts
// no data that is not yet on disk).
func duShow(tb testing.TB, path string) btrfs.Usage {
	tb.Helper()
	if out, err := runBtrfs(tb, "filesystem", "sync", path); err != nil {
		tb.Fatalf("btrfs filesystem sync: %v\n%s", err, out)
	}
	out, err := runBtrfs(tb, "filesystem", "du", "-s", "--raw", path)
	if err != nil {
		tb.Fatalf("btrfs filesystem du: %v\n%s", err, out)
	}
	//      Total   Exclusive  Set shared  Filename
	//    5242880     2097152     3145728  /…/vms/vm-abc123
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) != 4 || f[3] != path {
			continue
		}
		total, err1 := strconv.ParseInt(f[0], 10, 64)
		excl, err2 := strconv.ParseInt(f[1], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			tb.Fatalf("btrfs filesystem du line %q: %v", l, err)
		}
		return btrfs.Usage{Referenced: total, Exclusive: excl}
	}
	tb.Fatalf("btrfs filesystem du -s %s has no line for it:\n%s", path, out)
	return btrfs.Usage{}
}

func TestUsage(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	const MiB = 1 << 20
	newImage(t, p, "base", 4*MiB)
	vm, err := p.CreateVM(ctx, "vm-abc123", "base")
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(vm, "a"), 2*MiB, 1)
	bk, err := p.Backup(ctx, "vm-abc123", "bk-1")
	if err != nil {
		t.Fatal(err)
	}
	// Rewrite a: its first 2 MiB now live only in the backup; the new 3 MiB
	// only in the VM. A second link to a counts once.
	writeRandom(t, filepath.Join(vm, "a"), 3*MiB, 2)
	if err := os.Link(filepath.Join(vm, "a"), filepath.Join(vm, "a-link")); err != nil {
		t.Fatal(err)
	}
	img, _ := p.ImagePath("base")

	tests := []struct {
		name string
		path string
		want btrfs.Usage
	}{
		// rootfs.img is shared by all three: referenced, not exclusive.
		{"image", img, btrfs.Usage{Referenced: 4 * MiB}},
		{"vm", vm, btrfs.Usage{Referenced: 4*MiB + 3*MiB, Exclusive: 3 * MiB}},
		{"backup", bk, btrfs.Usage{Referenced: 4*MiB + 2*MiB, Exclusive: 2 * MiB}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Usage(ctx, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("Usage = %+v, want %+v", got, tt.want)
			}
			if du := duShow(t, tt.path); got != du {
				t.Errorf("Usage = %+v, btrfs filesystem du says %+v", got, du)
			}
		})
	}

	failures := []struct {
		name string
		path string
		want error
	}{
		{"outside the pool", t.TempDir(), btrfs.ErrInvalidName},
		{"the pool root", p.Root(), btrfs.ErrInvalidName},
		{"a plain directory", filepath.Join(p.Root(), "vms"), btrfs.ErrNotFound},
		{"missing", filepath.Join(p.Root(), "vms", "vm-nope00"), btrfs.ErrNotFound},
	}
	for _, f := range failures {
		if _, err := p.Usage(ctx, f.path); !errors.Is(err, f.want) {
			t.Errorf("Usage of %s: got %v, want %v", f.name, err, f.want)
		}
	}
}

// TestUsages: the figures of several subvolumes read at once are those
// Usage reads one by one, a path that is gone is left out, and a path
// outside the pool is refused.
func TestUsages(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	const MiB = 1 << 20
	newImage(t, p, "base", MiB)
	var paths []string
	for i, id := range []string{"vm-aaaaa1", "vm-aaaaa2", "vm-aaaaa3"} {
		vm, err := p.CreateVM(ctx, id, "base")
		if err != nil {
			t.Fatal(err)
		}
		writeRandom(t, filepath.Join(vm, "a"), (i+1)*MiB, uint64(i))
		bk, err := p.Backup(ctx, id, "bk-1")
		if err != nil {
			t.Fatal(err)
		}
		// Rewritten: the backup now holds (i+1) MiB alone.
		writeRandom(t, filepath.Join(vm, "a"), MiB, uint64(10+i))
		paths = append(paths, vm, bk)
	}
	gone, _ := p.BackupPath("vm-aaaaa1", "bk-gone")
	got, err := p.Usages(ctx, append(paths, gone))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got[gone]; ok || len(got) != len(paths) {
		t.Errorf("Usages returned %d figures (%v for a missing backup); want %d", len(got), ok, len(paths))
	}
	for i, path := range paths {
		want, err := p.Usage(ctx, path)
		if err != nil {
			t.Fatal(err)
		}
		if got[path] != want {
			t.Errorf("%s: Usages %+v, Usage %+v", path, got[path], want)
		}
		if i%2 == 1 && want.Exclusive < int64(i/2+1)*MiB {
			t.Errorf("backup %s holds %d bytes alone; want at least %d", path, want.Exclusive, (i/2+1)*MiB)
		}
	}
	if _, err := p.Usages(ctx, []string{"/etc"}); !errors.Is(err, btrfs.ErrInvalidName) {
		t.Errorf("Usages of a path outside the pool: %v; want ErrInvalidName", err)
	}
}

// TestDeleteBackupList: the backups listed are gone (their names at once,
// for good after the one commit), one that is not there gets ErrNotFound
// without stopping the others, and the rest of the pool is untouched.
func TestDeleteBackupList(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 1<<20)
	for _, id := range []string{"vm-bbbbb1", "vm-bbbbb2"} {
		if _, err := p.CreateVM(ctx, id, "base"); err != nil {
			t.Fatal(err)
		}
		for _, bk := range []string{"bk-1", "bk-2"} {
			if _, err := p.Backup(ctx, id, bk); err != nil {
				t.Fatal(err)
			}
		}
	}
	errs := p.DeleteBackupList(ctx, []btrfs.BackupRef{
		{VM: "vm-bbbbb1", Backup: "bk-1"}, {VM: "vm-bbbbb1", Backup: "bk-nothere"}, {VM: "vm-bbbbb2", Backup: "bk-2"},
	})
	if len(errs) != 3 || errs[0] != nil || !errors.Is(errs[1], btrfs.ErrNotFound) || errs[2] != nil {
		t.Fatalf("DeleteBackupList: %v; want nil, ErrNotFound, nil", errs)
	}
	for id, want := range map[string]string{"vm-bbbbb1": "bk-2", "vm-bbbbb2": "bk-1"} {
		got, err := p.Backups(ctx, id)
		if err != nil || len(got) != 1 || got[0] != want {
			t.Errorf("backups of %s after the delete: %v, %v; want [%s]", id, got, err, want)
		}
	}
	if vms, _ := p.VMs(ctx); len(vms) != 2 {
		t.Errorf("VMs after deleting backups: %v", vms)
	}
	if errs := p.DeleteBackupList(ctx, []btrfs.BackupRef{{VM: "vm-bbbbb1", Backup: "../x"}}); !errors.Is(errs[0], btrfs.ErrInvalidName) {
		t.Errorf("DeleteBackupList of a bad name: %v; want ErrInvalidName", errs)
	}
}

// TestUsageLeavesNestedSubvolumesOut: a subvolume made inside a VM's (by
// hand: the pool makes none) is not the VM's data, and deleting the VM
// would not free it.
func TestUsageLeavesNestedSubvolumesOut(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 1<<20)
	vm, err := p.CreateVM(ctx, "vm-abc123", "base")
	if err != nil {
		t.Fatal(err)
	}
	before, err := p.Usage(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	nested := filepath.Join(vm, "nested")
	if err := cbtrfs.SubvolCreate(nested); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cbtrfs.SubvolDelete(nested) })
	writeRandom(t, filepath.Join(nested, "data"), 2<<20, 3)
	if got, err := p.Usage(ctx, vm); err != nil || got != before {
		t.Errorf("usage with a nested subvolume holding 2 MiB: %+v, %v; want %+v as without it", got, err, before)
	}
	if got, err := p.Usage(ctx, nested); err != nil || got != (btrfs.Usage{Referenced: 2 << 20, Exclusive: 2 << 20}) {
		t.Errorf("usage of the nested subvolume itself: %+v, %v; want 2 MiB, all its own", got, err)
	}
}
