//go:build linux && cgo

package btrfs

import (
	"context"
	"fmt"
	"os"

	"github.com/containerd/btrfs/v2"
)

// Usage is the space a subvolume takes, from its Btrfs quota group
// (qgroup 0/<subvolume id>), in bytes.
type Usage struct {
	// Referenced is all the data the subvolume can reach, shared or not:
	// what a full copy of it would take.
	Referenced int64
	// Exclusive is the data no other subvolume shares: what deleting it would
	// free. For a backup this is the useful "size".
	Exclusive int64
}

// Usage returns the space used by the subvolume at path, which must be inside
// the pool. It first commits the current transaction, since quota groups are
// only brought up to date by a commit, and if the kernel has marked the quota
// figures inconsistent it rescans and waits (which can take a while on a big
// pool). The figures equal what `btrfs qgroup show --raw` prints right then.
//
// A subvolume that is being deleted, or one whose sibling was just deleted,
// settles only once the Btrfs cleaner has dropped the deleted tree.
func (p *Pool) Usage(ctx context.Context, path string) (Usage, error) {
	if !p.contains(path) {
		return Usage{}, fmt.Errorf("usage of %s: %w: the path is outside the pool %s", path, ErrInvalidName, p.root)
	}
	if err := ctx.Err(); err != nil {
		return Usage{}, err
	}
	if err := btrfs.IsSubvolume(path); err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w: not a subvolume: %w", path, ErrNotFound, err)
	}
	id, err := btrfs.SubvolID(path)
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", path, err)
	}
	f, err := os.Open(p.root)
	if err != nil {
		return Usage{}, err
	}
	defer f.Close()

	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return Usage{}, err
		}
		if err := waitRescan(f); err != nil {
			return Usage{}, err
		}
		if err := syncFS(f); err != nil {
			return Usage{}, err
		}
		flags, on, err := quotaStatus(f)
		if err != nil {
			return Usage{}, err
		}
		if !on {
			return Usage{}, fmt.Errorf("usage of %s: btrfs quotas are off: reopen the pool or run `btrfs quota enable %s`", path, p.root)
		}
		if flags&qgroupStatusInconsis != 0 && attempt == 0 {
			p.log.Info("btrfs: quota figures inconsistent, rescanning", "subvolume", path)
			if err := rescanQuota(f); err != nil {
				return Usage{}, err
			}
			continue
		}
		rfer, excl, found, err := qgroupInfo(f, id)
		if err != nil {
			return Usage{}, fmt.Errorf("usage of %s: %w", path, err)
		}
		if !found {
			return Usage{}, fmt.Errorf("usage of %s: %w: no quota group 0/%d: run `btrfs quota rescan -w %s`", path, ErrNotFound, id, p.root)
		}
		return Usage{Referenced: rfer, Exclusive: excl}, nil
	}
}
