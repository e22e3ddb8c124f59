//go:build linux

package btrfs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// Reflink makes dst a reflink copy of the regular file src (FICLONE): dst
// shares src's extents, costs no space until either is written, and the call
// takes milliseconds whatever the size. dst must not exist; it gets src's
// permission bits and is fsynced before Reflink returns.
//
// When the filesystem cannot share extents between the two files (they are
// on different filesystems, or on one without reflinks such as ext4 or tmpfs)
// the error wraps [ErrReflinkUnsupported]. There is no fallback to a byte
// copy: a restore that silently took minutes and doubled the space used would
// be worse than a clear failure. On any failure dst is removed.
func Reflink(ctx context.Context, dst, src string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("reflink %s: %w", src, notFound(err))
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return fmt.Errorf("reflink %s: %w", src, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("reflink %s: not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("reflink to %s: %w: remove it first", dst, ErrExists)
		}
		return fmt.Errorf("reflink to %s: %w", dst, err)
	}
	if err := cloneInto(out, in); err != nil {
		out.Close()
		removeLogged(dst)
		return err
	}
	if err := out.Close(); err != nil {
		removeLogged(dst)
		return fmt.Errorf("reflink to %s: %w", dst, err)
	}
	return nil
}

// cloneInto replaces the contents of out with a reflink of in, and fsyncs out.
func cloneInto(out, in *os.File) error {
	if err := unix.IoctlFileClone(int(out.Fd()), int(in.Fd())); err != nil {
		if reflinkUnsupported(err) {
			return fmt.Errorf("reflink %s to %s: %w (%w): both files must be on the same Btrfs (or XFS) filesystem",
				in.Name(), out.Name(), ErrReflinkUnsupported, err)
		}
		return fmt.Errorf("reflink %s to %s: %w", in.Name(), out.Name(), err)
	}
	if err := out.Sync(); err != nil {
		return fmt.Errorf("reflink to %s: fsync: %w", out.Name(), err)
	}
	return nil
}

// reflinkUnsupported reports whether a FICLONE error means the files cannot
// share extents at all, as opposed to an I/O or permission failure.
func reflinkUnsupported(err error) bool {
	return errors.Is(err, unix.EXDEV) || // different filesystems (or mounts)
		errors.Is(err, unix.EOPNOTSUPP) || // filesystem without remap_file_range (ext4, tmpfs)
		errors.Is(err, unix.ENOTTY) || // ioctl unknown to the filesystem
		errors.Is(err, unix.ENOSYS)
}

// removeLogged removes a file made by a failed operation; a failure to remove
// it is only logged, so that the caller returns the error that mattered.
func removeLogged(path string) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		slog.Warn("btrfs: cannot remove leftover file", "path", path, "err", err)
	}
}

// syncDir fsyncs a directory so that a rename or create in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", filepath.Clean(dir), err)
	}
	return nil
}

// notFound maps a "no such file" error to one that also wraps ErrNotFound.
func notFound(err error) error {
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}
