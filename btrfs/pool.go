//go:build linux && cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containerd/btrfs/v2"
	"golang.org/x/sys/unix"
)

// Pool is a storage pool: a directory on a Btrfs filesystem laid out as the
// package documentation shows. Its methods are safe for concurrent use; two
// operations on the same VM or backup at once are the caller's to prevent.
type Pool struct {
	layout
	log *slog.Logger

	// img is the loop device and mount OpenImage made, undone by Close;
	// nil for a pool opened with Open or on a mount that already existed.
	img *imageMount
	// image is the pool's image file when it is loop-backed (OpenImage),
	// for messages; empty otherwise.
	imageFile string

	mu sync.Mutex
	// busy holds trash entries that an operation of this process is using
	// (a staged image, a delete in progress); Purge leaves them alone.
	busy map[string]bool
}

// Open opens the pool in dir, a directory on a mounted Btrfs filesystem (the
// root of the filesystem or any directory on it). It creates the pool's
// top-level directories when missing and purges whatever an earlier run left
// in trash/. Btrfs quota groups are not needed; when they are on, Open logs
// how to turn them off (the pool's own image file turns them off itself).
//
// A dir that is not on Btrfs is refused with an error wrapping [ErrNotBtrfs].
func Open(ctx context.Context, dir string) (*Pool, error) {
	return open(ctx, dir, slog.Default(), false)
}

// open opens the pool in dir; own says the filesystem is the pool's own
// image (OpenImage), not an operator's.
func open(ctx context.Context, dir string, log *slog.Logger, own bool) (*Pool, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open pool %s: %w", dir, err)
	}
	if abs, err = filepath.EvalSymlinks(abs); err != nil {
		return nil, fmt.Errorf("open pool %s: %w: create the directory on a Btrfs filesystem first", dir, notFound(err))
	}
	if err := checkBtrfs(abs); err != nil {
		return nil, err
	}
	p := &Pool{layout: layout{root: abs}, log: log, busy: map[string]bool{}}
	for _, d := range []string{imagesDir, vmsDir, backupsDir, trashDir} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o700); err != nil {
			return nil, fmt.Errorf("open pool %s: %w", abs, err)
		}
	}
	if err := p.checkQuotas(own); err != nil {
		return nil, err
	}
	if err := p.Purge(ctx); err != nil {
		// Leftovers in trash cost space but hurt nothing else; the next Purge
		// tries again.
		p.log.Warn("btrfs: cannot empty the trash of the pool", "subvolume", p.trash(), "err", err)
	}
	p.removeRestoreLeftovers(ctx)
	return p, nil
}

// checkBtrfs returns an error wrapping ErrNotBtrfs unless dir is on Btrfs.
func checkBtrfs(dir string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("open pool %s: %w", dir, err)
	}
	if st.Type != unix.BTRFS_SUPER_MAGIC {
		return fmt.Errorf("open pool %s: %w (filesystem magic %#x): mount a Btrfs filesystem there, "+
			"or leave the pool setting empty to use a loop-backed image file", dir, ErrNotBtrfs, st.Type)
	}
	return nil
}

// checkQuotas looks at the filesystem's quota groups, which the pool does
// not use (sizes come from extent maps: [Pool.Usage]) and which make every
// snapshot slower the more subvolumes share its data (the package
// documentation says why). On the pool's own filesystem (a loop-backed image,
// own=true) they are turned off: earlier versions of superjolt turned them
// on. On an operator's filesystem they may serve something else, so they are
// left as they are, with a warning that says how to turn them off.
func (p *Pool) checkQuotas(own bool) error {
	f, err := os.Open(p.root)
	if err != nil {
		return err
	}
	defer f.Close()
	on, err := quotaOn(f)
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("open pool %s: read quota status: %w: the pool needs root (CAP_SYS_ADMIN)", p.root, err)
	}
	if err != nil {
		return fmt.Errorf("open pool %s: read quota status: %w", p.root, err)
	}
	switch {
	case !on:
		return nil
	case own:
		p.log.Info("btrfs: turning quota groups off: superjolt no longer reads them, and they slow every snapshot as VMs share an image", "subvolume", p.root)
		if err := disableQuota(f); err != nil {
			return fmt.Errorf("open pool %s: %w: run `btrfs quota disable %s` by hand to see why", p.root, err, p.root)
		}
	default:
		p.log.Warn("btrfs: quota groups are on; superjolt does not use them, and they make each backup slower the more VMs share an image: "+
			"unless something else on this filesystem needs them, run `btrfs quota disable "+p.root+"`", "subvolume", p.root)
	}
	return nil
}

