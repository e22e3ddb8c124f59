//go:build linux && cgo

package btrfs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

func TestReflink(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 64<<10)
	vm, err := p.CreateVM(ctx, "vm-abc123", "base")
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(vm, "big")
	data := writeRandom(t, src, 8<<20, 5)
	free := func() int64 {
		t.Helper()
		if out, err := runBtrfs(t, "filesystem", "sync", vm); err != nil {
			t.Fatalf("btrfs filesystem sync: %v\n%s", err, out)
		}
		sp, err := p.Space(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return sp.Free
	}
	before := free()
	dst := filepath.Join(vm, "copy")
	if err := btrfs.Reflink(ctx, dst, src); err != nil {
		t.Fatal(err)
	}
	wantContent(t, dst, data)
	// The copy shares the extents: it takes no data space.
	if took := before - free(); took > 1<<20 {
		t.Errorf("a reflink of 8 MiB took %d bytes of the pool; the data was copied", took)
	}
	if err := btrfs.Reflink(ctx, dst, src); !errors.Is(err, btrfs.ErrExists) {
		t.Errorf("reflink onto an existing file: got %v, want ErrExists", err)
	}
	if err := btrfs.Reflink(ctx, filepath.Join(vm, "x"), filepath.Join(vm, "missing")); !errors.Is(err, btrfs.ErrNotFound) {
		t.Errorf("reflink of a missing file: got %v, want ErrNotFound", err)
	}
}

func TestReflinkUnsupported(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	onBtrfs := filepath.Join(p.Root(), "images", "src")
	writeRandom(t, onBtrfs, 1<<20, 1)
	tmpfs := mountTmpfs(t)
	onTmpfs := filepath.Join(tmpfs, "src")
	writeRandom(t, onTmpfs, 1<<20, 1)
	onRoot := filepath.Join(t.TempDir(), "src") // the root filesystem, ext4 here
	writeRandom(t, onRoot, 1<<20, 1)
	var st unix.Statfs_t
	if err := unix.Statfs(onRoot, &st); err != nil {
		t.Fatal(err)
	}
	rootReflinks := st.Type == unix.BTRFS_SUPER_MAGIC || st.Type == unix.XFS_SUPER_MAGIC

	tests := []struct {
		name     string
		src, dst string
		skip     bool
	}{
		{"btrfs to tmpfs", onBtrfs, filepath.Join(tmpfs, "dst1"), false},
		{"tmpfs to tmpfs", onTmpfs, filepath.Join(tmpfs, "dst2"), false},
		{"tmpfs to btrfs", onTmpfs, filepath.Join(p.Root(), "images", "dst3"), false},
		{"root fs to root fs", onRoot, filepath.Join(filepath.Dir(onRoot), "dst4"), rootReflinks},
		{"root fs to btrfs", onRoot, filepath.Join(p.Root(), "images", "dst5"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.skip {
				t.Skip("the root filesystem here can reflink")
			}
			err := btrfs.Reflink(ctx, tt.dst, tt.src)
			if !errors.Is(err, btrfs.ErrReflinkUnsupported) {
				t.Fatalf("Reflink = %v, want ErrReflinkUnsupported", err)
			}
			if _, err := os.Stat(tt.dst); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed reflink left %s behind (%v)", tt.dst, err)
			}
		})
	}
}
