//go:build linux && cgo

package btrfs_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// qgroupShow returns the figures `btrfs qgroup show --raw -f` prints for the
// subvolume at path.
func qgroupShow(tb testing.TB, path string) btrfs.Usage {
	tb.Helper()
	id, err := cbtrfs.SubvolID(path)
	if err != nil {
		tb.Fatal(err)
	}
	out, err := runBtrfs(tb, "qgroup", "show", "--raw", "-f", path)
	if err != nil {
		tb.Fatalf("btrfs qgroup show: %v\n%s", err, out)
	}
	// Qgroupid    Referenced    Exclusive   Path
	// 0/256          3162112      3162112   a
	want := fmt.Sprintf("0/%d", id)
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 3 || f[0] != want {
			continue
		}
		rfer, err1 := strconv.ParseInt(f[1], 10, 64)
		excl, err2 := strconv.ParseInt(f[2], 10, 64)
		if err := errors.Join(err1, err2); err != nil {
			tb.Fatalf("btrfs qgroup show line %q: %v", l, err)
		}
		return btrfs.Usage{Referenced: rfer, Exclusive: excl}
	}
	tb.Fatalf("btrfs qgroup show -f %s has no line for %s:\n%s", path, want, out)
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
	// only in the VM.
	writeRandom(t, filepath.Join(vm, "a"), 3*MiB, 2)
	img, _ := p.ImagePath("base")

	tests := []struct {
		name    string
		path    string
		minRfer int64
		minExcl int64
		maxExcl int64
	}{
		// rootfs.img is shared by all three: referenced, not exclusive.
		{"image", img, 4 * MiB, 0, MiB},
		{"vm", vm, 4*MiB + 3*MiB, 3 * MiB, 4 * MiB},
		{"backup", bk, 4*MiB + 2*MiB, 2 * MiB, 3 * MiB},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := p.Usage(ctx, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %+v", tt.path, got)
			if want := qgroupShow(t, tt.path); got != want {
				t.Errorf("Usage = %+v, btrfs qgroup show says %+v", got, want)
			}
			if got.Referenced < tt.minRfer {
				t.Errorf("referenced %d, want at least %d", got.Referenced, tt.minRfer)
			}
			if got.Exclusive < tt.minExcl || got.Exclusive > tt.maxExcl {
				t.Errorf("exclusive %d, want %d..%d", got.Exclusive, tt.minExcl, tt.maxExcl)
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
