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
)
