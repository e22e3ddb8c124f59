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
// What a subvolume holds ([Pool.Usage]) comes from the extent maps of its
// files (the FIEMAP ioctl): every data extent counts as referenced, and those
// the kernel does not flag as shared with another file or subvolume as
// exclusive, which is what deleting the subvolume would free: a backup's
// size. These are the figures `btrfs filesystem du -s` prints, read in about
// 2 µs per extent, with no transaction commit and no quota groups.
// [Pool.Status] adds them up per kind (images, VMs, backups) with the pool's
// size, used and free space. [Pool.Usages] reads a batch of subvolumes, and
// [Pool.DeleteBackupList] deletes a batch of backups with one commit, for
// work that touches many VMs at once (the daily backups).
//
// # Why no quota groups
//
// Earlier versions read those figures from Btrfs quota groups, which the
// kernel keeps up to date inside every transaction commit: for each extent a
// snapshot adds a reference to, it walks the backrefs to every subvolume that
// references it, to tell shared from exclusive bytes. The walk costs in
// proportion to the number of subvolumes sharing the extent, and VMs made
// from one image share the image's data until they rewrite it, as do their
// backups: so with quota groups, a snapshot's time grew with the number of
// VMs made from its image. BenchmarkSnapshotWithSubvolumes (median ms per
// snapshot, 2-core VM, kernel 6.18, a loop pool on ext4, quiet box; small
// VMs, 5 subvolumes each):
//
//	subvolumes  data shared by all       data each VM's own
//	            off   simple  full       off   simple  full
//	50          1.28  1.53    2.85       1.44  1.50    2.66
//	500         2.26  2.53    7.37       2.45  2.77    4.63
//	5,000       2.38  2.68    59.2       2.71  3.16    4.72
//
// An image file of 64 extents with 300 VMs made from it: 117 ms per snapshot
// with quota groups, 17.6 ms without. Simple quotas (kernel 6.7+) do not grow
// either, but they never tell shared from exclusive (an extent stays charged
// to the subvolume that first wrote it, so every backup would read about 0),
// and Debian 12's kernel lacks them. So the pool runs with quotas off: the
// pool's own image file turns off the quota groups earlier versions turned
// on, and a pool on an operator's filesystem warns when they are on.
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
