//go:build linux && cgo

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
)

// Space is how full the pool is, in bytes. Btrfs keeps data and metadata
// (trees, checksums, small files) in separate chunks of the same device, so
// either can run out while the other has room; both are reported.
type Space struct {
	// Pool names the pool: the image file of a loop-backed pool, else its
	// directory.
	Pool string `json:"pool"`
	// Size, Used and Free are the filesystem's own figures for data, as df
	// shows them (statfs): Free is what can still be written, Used is
	// Size - Free (metadata and Btrfs's own overhead included).
	Size int64 `json:"size_bytes"`
	Used int64 `json:"used_bytes"`
	Free int64 `json:"free_bytes"`
	// MetadataFree estimates the room left for metadata: free space in the
	// metadata chunks (less the global reserve Btrfs keeps for itself) plus
	// the unallocated space new metadata chunks can take, divided by the
	// metadata profile's copies (2 for DUP). -1 when the kernel did not say.
	MetadataFree int64 `json:"metadata_free_bytes"`
	// Reserve is the free data space below which the pool refuses new
	// subvolumes, snapshots and reflinks (see [Pool.CheckSpace]).
	Reserve int64 `json:"reserve_bytes"`
}

// Full reports whether s is below the pool's reserve, for data or metadata,
// and which.
func (s Space) Full() (full, metadata bool) {
	if s.MetadataFree >= 0 && s.MetadataFree < metadataReserve(s.Reserve) {
		return true, true
	}
	return s.Free < s.Reserve, false
}

// reserveFor returns the reserve of a pool of size bytes: 1 %, at least
// 8 MiB, at most 1 GiB.
func reserveFor(size int64) int64 {
	return min(max(size/100, 8<<20), 1<<30)
}

// metadataReserve is the metadata room below which a pool counts as full: a
// quarter of the data reserve (2 MiB on a small pool, at most 256 MiB).
func metadataReserve(reserve int64) int64 { return reserve / 4 }

// NoSpaceError is the error of an operation that found the pool full. It
// matches [ErrNoSpace] with errors.Is and unwraps to the system error
// (ENOSPC, EDQUOT), if there was one.
type NoSpaceError struct {
	// Op says what failed ("back up vm-abc123 as bk-…").
	Op string
	// Space is how full the pool was right after the failure.
	Space Space
	// Metadata is true when metadata, not data, is what ran out.
	Metadata bool
	// Err is the system error, or nil when the pool refused the operation
	// because it was below its reserve.
	Err error
}

func (e *NoSpaceError) Error() string {
	s := e.Space
	msg := fmt.Sprintf("%s: the pool %s is full (%s free of %s)", e.Op, s.Pool, FormatBytes(s.Free), FormatBytes(s.Size))
	if e.Metadata {
		msg = fmt.Sprintf("%s: the pool %s has no room left for metadata (%s of metadata free; %s of %s free for data)",
			e.Op, s.Pool, FormatBytes(max(s.MetadataFree, 0)), FormatBytes(s.Free), FormatBytes(s.Size))
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is makes errors.Is(err, ErrNoSpace) true.
func (e *NoSpaceError) Is(target error) bool { return target == ErrNoSpace }

func (e *NoSpaceError) Unwrap() error { return e.Err }

// FormatBytes prints n in binary units with one decimal ("12.0 MiB").
func FormatBytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, i := float64(n), -1
	for (v >= unit || v <= -unit) && i < 5 {
		v /= unit
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, "KMGTPE"[i])
}

// IsNoSpace reports whether err is a system error meaning the filesystem is
// out of space (ENOSPC) or over a quota (EDQUOT), or already an ErrNoSpace.
func IsNoSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) || errors.Is(err, ErrNoSpace)
}

// noSpace turns err into a *NoSpaceError for op when it says the pool is out
// of space, and returns it unchanged otherwise. It reads the pool's space
// right away, so that the message says how much is free.
func (p *Pool) noSpace(err error, op string) error {
	if err == nil || !IsNoSpace(err) {
		return err
	}
	var nse *NoSpaceError
	if errors.As(err, &nse) {
		return err
	}
	s, serr := p.Space(context.Background())
	if serr != nil {
		p.log.Warn("btrfs: cannot read the free space of a full pool", "subvolume", p.root, "err", serr)
		s = Space{Pool: p.name(), MetadataFree: -1}
	}
	full, meta := s.Full()
	if !full {
		// ENOSPC with free data space: metadata, or a quota, ran out.
		meta = errors.Is(err, unix.ENOSPC) && s.MetadataFree >= 0 && s.MetadataFree < s.Free
	}
	return &NoSpaceError{Op: op, Space: s, Metadata: meta, Err: err}
}

