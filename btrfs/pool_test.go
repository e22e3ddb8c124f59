//go:build linux && cgo

package btrfs_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"

	cbtrfs "github.com/containerd/btrfs/v2"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

// newImage creates image name holding a rootfs.img of size random bytes and
// returns those bytes.
func newImage(tb testing.TB, p *btrfs.Pool, name string, size int) []byte {
	tb.Helper()
	var data []byte
	err := p.CreateImage(context.Background(), name, func(dir string) error {
		data = writeRandom(tb, filepath.Join(dir, btrfs.RootfsFile), size, 1)
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// wantReadOnly fails tb unless both creating a file in dir and writing to
// dir/rootfs.img fail with EROFS.
func wantReadOnly(tb testing.TB, dir string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(dir, "new"), []byte("x"), 0o600); !errors.Is(err, syscall.EROFS) {
		tb.Errorf("creating a file in %s: got %v, want EROFS", dir, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, btrfs.RootfsFile), os.O_WRONLY, 0)
	if err == nil {
		f.Close()
	}
	if !errors.Is(err, syscall.EROFS) {
		tb.Errorf("opening %s/rootfs.img for writing: got %v, want EROFS", dir, err)
	}
}

func TestOpenRefusesNonBtrfs(t *testing.T) {
	tests := []struct {
		name string
		dir  func(testing.TB) string
	}{
		{"root filesystem temp dir", func(tb testing.TB) string { return tb.TempDir() }},
		{"tmpfs", mountTmpfs},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := tt.dir(t)
			var st unix.Statfs_t
			if err := unix.Statfs(dir, &st); err != nil || st.Type == unix.BTRFS_SUPER_MAGIC {
				t.Skipf("%s is on btrfs here (or statfs failed: %v)", dir, err)
			}
			p, err := btrfs.Open(context.Background(), dir)
			if !errors.Is(err, btrfs.ErrNotBtrfs) {
				t.Fatalf("Open(%s) = %v, %v; want ErrNotBtrfs", dir, p, err)
			}
			if !strings.Contains(err.Error(), "mount a Btrfs filesystem there") {
				t.Errorf("error %q does not say what to do", err)
			}
			if names := dirNames(t, dir); len(names) != 0 {
				t.Errorf("Open left %v in %s", names, dir)
			}
		})
	}
}

func TestOpenLayout(t *testing.T) {
	p := btrfstest.NewPool(t, 0)
	for _, d := range []string{"images", "vms", "backups", "trash"} {
		if fi, err := os.Stat(filepath.Join(p.Root(), d)); err != nil || !fi.IsDir() {
			t.Errorf("%s/%s: %v", p.Root(), d, err)
		}
	}
	// The pool runs without quota groups (sizes come from extent maps).
	if out, err := runBtrfs(t, "qgroup", "show", p.Root()); err == nil {
		t.Errorf("btrfs qgroup show on a new pool succeeded; want quotas off:\n%s", out)
	}
	// Opening again (as the daemon does at its next start) is fine.
	if _, err := btrfs.Open(context.Background(), p.Root()); err != nil {
		t.Fatal(err)
	}
}

