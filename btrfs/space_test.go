//go:build linux && cgo

package btrfs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

// fsUsage returns a figure of `btrfs filesystem usage -b` ("Free (statfs, df)").
func fsUsage(tb testing.TB, root, field string) int64 {
	tb.Helper()
	out, err := runBtrfs(tb, "filesystem", "usage", "-b", root)
	if err != nil {
		tb.Fatalf("btrfs filesystem usage: %v\n%s", err, out)
	}
	for _, l := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == field {
			n, err := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			if err != nil {
				tb.Fatalf("%q: %v", l, err)
			}
			return n
		}
	}
	tb.Fatalf("btrfs filesystem usage has no %q:\n%s", field, out)
	return 0
}

// TestStatus: the breakdown adds up the figures of images/*, vms/* and
// backups/*/*, as btrfs filesystem du reads them one by one; the space figures are the
// ones btrfs-progs prints.
func TestStatus(t *testing.T) {
	ctx := context.Background()
	const MiB = 1 << 20
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 4*MiB)
	newImage(t, p, "other", 1*MiB)
	var vms, bks []string
	for i, id := range []string{"vm-aaa111", "vm-bbb222"} {
		dir, err := p.CreateVM(ctx, id, "base")
		if err != nil {
			t.Fatal(err)
		}
		vms = append(vms, dir)
		writeRandom(t, filepath.Join(dir, "a"), (i+1)*MiB, uint64(i))
		bk, err := p.Backup(ctx, id, "bk-1")
		if err != nil {
			t.Fatal(err)
		}
		bks = append(bks, bk)
		writeRandom(t, filepath.Join(dir, "a"), 2*MiB, uint64(i+10))
	}
	bk, err := p.Backup(ctx, "vm-aaa111", "bk-2")
	if err != nil {
		t.Fatal(err)
	}
	bks = append(bks, bk)

	// Deleted staging subvolumes of the images settle once the cleaner has
	// dropped them: wait for that, as the figures compared depend on it.
	waitCleaner(t, p)
	st, err := p.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	imgA, _ := p.ImagePath("base")
	imgB, _ := p.ImagePath("other")
	for _, c := range []struct {
		name  string
		got   btrfs.KindUsage
		paths []string
	}{
		{"images", st.Images, []string{imgA, imgB}},
		{"vms", st.VMs, vms},
		{"backups", st.Backups, bks},
	} {
		var want btrfs.KindUsage
		for _, path := range c.paths {
			u := duShow(t, path)
			want.Count++
			want.Referenced += u.Referenced
			want.Exclusive += u.Exclusive
		}
		if c.got != want {
			t.Errorf("%s: %+v, want %+v (from btrfs filesystem du)", c.name, c.got, want)
		}
	}
	if st.Size != btrfstest.DefaultSize {
		t.Errorf("size %d, want the image's %d", st.Size, btrfstest.DefaultSize)
	}
	if want := fsUsage(t, p.Root(), "Free (statfs, df)"); st.Free != want {
		t.Errorf("free %d, btrfs filesystem usage says %d", st.Free, want)
	}
	if st.Used != st.Size-st.Free || st.Used <= 0 {
		t.Errorf("used %d, size %d, free %d", st.Used, st.Size, st.Free)
	}
	if st.MetadataFree <= 0 || st.MetadataFree > st.Size {
		t.Errorf("metadata free %d of %d", st.MetadataFree, st.Size)
	}
	if st.Reserve != 8*MiB {
		t.Errorf("reserve of a %d-byte pool: %d, want 8 MiB", st.Size, st.Reserve)
	}
	if !strings.HasSuffix(st.Pool, "pool.img") {
		t.Errorf("pool named %q, want its image file", st.Pool)
	}
	t.Logf("status: %+v", st)
}

// fill writes zeros to path until the filesystem is full, and returns how
// much it wrote.
func fill(tb testing.TB, path string) int64 {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	var n int64
	for {
		k, err := f.Write(buf)
		n += int64(k)
		if err == nil {
			continue
		}
		if !errors.Is(err, unix.ENOSPC) {
			tb.Fatalf("fill %s: %v", path, err)
		}
		break
	}
	// Data still in the page cache may fail at fsync too: either way, full.
	if err := f.Sync(); err != nil && !errors.Is(err, unix.ENOSPC) {
		tb.Fatalf("fill %s: fsync: %v", path, err)
	}
	return n
}

// wantNoSpace fails unless err is a *NoSpaceError naming the pool's image
// and its free bytes.
func wantNoSpace(tb testing.TB, p *btrfs.Pool, err error, op string) *btrfs.NoSpaceError {
	tb.Helper()
	var nse *btrfs.NoSpaceError
	if !errors.Is(err, btrfs.ErrNoSpace) || !errors.As(err, &nse) {
		tb.Fatalf("%s: %v; want ErrNoSpace", op, err)
	}
	msg := err.Error()
	if !strings.Contains(msg, nse.Space.Pool) || !strings.Contains(msg, btrfs.FormatBytes(nse.Space.Free)+" free of "+btrfs.FormatBytes(nse.Space.Size)) ||
		!strings.HasPrefix(msg, op) {
		tb.Errorf("%s: message %q does not name the op, the pool and its free space", op, msg)
	}
	return nse
}

