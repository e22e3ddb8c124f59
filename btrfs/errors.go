package btrfs

import "errors"

// Category errors. Every error returned by this package that falls in one of
// these categories wraps it, so callers can test with errors.Is.
var (
	// ErrInvalidName means an id or name given to the pool is not one the
	// pool accepts; the message says what is allowed.
	ErrInvalidName = errors.New("invalid name")

	// ErrNotBtrfs means a path given as a pool is not on a Btrfs filesystem.
	ErrNotBtrfs = errors.New("not a btrfs filesystem")

	// ErrReflinkUnsupported means a reflink copy is impossible between the
	// two files (another filesystem, or one that cannot share extents).
	// The package never falls back to a full copy.
	ErrReflinkUnsupported = errors.New("reflink not supported")

	// ErrNotFound means the image, VM, backup or file does not exist.
	ErrNotFound = errors.New("not found")

	// ErrExists means the image, VM or backup already exists.
	ErrExists = errors.New("already exists")

	// ErrNoSpace means the pool has no room for what was asked: a write, a
	// subvolume, a snapshot or a reflink failed with ENOSPC (or EDQUOT), or
	// the pool refused it because its free space was below its reserve (see
	// [Pool.CheckSpace]). Such errors are a *NoSpaceError, which names the
	// pool and says how much is free.
	ErrNoSpace = errors.New("no space left in the pool")
)
