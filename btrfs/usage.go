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

// Usages returns the space used by each subvolume in paths, all inside the
// pool, by path, with one transaction commit and one quota-tree search for
// all of them (where [Pool.Usage] commits once per subvolume): what the
// appliance's daily pass uses after a batch of snapshots. A path that is not
// a subvolume (gone meanwhile), or whose quota group is missing, is left out
// of the map; the error is for the pool as a whole (quotas off, the commit or
// the search failed).
func (p *Pool) Usages(ctx context.Context, paths []string) (map[string]Usage, error) {
	ids := make(map[string]uint64, len(paths))
	lo, hi := uint64(1<<64-1), uint64(0)
	for _, path := range paths {
		if !p.contains(path) {
			return nil, fmt.Errorf("usage of %s: %w: the path is outside the pool %s", path, ErrInvalidName, p.root)
		}
		if btrfs.IsSubvolume(path) != nil {
			continue
		}
		id, err := btrfs.SubvolID(path)
		if err != nil {
			continue
		}
		ids[path] = id
		lo, hi = min(lo, id), max(hi, id)
	}
	out := make(map[string]Usage, len(ids))
	if len(ids) == 0 {
		return out, ctx.Err()
	}
	f, err := os.Open(p.root)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := waitRescan(f); err != nil {
			return nil, err
		}
		if err := syncFS(f); err != nil {
			return nil, err
		}
		flags, on, err := quotaStatus(f)
		if err != nil {
			return nil, err
		}
		if !on {
			return nil, fmt.Errorf("usage of %d subvolumes: btrfs quotas are off: reopen the pool or run `btrfs quota enable %s`", len(ids), p.root)
		}
		if flags&qgroupStatusInconsis != 0 && attempt == 0 {
			p.log.Info("btrfs: quota figures inconsistent, rescanning", "subvolume", p.root)
			if err := rescanQuota(f); err != nil {
				return nil, err
			}
			continue
		}
		groups, err := qgroupInfosIn(f, lo, hi)
		if err != nil {
			return nil, fmt.Errorf("usage of %d subvolumes: %w", len(ids), err)
		}
		for path, id := range ids {
			if u, ok := groups[id]; ok {
				out[path] = u
			}
		}
		return out, nil
	}
}