// TestNoSpace: on a pool filled for real, a backup, a VM and an image are
// refused with ErrNoSpace naming the pool and its free bytes, and leave
// nothing behind; a write that runs out of space half-way through an image
// fill is ErrNoSpace too (from ENOSPC). A restore is not refused: it writes
// no data, and replacing the file that filled the pool frees the space,
// after which everything works again.
func TestNoSpace(t *testing.T) {
	ctx := context.Background()
	const MiB = 1 << 20
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 4*MiB)
	vm, err := p.CreateVM(ctx, "vm-full01", "base")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Backup(ctx, "vm-full01", "bk-before"); err != nil {
		t.Fatal(err)
	}

	// A fill that runs out of space itself: ENOSPC from a write.
	err = p.CreateImage(ctx, "huge", func(dir string) error {
		f, err := os.Create(filepath.Join(dir, btrfs.RootfsFile))
		if err != nil {
			return err
		}
		defer f.Close()
		_, err = io.Copy(f, io.LimitReader(zeros{}, 2*btrfstest.DefaultSize))
		if err == nil {
			err = f.Sync()
		}
		return err
	})
	nse := wantNoSpace(t, p, err, "create image huge")
	if !errors.Is(err, unix.ENOSPC) || nse.Metadata {
		t.Errorf("image fill: %v (metadata %v); want data ENOSPC", err, nse.Metadata)
	}
	wantEmpty(t, p, "after the failed image fill")
	waitCleaner(t, p) // the staging subvolume's space comes back once dropped

	big := filepath.Join(vm, "big")
	wrote := fill(t, big)
	sp, err := p.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d MiB; full pool: %+v", wrote>>20, sp)
	if full, meta := sp.Full(); !full || meta {
		t.Fatalf("after filling: full %v, metadata %v; want data full: %+v", full, meta, sp)
	}

	_, err = p.Backup(ctx, "vm-full01", "bk-full")
	wantNoSpace(t, p, err, "back up vm-full01 as bk-full")
	if bks, _ := p.Backups(ctx, "vm-full01"); len(bks) != 1 {
		t.Errorf("backups after a refused backup: %v", bks)
	}
	_, err = p.CreateVM(ctx, "vm-full02", "base")
	wantNoSpace(t, p, err, "create vm-full02 from image base")
	err = p.CreateImage(ctx, "small", func(dir string) error { return nil })
	wantNoSpace(t, p, err, "create image small")
	wantEmpty(t, p, "after the refusals")
	if err := p.CheckSpace(ctx, "x"); !errors.Is(err, btrfs.ErrNoSpace) {
		t.Errorf("CheckSpace on a full pool: %v", err)
	}

	// A restore goes ahead on a full pool (it needs metadata only), and
	// frees what the replaced file held alone.
	if err := os.Rename(big, filepath.Join(vm, btrfs.RootfsFile)); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreFile(ctx, "vm-full01", "bk-before", btrfs.RootfsFile); err != nil {
		t.Fatalf("restore on a full pool: %v", err)
	}
	waitCleaner(t, p)
	wantEmpty(t, p, "after the restore")
	if err := p.CheckSpace(ctx, "x"); err != nil {
		t.Fatalf("after freeing: %v", err)
	}
	if _, err := p.Backup(ctx, "vm-full01", "bk-after"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.CreateVM(ctx, "vm-full02", "base"); err != nil {
		t.Fatal(err)
	}
	if err := p.RestoreFile(ctx, "vm-full01", "bk-before", btrfs.RootfsFile); err != nil {
		t.Fatal(err)
	}
}

type zeros struct{}

func (zeros) Read(b []byte) (int, error) { clear(b); return len(b), nil }

// wantEmpty fails unless the pool has no staging or temporary leftovers and
// only the VMs and backups of TestNoSpace.
func wantEmpty(tb testing.TB, p *btrfs.Pool, when string) {
	tb.Helper()
	ctx := context.Background()
	if ents, _ := os.ReadDir(filepath.Join(p.Root(), "trash")); len(ents) != 0 {
		tb.Errorf("%s: trash holds %v", when, ents)
	}
	if imgs, _ := p.Images(ctx); len(imgs) != 1 {
		tb.Errorf("%s: images %v", when, imgs)
	}
	if vms, _ := p.VMs(ctx); len(vms) != 1 {
		tb.Errorf("%s: VMs %v", when, vms)
	}
	if tmp, _ := filepath.Glob(filepath.Join(p.Root(), "vms", "*", ".*restore*")); len(tmp) != 0 {
		tb.Errorf("%s: restore leftovers %v", when, tmp)
	}
}

// commitPool commits the pool's transaction, so that freed space shows.
func commitPool(tb testing.TB, p *btrfs.Pool) {
	tb.Helper()
	if out, err := runBtrfs(tb, "filesystem", "sync", p.Root()); err != nil {
		tb.Fatalf("btrfs filesystem sync: %v\n%s", err, out)
	}
}

// waitCleaner waits until the subvolumes deleted so far are dropped, and
// their space freed (`btrfs subvolume sync`). The commit first wakes the
// cleaner, which otherwise waits for the next periodic commit (30 s).
func waitCleaner(tb testing.TB, p *btrfs.Pool) {
	tb.Helper()
	commitPool(tb, p)
	if out, err := runBtrfs(tb, "subvolume", "sync", p.Root()); err != nil {
		tb.Fatalf("btrfs subvolume sync: %v\n%s", err, out)
	}
}
