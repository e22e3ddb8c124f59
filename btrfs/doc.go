// Package btrfs is superjolt's storage pool: one Btrfs filesystem holding the
// base images, every VM's disk and every backup, as subvolumes.
//
// A Pool is opened on an existing Btrfs mount ([Open]) or, as the embedded
// default, on a sparse image file that the package formats, attaches to a loop
// device and mounts itself ([OpenImage]). Inside the pool the layout is fixed:
//
//	images/<name>/           read-only subvolume: rootfs.img, vmlinuz, initrd
//	vms/<vm-id>/             writable subvolume, a snapshot of an image
//	backups/<vm-id>/<bk-id>/ read-only snapshots of vms/<vm-id>
//	trash/                   subvolumes on their way out
//
// Paths are built only by the Pool's methods, from ids checked against a
// narrow alphabet (see [ErrInvalidName]); nothing a user typed reaches the
// filesystem. Subvolumes are made and removed with
// github.com/containerd/btrfs/v2 directly, as containerd's btrfs snapshotter
// does. A delete first renames the subvolume into trash/ so that a crash
// half-way never leaves a half-deleted VM or backup under its real name;
// [Pool.Purge] (also run by Open) finishes what is left there. A step that
// fails half-way through an operation is undone and the original error is
// returned; a failure of the undo itself is only logged. Snapshots, deletes
// and restores are committed to disk when they return.
//
// File copies inside the pool are reflinks ([Reflink]): they share extents
// and cost no space until written. Where a reflink is impossible the copy
// fails with [ErrReflinkUnsupported] instead of quietly falling back to a
// slow full copy.
//
// Space figures ([Pool.Usage]) come from Btrfs quota groups, read with the
// BTRFS_IOC_TREE_SEARCH ioctl on the quota tree after a transaction commit;
// Open turns quotas on when they are off.
//
// The package needs Linux and cgo (the containerd library is cgo); only the
// name checks build everywhere. Tests use [github.com/superjolt/superjolt/btrfs/btrfstest]
// for a real loop-backed pool.
package btrfs