// TestOpenQuotas: quota groups an earlier superjolt turned on are turned off
// when the pool's own image is opened again, and left on (the pool still
// works, its figures the same) on a filesystem that is the operator's.
func TestOpenQuotas(t *testing.T) {
	btrfstest.Skip(t)
	ctx := context.Background()
	dir := t.TempDir()
	opts := btrfs.OpenImageOptions{Image: filepath.Join(dir, "pool.img"), MountPoint: filepath.Join(dir, "pool")}
	p := openImage(t, opts)
	newImage(t, p, "base", 1<<20)
	vm, err := p.CreateVM(ctx, "vm-abc123", "base")
	if err != nil {
		t.Fatal(err)
	}
	writeRandom(t, filepath.Join(vm, btrfs.RootfsFile), 1<<20, 7)
	before, err := p.Usage(ctx, vm)
	if err != nil || before != (btrfs.Usage{Referenced: 1 << 20, Exclusive: 1 << 20}) {
		t.Fatalf("usage of a VM that rewrote its 1 MiB disk: %+v, %v", before, err)
	}
	if err := btrfs.SetQuotas(p, "full"); err != nil {
		t.Fatal(err)
	}

	// An operator's filesystem: Open leaves the quotas on.
	theirs, err := btrfs.Open(ctx, p.Root())
	if err != nil {
		t.Fatal(err)
	}
	if on, err := btrfs.QuotasOn(theirs); err != nil || !on {
		t.Errorf("quotas on after Open of an operator's filesystem: %v, %v; want them left on", on, err)
	}
	if u, err := theirs.Usage(ctx, vm); err != nil || u != before {
		t.Errorf("usage with quota groups on: %+v, %v; want %+v as with them off", u, err, before)
	}
	if _, err := theirs.Backup(ctx, "vm-abc123", "bk-1"); err != nil {
		t.Fatalf("backup with quota groups on: %v", err)
	}
	shared := btrfs.Usage{Referenced: before.Referenced} // all shared with the backup now

	// The pool's own image (here still mounted, as after a daemon that
	// died): OpenImage turns them off.
	again := openImage(t, opts)
	if on, err := btrfs.QuotasOn(again); err != nil || on {
		t.Errorf("quotas on after OpenImage: %v, %v; want off", on, err)
	}
	if u, err := again.Usage(ctx, vm); err != nil || u != shared || u != duShow(t, vm) {
		t.Errorf("usage after quotas went off: %+v, %v; want %+v", u, err, shared)
	}
}

func TestImageVMBackup(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	imgData := newImage(t, p, "debian-12", 1<<20)
	img, _ := p.ImagePath("debian-12")

	// The image is a read-only subvolume.
	if err := cbtrfs.IsSubvolume(img); err != nil {
		t.Fatalf("image %s: %v", img, err)
	}
	wantReadOnly(t, img)

	// A VM is a writable snapshot of it.
	vm, err := p.CreateVM(ctx, "vm-abc123", "debian-12")
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := p.VMPath("vm-abc123"); vm != want {
		t.Errorf("CreateVM returned %s, VMPath says %s", vm, want)
	}
	wantContent(t, filepath.Join(vm, btrfs.RootfsFile), imgData)
	vmData := writeRandom(t, filepath.Join(vm, btrfs.RootfsFile), 1<<20, 2)
	wantContent(t, filepath.Join(img, btrfs.RootfsFile), imgData) // the image did not change

	// A backup is a read-only snapshot of the VM at that moment.
	bk, err := p.Backup(ctx, "vm-abc123", "bk-1")
	if err != nil {
		t.Fatal(err)
	}
	wantReadOnly(t, bk)
	writeRandom(t, filepath.Join(vm, btrfs.RootfsFile), 1<<20, 3)
	wantContent(t, filepath.Join(bk, btrfs.RootfsFile), vmData)
	if _, err := p.Backup(ctx, "vm-abc123", "bk-2"); err != nil {
		t.Fatal(err)
	}

	// Listings.
	lists := []struct {
		name string
		list func() ([]string, error)
		want []string
	}{
		{"Images", func() ([]string, error) { return p.Images(ctx) }, []string{"debian-12"}},
		{"VMs", func() ([]string, error) { return p.VMs(ctx) }, []string{"vm-abc123"}},
		{"Backups", func() ([]string, error) { return p.Backups(ctx, "vm-abc123") }, []string{"bk-1", "bk-2"}},
		{"Backups of a VM without any", func() ([]string, error) { return p.Backups(ctx, "vm-zzz999") }, nil},
		{"BackupVMs", func() ([]string, error) { return p.BackupVMs(ctx) }, []string{"vm-abc123"}},
	}
	for _, l := range lists {
		got, err := l.list()
		if err != nil || !slices.Equal(got, l.want) {
			t.Errorf("%s = %q, %v; want %q", l.name, got, err, l.want)
		}
	}

	// What must fail, and how.
	failures := []struct {
		name string
		err  error
		want error
	}{
		{"VM that exists", second(p.CreateVM(ctx, "vm-abc123", "debian-12")), btrfs.ErrExists},
		{"VM from a missing image", second(p.CreateVM(ctx, "vm-new001", "nope")), btrfs.ErrNotFound},
		{"VM with a bad id", second(p.CreateVM(ctx, "../x", "debian-12")), btrfs.ErrInvalidName},
		{"VM from a bad image name", second(p.CreateVM(ctx, "vm-new001", "../vms/vm-abc123")), btrfs.ErrInvalidName},
		{"backup that exists", second(p.Backup(ctx, "vm-abc123", "bk-1")), btrfs.ErrExists},
		{"backup of a missing VM", second(p.Backup(ctx, "vm-nope00", "bk-1")), btrfs.ErrNotFound},
		{"backup with a bad id", second(p.Backup(ctx, "vm-abc123", "bk/1")), btrfs.ErrInvalidName},
		{"image that exists", p.CreateImage(ctx, "debian-12", func(string) error { return nil }), btrfs.ErrExists},
		{"delete a missing VM", p.DeleteVM(ctx, "vm-nope00"), btrfs.ErrNotFound},
		{"delete a missing backup", p.DeleteBackup(ctx, "vm-abc123", "bk-9"), btrfs.ErrNotFound},
	}
	for _, f := range failures {
		if !errors.Is(f.err, f.want) {
			t.Errorf("%s: got %v, want %v", f.name, f.err, f.want)
		}
	}
	if _, err := os.Stat(filepath.Join(p.Root(), "vms", "vm-new001")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed CreateVM left vm-new001 behind: %v", err)
	}
	if names := dirNames(t, filepath.Join(p.Root(), "trash")); len(names) != 0 {
		t.Errorf("trash holds %v after failed operations", names)
	}
}

