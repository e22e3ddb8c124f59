package appliance

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/btrfs"
)

// PoolStatus is how full the storage pool is and what uses it, in bytes.
type PoolStatus struct {
	// Pool names the pool: its image file, or its directory on a Btrfs
	// filesystem of the operator's.
	Pool string `json:"pool"`
	// Size, Used and Free are for data, as df shows them; Used includes
	// metadata and Btrfs's own overhead (Used = Size - Free).
	Size int64 `json:"size_bytes"`
	Used int64 `json:"used_bytes"`
	Free int64 `json:"free_bytes"`
	// MetadataFree estimates the room left for metadata (-1: unknown).
	// Btrfs keeps it apart from data, so either can run out first.
	MetadataFree int64 `json:"metadata_free_bytes"`
	// Reserve is the free space below which new VMs, backups and restores
	// are refused (ErrNoSpace), so that running guests keep room to write.
	Reserve int64 `json:"reserve_bytes"`
	// Full is true below the reserve (for data or metadata).
	Full bool `json:"full"`
	// Images, VMs and Backups are what each kind of subvolume uses, from
	// the extent maps of their files (as `btrfs filesystem du` reads them).
	Images  PoolUsage `json:"images"`
	VMs     PoolUsage `json:"vms"`
	Backups PoolUsage `json:"backups"`
}

// PoolUsage is what the subvolumes of one kind use.
type PoolUsage struct {
	Count int `json:"count"`
	// Referenced adds up what each references, shared data counted once per
	// subvolume that shares it.
	Referenced int64 `json:"referenced_bytes"`
	// Exclusive adds up what each holds alone: at least what deleting them
	// all would free.
	Exclusive int64 `json:"exclusive_bytes"`
}

// PoolStatus returns how full the pool is and what its images, VMs and
// backups use.
func (a *Appliance) PoolStatus(ctx context.Context) (PoolStatus, error) {
	st, err := a.pool.Status(ctx)
	if err != nil {
		return PoolStatus{}, categorised(err, "read the pool's status")
	}
	full, _ := st.Full()
	use := func(k btrfs.KindUsage) PoolUsage {
		return PoolUsage{Count: k.Count, Referenced: k.Referenced, Exclusive: k.Exclusive}
	}
	return PoolStatus{Pool: st.Pool, Size: st.Size, Used: st.Used, Free: st.Free, MetadataFree: st.MetadataFree,
		Reserve: st.Reserve, Full: full, Images: use(st.Images), VMs: use(st.VMs), Backups: use(st.Backups)}, nil
}

// noSpaceHint says what to do about a full pool.
const noSpaceHint = "delete on-demand backups (`superjolt backup list VM`) or destroy VMs (`superjolt pool` shows what uses the space), then try again"

// noSpaceErr returns err as a model.ErrNoSpace error, with the pool's name,
// its free space and what to do, when err says the pool is full: a
// *btrfs.NoSpaceError, ENOSPC or EDQUOT, or a tool's "No space left on
// device". It returns nil for any other error. what says what could not be
// done ("back up vm-abc123").
func (a *Appliance) noSpaceErr(ctx context.Context, err error, what string) error {
	if err == nil {
		return nil
	}
	var nse *btrfs.NoSpaceError
	if !errors.As(err, &nse) {
		msg := err.Error()
		if !btrfs.IsNoSpace(err) && !strings.Contains(msg, "No space left on device") && !strings.Contains(msg, "Disk quota exceeded") {
			return nil
		}
		sp, serr := a.pool.Space(context.WithoutCancel(ctx))
		if serr != nil {
			a.log.Warn("cannot read the free space of the pool", "err", serr)
			sp = btrfs.Space{Pool: "", Size: -1, Free: -1, MetadataFree: -1}
		}
		full, meta := sp.Full()
		nse = &btrfs.NoSpaceError{Op: what, Space: sp, Metadata: full && meta, Err: err}
	}
	a.log.Warn("pool full", "what", what, "err", err)
	return noSpaceError(what, nse)
}

// noSpaceError is the user's error for a NoSpaceError met while doing what.
func noSpaceError(what string, nse *btrfs.NoSpaceError) error {
	s := nse.Space
	if s.Size < 0 {
		return fmt.Errorf("%w: cannot %s: the pool is full: %s", model.ErrNoSpace, what, noSpaceHint)
	}
	if nse.Metadata {
		return fmt.Errorf("%w: cannot %s: the pool %s has no room left for metadata (%s free; %s of %s free for data): %s",
			model.ErrNoSpace, what, s.Pool, btrfs.FormatBytes(max(s.MetadataFree, 0)), btrfs.FormatBytes(s.Free), btrfs.FormatBytes(s.Size), noSpaceHint)
	}
	return fmt.Errorf("%w: cannot %s: the pool %s is full (%s free of %s): %s",
		model.ErrNoSpace, what, s.Pool, btrfs.FormatBytes(s.Free), btrfs.FormatBytes(s.Size), noSpaceHint)
}

// noSpaceOr returns the ErrNoSpace error for err when the pool is full, and
// otherwise: the error the caller would have returned anyway.
func (a *Appliance) noSpaceOr(ctx context.Context, err error, what string, otherwise error) error {
	if nerr := a.noSpaceErr(ctx, err, what); nerr != nil {
		return nerr
	}
	return otherwise
}

// checkPoolSpace refuses, with ErrNoSpace, to start what while the pool is
// below its reserve; a failure to read the space lets it go ahead (the
// operation meets the full pool itself then).
func (a *Appliance) checkPoolSpace(ctx context.Context, what string) error {
	if nse := a.poolBelowReserve(ctx, what); nse != nil {
		return noSpaceError(what, nse)
	}
	return nil
}

// poolBelowReserve returns the pool's no-space error when it is below its
// reserve, nil when it is not or its space cannot be read (logged).
func (a *Appliance) poolBelowReserve(ctx context.Context, what string) *btrfs.NoSpaceError {
	err := a.pool.CheckSpace(ctx, what)
	if err == nil {
		return nil
	}
	var nse *btrfs.NoSpaceError
	if !errors.As(err, &nse) {
		a.log.Warn("cannot check the pool's free space", "what", what, "err", err)
		return nil
	}
	return nse
}

// checkRestoreSpace refuses, with ErrNoSpace, a restore of vmID that would
// leave the pool full. A restore writes no data (a reflink and a rename)
// and frees what the VM's disk holds alone, so on a full pool it goes
// ahead when that is enough to bring the pool back above its reserve (the
// guest that filled the pool is rolled back, and the space comes back);
// when something else holds the space, the guest would boot on a full pool
// and fail its first write, so it is refused and the guest left running.
func (a *Appliance) checkRestoreSpace(ctx context.Context, vmID string) error {
	what := "restore " + vmID
	nse := a.poolBelowReserve(ctx, what)
	if nse == nil {
		return nil
	}
	if !nse.Metadata {
		if dir, perr := a.pool.VMPath(vmID); perr == nil {
			if u, uerr := a.pool.Usage(ctx, dir); uerr == nil && nse.Space.Free+u.Exclusive >= 2*nse.Space.Reserve {
				a.log.Info("pool full, but the restore frees the space the VM's disk holds alone",
					"vm", vmID, "free", nse.Space.Free, "frees", u.Exclusive, "reserve", nse.Space.Reserve)
				return nil
			}
		}
	}
	return noSpaceError(what, nse)
}
