// Package ext4 changes ext2/3/4 filesystem images offline: a raw disk file is
// extended (sparse) and the filesystem in it checked with e2fsck and grown
// with resize2fs (Grow), and root's authorized_keys is written into it with
// debugfs (AddAuthorizedKeys); all from e2fsprogs, run as separate processes
// with their arguments as a list (no shell), nothing mounted. Nothing here
// ever shrinks a disk.
//
// The appliance uses it to size a new VM's disk to its tier and to put the
// operator's SSH keys into it before the first boot; the image must not be
// in use (no VM running on it).
package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Grow grows the disk file at path to size bytes and the ext2/3/4
// filesystem in it with it, offline. It reports whether it grew anything.
//
// The file is extended with truncate (sparse: it costs no space until the
// guest writes), then the filesystem in it is checked (e2fsck -fy, which
// resize2fs wants after any mount) and grown to fill it (resize2fs). The
// check runs before the file grows: a filesystem that e2fsck cannot repair
// is not touched at all. A disk that is already as big or bigger is left
// alone. A disk holding another filesystem is grown as a block device only;
// its guest has to grow the filesystem itself.
func Grow(ctx context.Context, path string, size int64) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	if fi.Size() >= size {
		return false, nil
	}
	ext, err := IsExt(path)
	if err != nil {
		return false, err
	}
	if ext {
		// Check before growing the file: a filesystem that e2fsck cannot
		// repair is not touched at all.
		if err := runE2fs(ctx, "e2fsck", "-fy", path); err != nil {
			return false, err
		}
	}
	if err := os.Truncate(path, size); err != nil {
		return false, err
	}
	if ext {
		if err := runE2fs(ctx, "resize2fs", path); err != nil {
			return false, err
		}
	}
	return true, nil
}

// MagicOffset is where an ext2/3/4 superblock's magic number (0xEF53,
// little-endian) sits: the superblock starts at 1024, the magic 56 bytes in.
const MagicOffset = 1024 + 56

// IsExt reports whether the file at path holds an ext2/3/4 filesystem.
func IsExt(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], MagicOffset); err != nil {
		if errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	return magic == [2]byte{0x53, 0xEF}, nil
}

// runE2fs runs one e2fsprogs tool. For e2fsck, exit codes 1 and 2 mean
// errors were found and corrected: the filesystem is sound then.
func runE2fs(ctx context.Context, tool string, args ...string) error {
	bin, err := Tool(tool)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	var ee *exec.ExitError
	if tool == "e2fsck" && errors.As(err, &ee) && (ee.ExitCode() == 1 || ee.ExitCode() == 2) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", tool, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Tool finds an e2fsprogs tool (e2fsck, resize2fs, mkfs.ext4, dumpe2fs …)
// on PATH or in the sbin directories, which are not always on the PATH of a
// shell or a test. Its error says which package to install.
func Tool(tool string) (string, error) {
	if p, err := exec.LookPath(tool); err == nil {
		return p, nil
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		p := filepath.Join(dir, tool)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s not found: install e2fsprogs (apt-get install e2fsprogs)", tool)
}
