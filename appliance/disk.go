package appliance

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

// A VM's disk starts as the image's rootfs.img, snapshotted, so it is as
// big as the image (a few MiB for the built-in one). CreateVM grows it to
// the tier's DiskGiB before the first boot: the file is extended with
// truncate (sparse: it costs no space until the guest writes), then an
// ext2/3/4 filesystem in it is checked (e2fsck -fy, which resize2fs wants
// after any mount) and grown to fill it (resize2fs), offline. A disk that
// is already as big or bigger is left alone: nothing ever shrinks. A disk
// holding another filesystem is grown as a block device only; its guest
// has to grow the filesystem itself.

// maxDiskGiB bounds a tier's disk size, well below what overflows an int64
// of bytes.
const maxDiskGiB = 1 << 20

// growRootfs grows the disk file at path to size bytes and the ext
// filesystem in it with it. It reports whether it grew anything.
func growRootfs(ctx context.Context, path string, size int64) (bool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return false, err
	}
	if fi.Size() >= size {
		return false, nil
	}
	ext, err := isExtFS(path)
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

// extMagicOffset is where an ext2/3/4 superblock's magic number (0xEF53,
// little-endian) sits: the superblock starts at 1024, the magic 56 bytes in.
const extMagicOffset = 1024 + 56

// isExtFS reports whether the file at path holds an ext2/3/4 filesystem.
func isExtFS(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	var magic [2]byte
	if _, err := f.ReadAt(magic[:], extMagicOffset); err != nil {
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
	bin, err := lookSbin(tool)
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

// lookSbin finds a system tool on PATH or in the sbin directories, which
// are not always on the PATH of a shell or a test.
func lookSbin(tool string) (string, error) {
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
