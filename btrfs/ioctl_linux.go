//go:build linux

package btrfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Btrfs ioctls the containerd library does not wrap. Numbers and layouts are
// from linux/btrfs.h and linux/btrfs_tree.h (checked against the C headers of
// Debian 12's linux-libc-dev).
const (
	iocSync           = 0x9408     // _IO(0x94, 8)
	iocTreeSearch     = 0xd0009411 // _IOWR(0x94, 17, struct btrfs_ioctl_search_args)
	iocSubvolGetflags = 0x80089419 // _IOR(0x94, 25, __u64)
	iocSubvolSetflags = 0x4008941a // _IOW(0x94, 26, __u64)
	iocQuotaCtl       = 0xc0109428 // _IOWR(0x94, 40, struct btrfs_ioctl_quota_ctl_args)
	subvolRdonly      = 1 << 1     // BTRFS_SUBVOL_RDONLY
	quotaCtlDisable   = 2          // BTRFS_QUOTA_CTL_DISABLE
	quotaTreeObjectID = 8          // BTRFS_QUOTA_TREE_OBJECTID
	qgroupStatusKey   = 240        // BTRFS_QGROUP_STATUS_KEY
	qgroupStatusOn    = 1 << 0     // BTRFS_QGROUP_STATUS_FLAG_ON
)

// searchKey is struct btrfs_ioctl_search_key (104 bytes).
type searchKey struct {
	treeID      uint64
	minObjectID uint64
	maxObjectID uint64
	minOffset   uint64
	maxOffset   uint64
	minTransID  uint64
	maxTransID  uint64
	minType     uint32
	maxType     uint32
	nrItems     uint32
	_           uint32
	_           [4]uint64
}

// searchArgs is struct btrfs_ioctl_search_args (4096 bytes).
type searchArgs struct {
	key searchKey
	buf [4096 - 104]byte
}

// searchHeaderLen is sizeof(struct btrfs_ioctl_search_header):
// transid, objectid, offset (u64), type, len (u32), in host byte order.
const searchHeaderLen = 32

var (
	_ [104 - unsafe.Sizeof(searchKey{})]struct{}
	_ [4096 - unsafe.Sizeof(searchArgs{})]struct{}
)

func ioctlPtr(f *os.File, req uintptr, arg unsafe.Pointer) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	}); err != nil {
		return err
	}
	if errno != 0 {
		return errno
	}
	return nil
}

// syncFS commits the current Btrfs transaction of the filesystem holding f
// (BTRFS_IOC_SYNC, what `btrfs filesystem sync` does). Quota group figures are
// brought up to date by the commit.
func syncFS(f *os.File) error {
	if err := ioctlPtr(f, iocSync, nil); err != nil {
		return fmt.Errorf("btrfs sync %s: %w", f.Name(), err)
	}
	return nil
}

// readOnly reports whether the subvolume at path has the read-only flag.
func readOnly(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var flags uint64
	if err := ioctlPtr(f, iocSubvolGetflags, unsafe.Pointer(&flags)); err != nil {
		return false, fmt.Errorf("get subvolume flags of %s: %w", path, err)
	}
	return flags&subvolRdonly != 0, nil
}

// setReadOnly sets or clears the read-only flag of the subvolume at path.
func setReadOnly(path string, ro bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags uint64
	if err := ioctlPtr(f, iocSubvolGetflags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("get subvolume flags of %s: %w", path, err)
	}
	if ro {
		flags |= subvolRdonly
	} else {
		flags &^= subvolRdonly
	}
	if err := ioctlPtr(f, iocSubvolSetflags, unsafe.Pointer(&flags)); err != nil {
		return fmt.Errorf("set subvolume flags of %s: %w", path, err)
	}
	return nil
}

// disableQuota turns quota groups off for the filesystem holding f. The
// kernel drops the quota tree; no data moves.
func disableQuota(f *os.File) error {
	args := struct{ cmd, status uint64 }{cmd: quotaCtlDisable}
	if err := ioctlPtr(f, iocQuotaCtl, unsafe.Pointer(&args)); err != nil {
		return fmt.Errorf("disable btrfs quotas on %s: %w", f.Name(), err)
	}
	return nil
}

// searchOne returns the data of the item (objectid, typ, offset) of tree
// treeID, or nil when there is none. An error wrapping ENOENT means the tree
// itself does not exist (the quota tree while quotas are off).
func searchOne(f *os.File, treeID, objectid uint64, typ uint32, offset uint64) ([]byte, error) {
	var args searchArgs
	args.key = searchKey{
		treeID:      treeID,
		minObjectID: objectid, maxObjectID: objectid,
		minType: typ, maxType: typ,
		minOffset: offset, maxOffset: offset,
		maxTransID: ^uint64(0),
		nrItems:    1,
	}
	if err := ioctlPtr(f, iocTreeSearch, unsafe.Pointer(&args)); err != nil {
		return nil, fmt.Errorf("btrfs tree search (tree %d, key %d %d %d) on %s: %w", treeID, objectid, typ, offset, f.Name(), err)
	}
	if args.key.nrItems == 0 {
		return nil, nil
	}
	h := args.buf[:searchHeaderLen]
	gotObj := binary.NativeEndian.Uint64(h[8:])
	gotOff := binary.NativeEndian.Uint64(h[16:])
	gotType := binary.NativeEndian.Uint32(h[24:])
	n := binary.NativeEndian.Uint32(h[28:])
	if gotObj != objectid || gotType != typ || gotOff != offset {
		return nil, nil
	}
	if int(n) > len(args.buf)-searchHeaderLen {
		return nil, fmt.Errorf("btrfs tree search on %s: item of %d bytes does not fit the buffer", f.Name(), n)
	}
	return append([]byte(nil), args.buf[searchHeaderLen:searchHeaderLen+int(n)]...), nil
}

// quotaOn reports whether quotas (quota groups or simple quotas) are on for
// the filesystem holding f.
func quotaOn(f *os.File) (bool, error) {
	item, err := searchOne(f, quotaTreeObjectID, 0, qgroupStatusKey, 0)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	if err != nil || len(item) < 24 {
		return false, err
	}
	// struct btrfs_qgroup_status_item: version, generation, flags, rescan (__le64).
	return binary.LittleEndian.Uint64(item[16:])&qgroupStatusOn != 0, nil
}