// Root returns the absolute path of the pool directory.
func (p *Pool) Root() string { return p.root }

// ImagePath returns the path of images/<name>. It does not check that the
// image exists.
func (p *Pool) ImagePath(name string) (string, error) { return p.image(name) }

// VMPath returns the path of vms/<vmID>, the VM's subvolume; its disk is
// [RootfsFile] inside it. It does not check that the VM exists.
func (p *Pool) VMPath(vmID string) (string, error) { return p.vm(vmID) }

// BackupPath returns the path of backups/<vmID>/<bkID>. It does not check
// that the backup exists.
func (p *Pool) BackupPath(vmID, bkID string) (string, error) { return p.backup(vmID, bkID) }

// CreateImage makes the read-only image subvolume images/<name>. fill is
// called with the path of a fresh writable subvolume and puts the image's
// files there (rootfs.img, vmlinuz, initrd); once it returns nil the
// subvolume appears under its name as a read-only snapshot, in one step. If
// fill or any later step fails nothing is left behind and the first error is
// returned. An existing image is never replaced (ErrExists).
func (p *Pool) CreateImage(ctx context.Context, name string, fill func(dir string) error) error {
	dst, err := p.image(name)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Lstat(dst); err == nil {
		return fmt.Errorf("create image %s: %w: delete it first or pick another name", name, ErrExists)
	}
	if err := p.CheckSpace(ctx, "create image "+name); err != nil {
		return err
	}
	// Stage in trash/: a crash half-way leaves the staging subvolume where
	// the next Open purges it.
	stage, release := p.trashName("new-image." + name)
	defer release()
	if err := btrfs.SubvolCreate(stage); err != nil {
		return p.noSpace(fmt.Errorf("create image %s: %w", name, err), "create image "+name)
	}
	defer p.deleteLogged(context.WithoutCancel(ctx), stage)
	if err := fill(stage); err != nil {
		return p.noSpace(fmt.Errorf("create image %s: fill: %w", name, err), "create image "+name)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The snapshot flushes the staged data and commits the transaction.
	if err := btrfs.SubvolSnapshot(dst, stage, true); err != nil {
		return p.noSpace(fmt.Errorf("create image %s: %w", name, existsErr(err)), "create image "+name)
	}
	p.log.Info("btrfs: image created", "subvolume", dst)
	return nil
}

// CreateVM makes vms/<vmID>, a writable snapshot of images/<image>, and
// returns its path. The VM's disk is the image's [RootfsFile], shared with
// the image until written.
func (p *Pool) CreateVM(ctx context.Context, vmID, image string) (string, error) {
	dst, err := p.vm(vmID)
	if err != nil {
		return "", err
	}
	src, err := p.image(image)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := btrfs.IsSubvolume(src); err != nil {
		return "", fmt.Errorf("create %s from image %s: %w: %w", vmID, image, ErrNotFound, err)
	}
	op := fmt.Sprintf("create %s from image %s", vmID, image)
	if err := p.CheckSpace(ctx, op); err != nil {
		return "", err
	}
	if err := btrfs.SubvolSnapshot(dst, src, false); err != nil {
		return "", p.noSpace(fmt.Errorf("%s: %w", op, existsErr(err)), op)
	}
	p.log.Info("btrfs: vm subvolume created", "subvolume", dst, "vm", vmID, "image", image)
	return dst, nil
}

// Backup takes a read-only snapshot of vms/<vmID> as backups/<vmID>/<bkID>
// and returns its path. The snapshot is atomic and committed when Backup
// returns; for a consistent backup of a running guest, freeze its
// filesystems around the call.
func (p *Pool) Backup(ctx context.Context, vmID, bkID string) (string, error) {
	src, err := p.vm(vmID)
	if err != nil {
		return "", err
	}
	dst, err := p.backup(vmID, bkID)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	if err := btrfs.IsSubvolume(src); err != nil {
		return "", fmt.Errorf("back up %s: %w: %w", vmID, ErrNotFound, err)
	}
	op := fmt.Sprintf("back up %s as %s", vmID, bkID)
	if err := p.CheckSpace(ctx, op); err != nil {
		return "", err
	}
	dir := filepath.Dir(dst)
	_, err = os.Lstat(dir)
	madeDir := errors.Is(err, os.ErrNotExist)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", p.noSpace(fmt.Errorf("back up %s: %w", vmID, err), op)
	}
	if err := btrfs.SubvolSnapshot(dst, src, true); err != nil {
		if madeDir {
			// Undo: a backups/<vm> directory with no backup in it would list
			// the VM in BackupVMs. Not empty means a concurrent backup made one.
			if rerr := os.Remove(dir); rerr != nil && !errors.Is(rerr, unix.ENOTEMPTY) {
				p.log.Warn("btrfs: cannot remove backup directory after failed snapshot", "subvolume", dir, "err", rerr)
			}
		}
		return "", p.noSpace(fmt.Errorf("%s: %w", op, existsErr(err)), op)
	}
	p.log.Info("btrfs: backup taken", "subvolume", dst, "vm", vmID, "backup", bkID)
	return dst, nil
}

