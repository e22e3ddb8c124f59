//go:build linux && cgo

package btrfs_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// subvolumes returns the live subvolumes of the pool (whose root is the
// filesystem's top level), as paths relative to its root, sorted, as
// `btrfs subvolume list` prints them.
func subvolumes(tb testing.TB, p *btrfs.Pool) []string {
	tb.Helper()
	out, err := runBtrfs(tb, "subvolume", "list", p.Root())
	if err != nil {
		tb.Fatalf("btrfs subvolume list: %v\n%s", err, out)
	}
	var paths []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		// ID 257 gen 10 top level 5 path images/base
		if _, path, ok := strings.Cut(l, " path "); ok {
			paths = append(paths, path)
		}
	}
	slices.Sort(paths)
	return paths
}

// wantTrashEmpty fails tb unless trash/ is empty and no subvolume is left in it.
func wantTrashEmpty(tb testing.TB, p *btrfs.Pool) {
	tb.Helper()
	if names := dirNames(tb, filepath.Join(p.Root(), "trash")); len(names) != 0 {
		tb.Errorf("trash holds %v", names)
	}
	for _, s := range subvolumes(tb, p) {
		if strings.HasPrefix(s, "trash/") {
			tb.Errorf("subvolume %s is left in the trash", s)
		}
	}
}

func TestDelete(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 64<<10)
	for _, vm := range []string{"vm-aaa111", "vm-bbb222"} {
		if _, err := p.CreateVM(ctx, vm, "base"); err != nil {
			t.Fatal(err)
		}
		for _, bk := range []string{"bk-1", "bk-2"} {
			if _, err := p.Backup(ctx, vm, bk); err != nil {
				t.Fatal(err)
			}
		}
	}
	steps := []struct {
		name string
		del  func() error
		want []string // subvolumes left afterwards
	}{
		{"one read-only backup", func() error { return p.DeleteBackup(ctx, "vm-aaa111", "bk-1") }, []string{
			"backups/vm-aaa111/bk-2", "backups/vm-bbb222/bk-1", "backups/vm-bbb222/bk-2", "images/base", "vms/vm-aaa111", "vms/vm-bbb222"}},
		{"a VM", func() error { return p.DeleteVM(ctx, "vm-bbb222") }, []string{
			"backups/vm-aaa111/bk-2", "backups/vm-bbb222/bk-1", "backups/vm-bbb222/bk-2", "images/base", "vms/vm-aaa111"}},
		{"all backups of a VM", func() error { return p.DeleteBackups(ctx, "vm-bbb222") }, []string{
			"backups/vm-aaa111/bk-2", "images/base", "vms/vm-aaa111"}},
		{"the image its VM was made from", func() error { return p.DeleteImage(ctx, "base") }, []string{
			"backups/vm-aaa111/bk-2", "vms/vm-aaa111"}},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			if err := s.del(); err != nil {
				t.Fatal(err)
			}
			if got := subvolumes(t, p); !slices.Equal(got, s.want) {
				t.Errorf("subvolumes left: %q\nwant %q", got, s.want)
			}
			wantTrashEmpty(t, p)
		})
	}
	if vms, _ := p.BackupVMs(ctx); !slices.Equal(vms, []string{"vm-aaa111"}) {
		t.Errorf("BackupVMs = %q after DeleteBackups(vm-bbb222)", vms)
	}
	if _, err := os.Stat(filepath.Join(p.Root(), "vms", "vm-aaa111", btrfs.RootfsFile)); err != nil {
		t.Errorf("the VM made from a deleted image lost its disk: %v", err)
	}
}

// TestPurge leaves in trash/ what a crash right after the rename of a delete
// would leave, and checks that Purge (or the next Open) removes it all.
func TestPurge(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 64<<10)
	trash := filepath.Join(p.Root(), "trash")
	// Helpers for the leave funcs below, which fail the test they run in.
	var tb testing.TB = t
	mustNot := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	n := 0
	vm := func(id string) string {
		tb.Helper()
		n++
		path, err := p.CreateVM(ctx, fmt.Sprintf("%s-%d", id, n), "base")
		mustNot(err)
		return path
	}

	tests := []struct {
		name  string
		leave func(dst string) // puts the leftover at dst, in trash/
	}{
		{"read-only snapshot", func(dst string) {
			// As a crash half-way through the delete of a backup with
			// nested subvolumes could leave it (see Pool.delete).
			mustNot(cbtrfs.SubvolSnapshot(dst, vm("vm-ro0001"), true))
		}},
		{"directory of read-only snapshots", func(dst string) {
			id := filepath.Base(vm("vm-dir001"))
			for _, bk := range []string{"bk-1", "bk-2", "bk-3"} {
				_, err := p.Backup(ctx, id, bk)
				mustNot(err)
			}
			dir, _ := p.BackupPath(id, "bk-1")
			mustNot(os.Rename(filepath.Dir(dir), dst))
		}},
		{"subvolume with a nested subvolume", func(dst string) {
			path := vm("vm-nest01")
			mustNot(cbtrfs.SubvolCreate(filepath.Join(path, "nested")))
			mustNot(os.Rename(path, dst))
		}},
		{"read-only subvolume with a nested subvolume", func(dst string) {
			path := vm("vm-nest02")
			mustNot(cbtrfs.SubvolCreate(filepath.Join(path, "nested")))
			mustNot(os.Rename(path, dst))
			if out, err := runBtrfs(tb, "property", "set", "-ts", dst, "ro", "true"); err != nil {
				tb.Fatalf("btrfs property set ro: %v\n%s", err, out)
			}
		}},
		{"plain directory tree", func(dst string) {
			mustNot(os.MkdirAll(filepath.Join(dst, "a", "b"), 0o700))
			writeRandom(tb, filepath.Join(dst, "a", "b", "f"), 4096, 1)
		}},
		{"file", func(dst string) { writeRandom(tb, dst, 4096, 1) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb = t
			tt.leave(filepath.Join(trash, "leftover"))
			mustNot(p.Purge(ctx))
			wantTrashEmpty(t, p)
		})
	}

	t.Run("Open purges", func(t *testing.T) {
		tb = t
		for i, tt := range tests {
			tt.leave(filepath.Join(trash, "leftover-"+string(rune('a'+i))))
		}
		if names := dirNames(t, trash); len(names) != len(tests) {
			t.Fatalf("trash holds %v, want %d leftovers", names, len(tests))
		}
		var want []string
		for _, s := range subvolumes(t, p) {
			if !strings.HasPrefix(s, "trash/") {
				want = append(want, s)
			}
		}
		if _, err := btrfs.Open(ctx, p.Root()); err != nil {
			t.Fatal(err)
		}
		wantTrashEmpty(t, p)
		if got := subvolumes(t, p); !slices.Equal(got, want) {
			t.Errorf("subvolumes after Open: %q, want %q", got, want)
		}
	})
}

func TestPurgeCancelled(t *testing.T) {
	p := btrfstest.NewPool(t, 0)
	writeRandom(t, filepath.Join(p.Root(), "trash", "x"), 4096, 1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Purge(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Purge with a cancelled context = %v, want context.Canceled", err)
	}
	if err := p.Purge(context.Background()); err != nil {
		t.Fatal(err)
	}
	wantTrashEmpty(t, p)
}
