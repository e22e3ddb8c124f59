//go:build linux && cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/containerd/btrfs/v2"
)

// Usage is the data a subvolume's files hold, in bytes, from their extent
// maps (see [Pool.Usage]).
type Usage struct {
	// Referenced is all the data the subvolume's files reach, shared or
	// not: what a full copy of it would take.
	Referenced int64
	// Exclusive is the data no other file or subvolume shares: what
	// deleting the subvolume would free. For a backup this is the useful
	// "size"; for a backup just taken it is 0, as it shares everything
	// with its VM until the guest rewrites it.
	Exclusive int64
}

// Usage returns the data held by the subvolume at path, which must be inside
// the pool. It maps the extents of the subvolume's files (FIEMAP) and adds
// them up, telling shared from exclusive ones by the flag the kernel sets on
// an extent more than one file or subvolume references: what
// `btrfs filesystem du -s --raw` prints as Total and Exclusive. It needs
// no quota groups and no transaction commit, and its cost is the number of
// the subvolume's extents (about 2 µs each), not the pool's size.
//
// The subvolume's own metadata (its tree blocks, a few KiB for a VM) is not
// counted, and an extent shared between two files of the same subvolume (a
// reflink inside it) counts as shared although deleting the subvolume would
// free it; the pool makes no such copies.
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
	return subvolumeUsage(ctx, path)
}

// Usages returns the data held by each subvolume in paths, all inside the
// pool, by path (what [Pool.Usage] reads one by one): what the appliance's
// daily pass uses after a batch of snapshots. A path that is not a subvolume
// (gone meanwhile) is left out of the map; the error is for a path outside
// the pool, or a subvolume whose files cannot be read.
func (p *Pool) Usages(ctx context.Context, paths []string) (map[string]Usage, error) {
	for _, path := range paths {
		if !p.contains(path) {
			return nil, fmt.Errorf("usage of %s: %w: the path is outside the pool %s", path, ErrInvalidName, p.root)
		}
	}
	out := make(map[string]Usage, len(paths))
	for _, path := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if btrfs.IsSubvolume(path) != nil {
			continue
		}
		u, err := subvolumeUsage(ctx, path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out[path] = u
	}
	return out, nil
}