// RestoreFile puts file (normally [RootfsFile]) of backup bkID back into
// vms/<vmID>, replacing the VM's copy atomically: a reflink of the backup's
// file is made under a temporary name in the VM's subvolume, fsynced, and
// renamed over the file. Unlike the other operations it is not refused on a
// pool whose data space is below the reserve (only when metadata is): it
// writes no data, and it frees the blocks only the replaced file held. A reader of the VM's file sees the old contents or
// the new, never a mix. Stop the VM first: an open file descriptor keeps
// pointing at the old contents.
func (p *Pool) RestoreFile(ctx context.Context, vmID, bkID, file string) error {
	bk, err := p.backup(vmID, bkID)
	if err != nil {
		return err
	}
	vm, err := p.vm(vmID)
	if err != nil {
		return err
	}
	src, err := p.file(bk, file)
	if err != nil {
		return err
	}
	dst, err := p.file(vm, file)
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := btrfs.IsSubvolume(vm); err != nil {
		return fmt.Errorf("restore %s of %s: %w: %w", file, vmID, ErrNotFound, err)
	}
	// A restore writes no data (a reflink and a rename, metadata only), and
	// it frees what the VM's old file held alone: it goes ahead on a pool
	// whose data space is full, as long as metadata has room.
	op := fmt.Sprintf("restore %s of %s from %s", file, vmID, bkID)
	if err := p.checkSpace(ctx, op, false); err != nil {
		return err
	}
	// Reflink removes tmp when it fails.
	tmp := filepath.Join(vm, "."+file+restoreSuffix+randomHex())
	if err := Reflink(ctx, tmp, src); err != nil {
		return p.noSpace(fmt.Errorf("%s: %w", op, err), op)
	}
	if err := os.Rename(tmp, dst); err != nil {
		removeLogged(tmp)
		return p.noSpace(fmt.Errorf("%s: %w", op, err), op)
	}
	if err := syncDir(vm); err != nil {
		return p.noSpace(fmt.Errorf("%s: %w", op, err), op)
	}
	p.log.Info("btrfs: file restored from backup", "subvolume", vm, "vm", vmID, "backup", bkID, "file", file)
	return nil
}

// restoreSuffix marks the temporary file of a RestoreFile in progress:
// vms/<vm>/.<file>.restore-<random>.
const restoreSuffix = ".restore-"