// CheckSpace returns a *NoSpaceError for op when the pool's free data space
// is below its reserve (1 % of its size, at least 8 MiB, at most 1 GiB) or
// its metadata nearly full, and nil otherwise. The pool checks it before it
// makes a subvolume, a snapshot or a reflink: on a full Btrfs those still
// succeed (they need metadata only), but each pins data that the guests'
// next writes must then copy, and a backup taken then keeps the space a
// guest frees from coming back.
func (p *Pool) CheckSpace(ctx context.Context, op string) error {
	return p.checkSpace(ctx, op, true)
}

// checkSpace is CheckSpace, of metadata alone unless data is true.
func (p *Pool) checkSpace(ctx context.Context, op string, data bool) error {
	s, err := p.Space(ctx)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	if full, meta := s.Full(); full && (data || meta) {
		p.log.Warn("btrfs: pool full, refusing", "subvolume", p.root, "op", op, "free", s.Free, "metadata_free", s.MetadataFree, "reserve", s.Reserve)
		return &NoSpaceError{Op: op, Space: s, Metadata: meta}
	}
	return nil
}

// name is how messages name the pool: its image file, else its directory.
func (p *Pool) name() string {
	if p.imageFile != "" {
		return p.imageFile
	}
	return p.root
}

// Space returns how full the pool is. It is cheap (statfs and two ioctls, no
// transaction commit), so it can run before every operation.
func (p *Pool) Space(ctx context.Context) (Space, error) {
	if err := ctx.Err(); err != nil {
		return Space{}, err
	}
	var st unix.Statfs_t
	if err := unix.Statfs(p.root, &st); err != nil {
		return Space{}, fmt.Errorf("free space of %s: %w", p.root, err)
	}
	s := Space{Pool: p.name(), MetadataFree: -1}
	s.Size = int64(st.Blocks) * st.Bsize
	s.Free = int64(st.Bavail) * st.Bsize
	s.Used = s.Size - s.Free
	s.Reserve = reserveFor(s.Size)
	f, err := os.Open(p.root)
	if err != nil {
		return Space{}, err
	}
	defer f.Close()
	if mf, err := metadataFree(f); err == nil {
		s.MetadataFree = mf
	} else {
		p.log.Debug("btrfs: cannot read metadata space", "subvolume", p.root, "err", err)
	}
	return s, nil
}

// KindUsage adds up the figures of the subvolumes of one kind (see
// [Usage]).
type KindUsage struct {
	// Count is the number of subvolumes.
	Count int `json:"count"`
	// Referenced is the sum of what each references (shared data counted
	// once per subvolume sharing it).
	Referenced int64 `json:"referenced_bytes"`
	// Exclusive is the sum of what each holds alone: what deleting all of
	// them one by one would free at least (data shared only among them, such
	// as two backups of the same VM, is exclusive to none of them).
	Exclusive int64 `json:"exclusive_bytes"`
}

// Status is the pool's space and what uses it.
type Status struct {
	Space
	// Images are images/*, VMs vms/*, Backups backups/*/*.
	Images  KindUsage `json:"images"`
	VMs     KindUsage `json:"vms"`
	Backups KindUsage `json:"backups"`
}

// Status returns the pool's space and what its images, VMs and backups use,
// each subvolume's figures read as [Pool.Usage] reads them, with no
// transaction commit. Its cost grows with the number of subvolumes and of
// their extents: about 50 µs per subvolume of a few extents (50 ms for
// 1,001 of them, BenchmarkStatus), plus about 2 µs per extent.
func (p *Pool) Status(ctx context.Context) (Status, error) {
	sp, err := p.Space(ctx)
	if err != nil {
		return Status{}, err
	}
	st := Status{Space: sp}
	for _, kind := range []struct {
		k    *KindUsage
		glob string
	}{
		{&st.Images, filepath.Join(p.root, imagesDir, "*")},
		{&st.VMs, filepath.Join(p.root, vmsDir, "*")},
		{&st.Backups, filepath.Join(p.root, backupsDir, "*", "*")},
	} {
		paths, _ := filepath.Glob(kind.glob)
		paths = slices.DeleteFunc(paths, func(path string) bool {
			return checkName(fileName, "", filepath.Base(path)) != nil
		})
		us, err := p.Usages(ctx, paths)
		if err != nil {
			return Status{}, fmt.Errorf("pool status: %w", err)
		}
		for _, u := range us {
			kind.k.Count++
			kind.k.Referenced += u.Referenced
			kind.k.Exclusive += u.Exclusive
		}
	}
	return st, nil
}
