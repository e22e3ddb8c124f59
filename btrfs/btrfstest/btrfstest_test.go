//go:build linux && cgo

package btrfstest_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

// TestNewPoolCleansUp: the pool is a mounted Btrfs during the test, and once
// the test is over nothing is mounted on it and its loop device is detached.
func TestNewPoolCleansUp(t *testing.T) {
	btrfstest.Skip(t)
	var root, dev string
	t.Run("inner", func(t *testing.T) {
		p := btrfstest.NewPool(t, 0)
		root = p.Root()
		var st unix.Statfs_t
		if err := unix.Statfs(root, &st); err != nil || st.Type != unix.BTRFS_SUPER_MAGIC {
			t.Fatalf("%s is not a mounted Btrfs (%v)", root, err)
		}
		dev = mountSource(t, root)
		if !strings.HasPrefix(dev, "/dev/loop") {
			t.Fatalf("pool mounted from %q, want a loop device", dev)
		}
	})
	if src := mountSource(t, root); src != "" {
		t.Errorf("%s still mounted from %s after the test", root, src)
	}
	if _, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file")); err == nil {
		t.Errorf("%s still attached after the test", dev)
	}
}

func mountSource(tb testing.TB, mnt string) string {
	tb.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	src := ""
	for _, l := range strings.Split(string(b), "\n") {
		pre, post, _ := strings.Cut(l, " - ")
		f, pf := strings.Fields(pre), strings.Fields(post)
		if len(f) >= 5 && len(pf) >= 2 && f[4] == mnt {
			src = pf[1]
		}
	}
	return src
}