// removeRestoreLeftovers removes the temporary files of RestoreFile calls
// that a crash interrupted. It runs in Open, when no restore can be running.
func (p *Pool) removeRestoreLeftovers(ctx context.Context) {
	vms, err := p.VMs(ctx)
	if err != nil {
		p.log.Warn("btrfs: cannot look for restore leftovers", "err", err)
		return
	}
	for _, id := range vms {
		leftovers, _ := filepath.Glob(filepath.Join(p.root, vmsDir, id, ".*"+restoreSuffix+"*"))
		for _, f := range leftovers {
			p.log.Info("btrfs: removing leftover of an interrupted restore", "subvolume", filepath.Dir(f), "file", f)
			removeLogged(f)
		}
	}
}

// Images returns the names of the images, sorted.
func (p *Pool) Images(ctx context.Context) ([]string, error) {
	return p.list(ctx, filepath.Join(p.root, imagesDir))
}

// VMs returns the ids of the VMs that have a subvolume, sorted.
func (p *Pool) VMs(ctx context.Context) ([]string, error) {
	return p.list(ctx, filepath.Join(p.root, vmsDir))
}

// Backups returns the ids of vmID's backups, sorted by id (the appliance's
// store knows when each was taken). A VM without backups has none: no error.
func (p *Pool) Backups(ctx context.Context, vmID string) ([]string, error) {
	dir, err := p.vmBackups(vmID)
	if err != nil {
		return nil, err
	}
	return p.list(ctx, dir)
}

// BackupVMs returns the ids of the VMs that have a backups/ directory, sorted;
// it may name VMs whose own subvolume is gone.
func (p *Pool) BackupVMs(ctx context.Context) ([]string, error) {
	return p.list(ctx, filepath.Join(p.root, backupsDir))
}

// list returns the names in dir that are valid pool names, sorted; anything
// else there (an operator's stray file, what is set aside by Quarantine) is
// skipped.
func (p *Pool) list(ctx context.Context, dir string) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if e.IsDir() && checkName(fileName, "", e.Name()) == nil && !strings.HasPrefix(e.Name(), orphanPrefix) {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// DeleteImage deletes images/<name>. VMs made from it are independent copies
// and keep working.
func (p *Pool) DeleteImage(ctx context.Context, name string) error {
	path, err := p.image(name)
	if err != nil {
		return err
	}
	return p.delete(ctx, path, "image."+name)
}

// DeleteVM deletes vms/<vmID>, the VM's disk. Its backups stay; see
// DeleteBackups.
func (p *Pool) DeleteVM(ctx context.Context, vmID string) error {
	path, err := p.vm(vmID)
	if err != nil {
		return err
	}
	return p.delete(ctx, path, "vm."+vmID)
}

// DeleteBackup deletes backups/<vmID>/<bkID>.
func (p *Pool) DeleteBackup(ctx context.Context, vmID, bkID string) error {
	path, err := p.backup(vmID, bkID)
	if err != nil {
		return err
	}
	return p.delete(ctx, path, "backup."+vmID+"."+bkID)
}

// BackupRef names one backup: backups/<VM>/<Backup>.
type BackupRef struct{ VM, Backup string }

// DeleteBackupList deletes the backups refs names, as DeleteBackup does
// each, but commits the transaction once at the end rather than once per
// backup: what the appliance's daily pass uses to prune a batch of VMs. It
// returns one error per ref (nil when that backup is deleted; one wrapping
// ErrNotFound when it was not there); when the final commit fails, every
// delete gets its error (the deletes happened but are not yet durable).
func (p *Pool) DeleteBackupList(ctx context.Context, refs []BackupRef) []error {
	errs := make([]error, len(refs))
	deleted := false
	for i, r := range refs {
		path, err := p.backup(r.VM, r.Backup)
		if err == nil {
			err = p.deleteNoCommit(ctx, path, "backup."+r.VM+"."+r.Backup)
		}
		errs[i] = err
		deleted = deleted || err == nil
	}
	if !deleted {
		return errs
	}
	if err := p.commit(); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = fmt.Errorf("delete backup %s of %s: %w", refs[i].Backup, refs[i].VM, err)
			}
		}
	}
	return errs
}

