//go:build linux

package btrfs

import (
	"fmt"
	"os"
	"unsafe"
)

// Ioctls and flags for space figures, from linux/btrfs.h and
// linux/btrfs_tree.h.
const (
	iocSpaceInfo = 0xc0109414 // _IOWR(0x94, 20, struct btrfs_ioctl_space_args)
	iocDevInfo   = 0xd000941e // _IOWR(0x94, 30, struct btrfs_ioctl_dev_info_args)
	iocFSInfo    = 0x8400941f // _IOR(0x94, 31, struct btrfs_ioctl_fs_info_args)

	blockGroupMetadata = 1 << 2  // BTRFS_BLOCK_GROUP_METADATA
	blockGroupRAID1    = 1 << 4  // BTRFS_BLOCK_GROUP_RAID1
	blockGroupDUP      = 1 << 5  // BTRFS_BLOCK_GROUP_DUP
	blockGroupRAID10   = 1 << 6  // BTRFS_BLOCK_GROUP_RAID10
	blockGroupRAID1C3  = 1 << 9  // BTRFS_BLOCK_GROUP_RAID1C3
	blockGroupRAID1C4  = 1 << 10 // BTRFS_BLOCK_GROUP_RAID1C4
	spaceInfoGlobalRsv = 1 << 49 // BTRFS_SPACE_INFO_GLOBAL_RSV
)

// spaceArgs is struct btrfs_ioctl_space_args with room for 16 entries of
// struct btrfs_ioctl_space_info {flags, total_bytes, used_bytes}.
type spaceArgs struct {
	slots, total uint64
	spaces       [16][3]uint64
}

// devInfoArgs is struct btrfs_ioctl_dev_info_args (4096 bytes).
type devInfoArgs struct {
	devid      uint64
	uuid       [16]byte
	bytesUsed  uint64
	totalBytes uint64
	_          [379]uint64
	_          [1024]byte
}

// fsInfoArgs is struct btrfs_ioctl_fs_info_args (1024 bytes); only the
// leading fields are read.
type fsInfoArgs struct {
	maxID, numDevices uint64
	_                 [1024 - 16]byte
}

var (
	_ [4096 - unsafe.Sizeof(devInfoArgs{})]struct{}
	_ [unsafe.Sizeof(devInfoArgs{}) - 4096]struct{}
	_ [1024 - unsafe.Sizeof(fsInfoArgs{})]struct{}
)

// metadataFree estimates the bytes of metadata that can still be written on
// the filesystem holding f: free room in the metadata chunks, less the
// global reserve, plus the device's unallocated space divided by the number
// of copies the metadata profile keeps.
func metadataFree(f *os.File) (int64, error) {
	args := spaceArgs{slots: uint64(len(spaceArgs{}.spaces))}
	if err := ioctlPtr(f, iocSpaceInfo, unsafe.Pointer(&args)); err != nil {
		return 0, fmt.Errorf("btrfs space info of %s: %w", f.Name(), err)
	}
	var total, used, rsv uint64
	copies := uint64(1)
	for i := range min(args.total, args.slots) {
		flags, t, u := args.spaces[i][0], args.spaces[i][1], args.spaces[i][2]
		switch {
		case flags&spaceInfoGlobalRsv != 0:
			rsv = t
		case flags&blockGroupMetadata != 0:
			total += t
			used += u
			switch {
			case flags&blockGroupRAID1C4 != 0:
				copies = 4
			case flags&blockGroupRAID1C3 != 0:
				copies = 3
			case flags&(blockGroupDUP|blockGroupRAID1|blockGroupRAID10) != 0:
				copies = max(copies, 2)
			}
		}
	}
	unalloc, err := unallocated(f)
	if err != nil {
		return 0, err
	}
	free := int64(total) - int64(used) - int64(rsv)
	return max(free, 0) + unalloc/int64(copies), nil
}

// unallocated returns the bytes of the filesystem's devices that no chunk
// holds yet.
func unallocated(f *os.File) (int64, error) {
	var fi fsInfoArgs
	if err := ioctlPtr(f, iocFSInfo, unsafe.Pointer(&fi)); err != nil {
		return 0, fmt.Errorf("btrfs fs info of %s: %w", f.Name(), err)
	}
	var free int64
	for id := uint64(1); id <= fi.maxID; id++ {
		di := devInfoArgs{devid: id}
		if err := ioctlPtr(f, iocDevInfo, unsafe.Pointer(&di)); err != nil {
			continue // a gap in device ids (a removed device)
		}
		free += int64(di.totalBytes) - int64(di.bytesUsed)
	}
	return free, nil
}