func second[T any](_ T, err error) error { return err }

func TestCreateImageUndo(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	errFill := errors.New("download failed")
	tests := []struct {
		name string
		fill func(dir string) error
		want error
	}{
		{"fill fails", func(dir string) error {
			writeRandom(t, filepath.Join(dir, btrfs.RootfsFile), 64<<10, 1)
			return errFill
		}, errFill},
		{"fill makes a nested subvolume and fails", func(dir string) error {
			if err := cbtrfs.SubvolCreate(filepath.Join(dir, "nested")); err != nil {
				return err
			}
			return errFill
		}, errFill},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.CreateImage(ctx, "img", tt.fill)
			if !errors.Is(err, tt.want) {
				t.Fatalf("CreateImage = %v, want %v", err, tt.want)
			}
			if names, _ := p.Images(ctx); len(names) != 0 {
				t.Errorf("images after a failed CreateImage: %v", names)
			}
			if names := dirNames(t, filepath.Join(p.Root(), "trash")); len(names) != 0 {
				t.Errorf("trash holds %v after a failed CreateImage", names)
			}
		})
	}
}

// TestPurgeSkipsBusy: a Purge while an image is being filled must not delete
// the staging subvolume from under it.
func TestPurgeSkipsBusy(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	var data []byte
	err := p.CreateImage(ctx, "img", func(dir string) error {
		data = writeRandom(t, filepath.Join(dir, btrfs.RootfsFile), 64<<10, 1)
		if err := p.Purge(ctx); err != nil {
			return err
		}
		if _, err := os.Stat(dir); err != nil {
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, _ := p.ImagePath("img")
	wantContent(t, filepath.Join(img, btrfs.RootfsFile), data)
}

func TestRestoreFile(t *testing.T) {
	ctx := context.Background()
	p := btrfstest.NewPool(t, 0)
	newImage(t, p, "base", 256<<10)
	vm, err := p.CreateVM(ctx, "vm-abc123", "base")
	if err != nil {
		t.Fatal(err)
	}
	rootfs := filepath.Join(vm, btrfs.RootfsFile)
	good := writeRandom(t, rootfs, 2<<20, 7)
	if _, err := p.Backup(ctx, "vm-abc123", "bk-1"); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, rootfs, 3<<20, 8) // the guest writes on after the backup
	before, err := os.Stat(rootfs)
	if err != nil {
		t.Fatal(err)
	}

	if err := p.RestoreFile(ctx, "vm-abc123", "bk-1", btrfs.RootfsFile); err != nil {
		t.Fatal(err)
	}
	wantContent(t, rootfs, good)
	after, err := os.Stat(rootfs)
	if err != nil {
		t.Fatal(err)
	}
	if os.SameFile(before, after) {
		t.Error("RestoreFile wrote into the old file instead of renaming a new one over it")
	}
	if names := dirNames(t, vm); !slices.Equal(names, []string{btrfs.RootfsFile}) {
		t.Errorf("VM subvolume holds %v after restore, want only rootfs.img", names)
	}

	failures := []struct {
		name         string
		vm, bk, file string
		want         error
	}{
		{"missing backup", "vm-abc123", "bk-9", btrfs.RootfsFile, btrfs.ErrNotFound},
		{"missing file", "vm-abc123", "bk-1", "vmlinuz", btrfs.ErrNotFound},
		{"missing VM", "vm-nope00", "bk-1", btrfs.RootfsFile, btrfs.ErrNotFound},
		{"file name escaping", "vm-abc123", "bk-1", "../../vms/x", btrfs.ErrInvalidName},
	}
	for _, f := range failures {
		err := p.RestoreFile(ctx, f.vm, f.bk, f.file)
		if !errors.Is(err, f.want) {
			t.Errorf("%s: got %v, want %v", f.name, err, f.want)
		}
	}
	wantContent(t, rootfs, good)
	if names := dirNames(t, vm); !slices.Equal(names, []string{btrfs.RootfsFile}) {
		t.Errorf("VM subvolume holds %v after failed restores, want only rootfs.img", names)
	}

	// A crash between the reflink and the rename leaves the temporary file;
	// the next Open removes it and nothing else.
	writeRandom(t, filepath.Join(vm, ".rootfs.img.restore-0123456789ab"), 4096, 1)
	if _, err := btrfs.Open(ctx, p.Root()); err != nil {
		t.Fatal(err)
	}
	if names := dirNames(t, vm); !slices.Equal(names, []string{btrfs.RootfsFile}) {
		t.Errorf("VM subvolume holds %v after Open, want only rootfs.img", names)
	}
	wantContent(t, rootfs, good)
}

// lockedBuffer is a bytes.Buffer safe for the logger to write from any
// goroutine.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestUndoFailureOnlyLogged: when the undo of a failed step fails too, the
// caller gets the original error, the undo's error goes to the log, and what
// could not be removed waits in trash/ for the next Purge.
func TestUndoFailureOnlyLogged(t *testing.T) {
	btrfstest.Skip(t)
	chattr, err := exec.LookPath("chattr")
	if err != nil {
		t.Skip("chattr not found: install e2fsprogs")
	}
	ctx := context.Background()
	dir := t.TempDir()
	var logs lockedBuffer
	p := openImage(t, btrfs.OpenImageOptions{
		Image:      filepath.Join(dir, "pool.img"),
		MountPoint: filepath.Join(dir, "pool"),
		Size:       btrfs.MinImageSize,
		Logger:     slog.New(slog.NewTextHandler(&logs, nil)),
	})
	errFill := errors.New("download failed")
	var staged string
	err = p.CreateImage(ctx, "img", func(dir string) error {
		staged = dir
		// An immutable subvolume cannot be deleted (EPERM): the undo fails.
		if out, err := exec.Command(chattr, "+i", dir).CombinedOutput(); err != nil {
			t.Skipf("chattr +i on a subvolume: %v: %s", err, out)
		}
		return errFill
	})
	if !errors.Is(err, errFill) || errors.Is(err, os.ErrPermission) {
		t.Fatalf("CreateImage = %v, want only the fill error", err)
	}
	if l := logs.String(); !strings.Contains(l, "level=WARN") || !strings.Contains(l, "subvolume="+staged) {
		t.Errorf("the failed undo is not logged with its subvolume:\n%s", l)
	}
	if names := dirNames(t, filepath.Join(p.Root(), "trash")); len(names) != 1 || names[0] != filepath.Base(staged) {
		t.Fatalf("trash holds %v, want the staged image %s", names, filepath.Base(staged))
	}
	if names, _ := p.Images(ctx); len(names) != 0 {
		t.Errorf("images after a failed CreateImage: %v", names)
	}

	if err := p.Purge(ctx); !errors.Is(err, os.ErrPermission) {
		t.Errorf("Purge of an immutable leftover = %v, want a permission error", err)
	}
	if out, err := exec.Command(chattr, "-i", staged).CombinedOutput(); err != nil {
		t.Fatalf("chattr -i: %v: %s", err, out)
	}
	if err := p.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	wantTrashEmpty(t, p)
}
