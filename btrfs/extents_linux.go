//go:build linux

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The FIEMAP ioctl (linux/fs.h, linux/fiemap.h): the extents of a file, and
// for each whether Btrfs shares it with another file or subvolume.
const (
	iocFiemap              = 0xc020660b // _IOWR('f', 11, struct fiemap)
	fiemapFlagSync         = 0x00000001 // FIEMAP_FLAG_SYNC
	fiemapExtentLast       = 0x00000001 // FIEMAP_EXTENT_LAST
	fiemapExtentUnknown    = 0x00000002 // FIEMAP_EXTENT_UNKNOWN
	fiemapExtentDelalloc   = 0x00000004 // FIEMAP_EXTENT_DELALLOC
	fiemapExtentDataInline = 0x00000200 // FIEMAP_EXTENT_DATA_INLINE
	fiemapExtentShared     = 0x00002000 // FIEMAP_EXTENT_SHARED

	// fiemapSkip are extents that take no data space of their own yet
	// (inline data lives in the metadata) or not yet a known place
	// (delayed allocation: written, not yet on disk; fiemapFlagSync writes
	// it out first). `btrfs filesystem du` skips the same.
	fiemapSkip = fiemapExtentUnknown | fiemapExtentDelalloc | fiemapExtentDataInline
)

// fiemapExtent is struct fiemap_extent (56 bytes).
type fiemapExtent struct {
	logical  uint64
	physical uint64
	length   uint64
	_        [2]uint64
	flags    uint32
	_        [3]uint32
}

// fiemapArgs is struct fiemap (32 bytes) followed by room for a batch of
// extents: one ioctl maps up to len(extents) of them.
type fiemapArgs struct {
	start         uint64
	length        uint64
	flags         uint32
	mappedExtents uint32
	extentCount   uint32
	_             uint32
	extents       [292]fiemapExtent // 16 KiB in all
}

// subvolumeUsage adds up the data extents of every regular file of the
// subvolume at dir (nested subvolumes, which have a device number of their
// own, are left out; a file with several links is counted once): Referenced
// is all of them, Exclusive those no other file or subvolume shares, as
// FIEMAP_EXTENT_SHARED tells. Each file's data written but not yet on disk is
// written out first (FIEMAP_FLAG_SYNC: nothing for a read-only backup), so
// that it counts; no transaction is committed.
func subvolumeUsage(ctx context.Context, dir string) (Usage, error) {
	var root unix.Stat_t
	if err := unix.Lstat(dir, &root); err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", dir, notFound(err))
	}
	var u Usage
	seen := map[uint64]bool{}
	args := new(fiemapArgs)
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path != dir {
			return nil // removed while its directory was read
		}
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		var st unix.Stat_t
		if err := unix.Lstat(path, &st); errors.Is(err, unix.ENOENT) && path != dir {
			return nil
		} else if err != nil {
			return err
		}
		if d.IsDir() {
			if path != dir && st.Dev != root.Dev {
				return filepath.SkipDir // a subvolume of its own
			}
			return nil
		}
		if st.Nlink > 1 {
			if seen[st.Ino] {
				return nil
			}
			seen[st.Ino] = true
		}
		return fileExtents(ctx, path, args, &u)
	})
	if err != nil {
		return Usage{}, fmt.Errorf("usage of %s: %w", dir, err)
	}
	return u, nil
}

// fileExtents adds the data extents of the file at path to u, mapping them
// in batches through args; ctx is checked between batches.
func fileExtents(ctx context.Context, path string, args *fiemapArgs, u *Usage) error {
	f, err := os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EPERM) {
		// O_NOATIME is refused on a file the caller does not own.
		f, err = os.OpenFile(path, os.O_RDONLY|unix.O_NOFOLLOW, 0)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed while its directory was read
	}
	if err != nil {
		return err
	}
	defer f.Close()
	var start uint64
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		*args = fiemapArgs{start: start, length: ^uint64(0), flags: fiemapFlagSync, extentCount: uint32(len(args.extents))}
		if err := ioctlPtr(f, iocFiemap, unsafe.Pointer(args)); err != nil {
			return fmt.Errorf("fiemap %s: %w", path, err)
		}
		n := int(args.mappedExtents)
		if n == 0 {
			return nil
		}
		for _, e := range args.extents[:n] {
			if e.flags&fiemapSkip != 0 || e.length == 0 {
				continue
			}
			u.Referenced += int64(e.length)
			if e.flags&fiemapExtentShared == 0 {
				u.Exclusive += int64(e.length)
			}
		}
		last := args.extents[n-1]
		if last.flags&fiemapExtentLast != 0 {
			return nil
		}
		start = last.logical + last.length
	}
}