// DeleteBackups deletes backups/<vmID> with every backup in it, as when a VM
// is reclaimed.
func (p *Pool) DeleteBackups(ctx context.Context, vmID string) error {
	path, err := p.vmBackups(vmID)
	if err != nil {
		return err
	}
	return p.delete(ctx, path, "backups."+vmID)
}

// delete moves path into trash/ (one rename: from then on it is gone under
// its name, whatever happens next), deletes it there, and commits. A failure
// of the delete in trash/ is logged and left for Purge: the caller's delete
// has happened.
//
// A read-only subvolume (an image, a backup) cannot be renamed into another
// directory: that rewrites its "..", and Btrfs refuses any write to it
// (EROFS). It needs no rename either: deleting a subvolume is one atomic step
// in the kernel (the name goes and the tree is queued for the cleaner in the
// same transaction, and a crash resumes the cleanup at mount), so it is
// deleted in place and the transaction committed. Only a read-only subvolume
// with subvolumes nested in it, which takes several steps and which this
// package never makes, has its flag cleared and goes through trash/.
func (p *Pool) delete(ctx context.Context, path, label string) error {
	if err := p.deleteNoCommit(ctx, path, label); err != nil {
		return err
	}
	if err := p.commit(); err != nil {
		return fmt.Errorf("delete %s: %w", path, err)
	}
	return nil
}

// deleteNoCommit is delete without the final commit: the delete is done
// (the name is gone) but durable only at the next commit.
func (p *Pool) deleteNoCommit(ctx context.Context, path, label string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if _, err := os.Lstat(path); err != nil {
		return fmt.Errorf("delete %s: %w", path, notFound(err))
	}
	if btrfs.IsSubvolume(path) == nil {
		ro, err := readOnly(path)
		if err != nil {
			return fmt.Errorf("delete %s: %w", path, err)
		}
		if ro {
			nested, err := nestedSubvolumes(path)
			if err != nil {
				return fmt.Errorf("delete %s: %w", path, err)
			}
			if len(nested) == 0 {
				if err := btrfs.SubvolDelete(path); err != nil {
					return fmt.Errorf("delete subvolume %s: %w", path, err)
				}
				p.log.Info("btrfs: deleted", "subvolume", path)
				return nil
			}
			if err := setReadOnly(path, false); err != nil {
				return fmt.Errorf("delete %s: %w", path, err)
			}
		}
	}
	dst, release := p.trashName(label)
	defer release()
	if err := os.Rename(path, dst); err != nil {
		return fmt.Errorf("delete %s: move to trash: %w", path, notFound(err))
	}
	p.log.Info("btrfs: deleting", "subvolume", path, "trash", dst)
	p.deleteLogged(context.WithoutCancel(ctx), dst)
	return nil
}

// commit commits the pool's current Btrfs transaction, making every change
// so far durable: a delete that returned stays done after a power cut.
func (p *Pool) commit() error {
	f, err := os.Open(p.root)
	if err != nil {
		return err
	}
	defer f.Close()
	return syncFS(f)
}

// existsErr adds ErrExists to an EEXIST from the btrfs library.
func existsErr(err error) error {
	if errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("%w: %w", ErrExists, err)
	}
	return notFound(err)
}

// Release forgets the pool without unmounting its image: VMs that outlive
// the daemon still run on it, and the next OpenImage finds it mounted and
// takes it on.
func (p *Pool) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.img = nil
}

// Close releases the pool. For a pool that OpenImage mounted, it unmounts the
// filesystem and detaches the loop device; a pool opened with Open, or on a
// mount that OpenImage found already there, is left mounted.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.img == nil {
		return nil
	}
	if err := p.img.close(); err != nil {
		return err // still mounted: Close can be called again
	}
	p.img = nil
	return nil
}
