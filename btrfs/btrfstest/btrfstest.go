//go:build linux && cgo

// Package btrfstest gives tests a real storage pool: a sparse image file in
// the test's temporary directory, formatted with mkfs.btrfs, attached to a
// loop device and mounted, all undone when the test ends.
//
// It needs root, mkfs.btrfs and /dev/loop-control; a test calling NewPool
// where one is missing is skipped with a message naming it.
package btrfstest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/superjolt/superjolt/btrfs"
)

// DefaultSize is the image size NewPool uses for size 0: small enough to make
// in a few hundred milliseconds, big enough for the default mkfs profiles.
const DefaultSize = 256 << 20

// Skip skips tb unless a loop-backed Btrfs can be made here, naming what is
// missing.
func Skip(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("btrfstest: needs root to attach loop devices and mount Btrfs (run the tests as root)")
	}
	if _, err := exec.LookPath("mkfs.btrfs"); err != nil {
		tb.Skip("btrfstest: mkfs.btrfs not found: install btrfs-progs")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		tb.Skipf("btrfstest: no loop device support: %v", err)
	}
}

// NewPool returns a pool on a fresh loop-backed Btrfs of size bytes (0 means
// DefaultSize; at least btrfs.MinImageSize) in tb.TempDir(). It is closed
// (unmounted, loop device detached) when the test ends, and the test fails if
// that does not work.
func NewPool(tb testing.TB, size int64) *btrfs.Pool {
	tb.Helper()
	Skip(tb)
	if size == 0 {
		size = DefaultSize
	}
	dir := tb.TempDir()
	opts := btrfs.OpenImageOptions{
		Image:      filepath.Join(dir, "pool.img"),
		MountPoint: filepath.Join(dir, "pool"),
		Size:       size,
	}
	p, err := btrfs.OpenImage(context.Background(), opts)
	if err != nil {
		tb.Fatalf("btrfstest: %v", err)
	}
	// Registered after TempDir's own cleanup, so it runs before the
	// directory is removed.
	tb.Cleanup(func() {
		if err := p.Close(); err != nil {
			tb.Errorf("btrfstest: close pool: %v", err)
		}
	})
	return p
}
