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
// Open turns quotas on when they are off. [Pool.Status] reads them all at once,
// with the pool's size, used and free space, to show what images, VMs and
// backups use. [Pool.Usages] reads a batch of subvolumes' figures with one
// commit, and [Pool.DeleteBackupList] deletes a batch of backups with one
// commit, for work that touches many VMs at once (the daily backups).
//
// # What a snapshot costs as the pool grows
//
// A snapshot is one Btrfs transaction commit, and with quota groups on, the
// kernel brings the quota figures up to date inside that commit: for every
// extent (data extent or tree block) the snapshot adds a reference to, it
// finds every subvolume that references it (a backref walk) to tell shared
// from exclusive bytes. The walk costs in proportion to the number of
// subvolumes sharing the extent, so a snapshot's time grows with how many
// subvolumes share the data it references, not with how many the pool holds.
// VMs made from one image share the image's data until they rewrite it, and
// their backups share it too: that is what grows. BenchmarkSnapshotWithSubvolumes
// (median ms per snapshot, 2-core VM, kernel 6.18, a loop pool on ext4, some
// load from other jobs; small VMs, 5 subvolumes each):
//
//	subvolumes  data shared by all       data each VM's own
//	            off   simple  full       off   simple  full
//	50          1.6   1.9     3.5        2.1   2.3     2.8
//	500         3.6   4.8     13.7       2.6   2.7     4.1
//	5,000       2.8   3.6     60.2       3.9   5.0     6.3
//
// With quotas off or simple quotas, and with full quotas when each VM's data
// is shared only with its own few backups, the time stays within a few
// milliseconds (the root tree and the directories grow a little); only full
// quotas over data shared by thousands of subvolumes grow, about linearly.
// Simple quotas (kernel 6.7+, not used) would remove the growth, but they
// never compute shared against exclusive bytes: each extent stays charged
// to the subvolume that first wrote it, so a backup's figure would be close
// to zero whatever deleting it frees, and the VM would be charged for data
// only its backups still hold. The pool keeps full quota groups because a
// backup's size is its exclusive bytes; changing that is a product decision.
//
// A full pool is an error wrapping [ErrNoSpace] (a *NoSpaceError naming the
// pool and its free bytes, and whether data or metadata ran out), whether a
// write met ENOSPC or the pool refused up front: below a reserve of free data
// space (1 %, 8 MiB to 1 GiB) it makes no new image, VM or backup, since on
// a full Btrfs those still succeed (they need metadata only) but pin data the
// guests then cannot rewrite. A restore needs metadata only and goes ahead.
//
// The package needs Linux and cgo (the containerd library is cgo); only the
// name checks build everywhere. Tests use [github.com/superjolt/superjolt/btrfs/btrfstest]
// for a real loop-backed pool.
package btrfs
