//go:build linux && cgo

package btrfs

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultImageSize is the size of a new pool image when OpenImageOptions.Size
// is zero. The file is sparse: it takes only what is written to it.
const DefaultImageSize = 20 << 30

// MinImageSize is the smallest image mkfs.btrfs accepts with its default
// profiles (about 114 MiB), rounded up.
const MinImageSize = 128 << 20

// OpenImageOptions says where the loop-backed pool lives.
type OpenImageOptions struct {
	// Image is the path of the image file. It is created (sparse, then
	// formatted with mkfs.btrfs) when it does not exist, and reused as it is
	// when it does. Required.
	Image string
	// MountPoint is the directory the image is mounted on, made when
	// missing; the pool is its root. Required.
	MountPoint string
	// Size is the size of a new image in bytes; zero means
	// DefaultImageSize. It is ignored when the image already exists.
	Size int64
	// Logger receives the pool's logs; nil means slog.Default().
	Logger *slog.Logger
}

// OpenImage opens the pool on a Btrfs image file, the embedded default for a
// box without a Btrfs partition. On the first start it creates a sparse image
// file of opts.Size and formats it with mkfs.btrfs; on every start it attaches
// the image to a loop device and mounts it on opts.MountPoint, then opens the
// pool there as [Open] does. When the image is already mounted there (the
// daemon restarted without unmounting) that mount is used as it is and Close
// leaves it mounted.
//
// It needs root, mkfs.btrfs (btrfs-progs) and /dev/loop-control.
//
// The loop device is set up with the LOOP_CONFIGURE ioctl rather than by
// running losetup: the device is attached with the autoclear flag in the same
// call, so once mounted it detaches by itself at unmount, and if this process
// dies between attaching and mounting the kernel detaches it when the process's
// file descriptor closes. Nothing has to parse losetup's output, and a device
// taken by a concurrent losetup (EBUSY) is simply retried with the next free one.
func OpenImage(ctx context.Context, opts OpenImageOptions) (*Pool, error) {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if opts.Image == "" || opts.MountPoint == "" {
		return nil, errors.New("open pool image: both Image and MountPoint are required")
	}
	size := opts.Size
	if size == 0 {
		size = DefaultImageSize
	}
	if size < MinImageSize {
		return nil, fmt.Errorf("open pool image %s: size %d is below the %d bytes mkfs.btrfs needs", opts.Image, size, MinImageSize)
	}
	image, err := filepath.Abs(opts.Image)
	if err != nil {
		return nil, err
	}
	mnt, err := filepath.Abs(opts.MountPoint)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(mnt, 0o700); err != nil {
		return nil, fmt.Errorf("open pool image: mount point: %w", err)
	}
	if mnt, err = filepath.EvalSymlinks(mnt); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	mounted, err := mountedImage(image, mnt)
	if err != nil {
		return nil, err
	}
	if mounted {
		log.Info("btrfs: pool image already mounted, using it", "image", image, "subvolume", mnt)
		p, err := open(ctx, mnt, log, true)
		if err != nil {
			return nil, err
		}
		p.imageFile = image
		return p, nil
	}

	if _, err := os.Stat(image); errors.Is(err, os.ErrNotExist) {
		if err := makeImage(ctx, image, size, log); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, fmt.Errorf("open pool image: %w", err)
	}

	m, err := mountImage(image, mnt)
	if err != nil {
		return nil, err
	}
	log.Info("btrfs: pool image mounted", "image", image, "device", m.dev, "subvolume", mnt)
	p, err := open(ctx, mnt, log, true)
	if err != nil {
		if cerr := m.close(); cerr != nil {
			log.Warn("btrfs: cannot unmount pool image after failed open", "subvolume", mnt, "err", cerr)
		}
		return nil, err
	}
	p.img, p.imageFile = m, image
	return p, nil
}

// makeImage creates a sparse file of size bytes and formats it. It works on
// image+".new" and renames it into place only once mkfs has succeeded, so a
// crash never leaves an unformatted file under the image's name.
func makeImage(ctx context.Context, image string, size int64, log *slog.Logger) error {
	mkfs, err := exec.LookPath("mkfs.btrfs")
	if err != nil {
		return fmt.Errorf("create pool image %s: %w: install btrfs-progs", image, err)
	}
	if err := os.MkdirAll(filepath.Dir(image), 0o700); err != nil {
		return fmt.Errorf("create pool image: %w", err)
	}
	tmp := image + ".new"
	_ = os.Remove(tmp) // a leftover of a crash during an earlier attempt
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create pool image: %w", err)
	}
	err = f.Truncate(size)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		removeLogged(tmp)
		return fmt.Errorf("create pool image %s: %w", tmp, err)
	}
	out, err := exec.CommandContext(ctx, mkfs, "-q", "-L", "superjolt", tmp).CombinedOutput()
	if err != nil {
		removeLogged(tmp)
		return fmt.Errorf("create pool image: mkfs.btrfs %s: %w: %s", tmp, err, strings.TrimSpace(string(out)))
	}
	if err := os.Rename(tmp, image); err != nil {
		removeLogged(tmp)
		return fmt.Errorf("create pool image: %w", err)
	}
	if err := syncDir(filepath.Dir(image)); err != nil {
		return fmt.Errorf("create pool image: %w", err)
	}
	log.Info("btrfs: pool image created", "image", image, "size", size)
	return nil
}

// imageMount is a loop device and mount made by OpenImage.
type imageMount struct {
	dev     string // /dev/loopN
	mnt     string
	backing unix.Stat_t // of the image file, to recognize the device later
}

// mountImage attaches image to a loop device (or reuses one it is already
// attached to) and mounts it on mnt.
func mountImage(image, mnt string) (*imageMount, error) {
	lf, err := findLoop(image)
	if err != nil {
		return nil, err
	}
	if lf == nil {
		if lf, err = attachLoop(image); err != nil {
			return nil, err
		}
	}
	// lf holds the device until the mount does; with autoclear set, closing it
	// after a failed mount detaches the device.
	defer lf.Close()
	m := &imageMount{dev: lf.Name(), mnt: mnt}
	if err := unix.Stat(image, &m.backing); err != nil {
		return nil, fmt.Errorf("mount pool image: %w", err)
	}
	if err := unix.Mount(lf.Name(), mnt, "btrfs", 0, ""); err != nil {
		return nil, fmt.Errorf("mount pool image %s (%s) on %s: %w", image, lf.Name(), mnt, err)
	}
	return m, nil
}

// close unmounts the pool and detaches its loop device.
func (m *imageMount) close() error {
	if err := unix.Unmount(m.mnt, 0); err != nil {
		return fmt.Errorf("unmount pool %s: %w: stop whatever still uses it (fuser -m %s), then umount it", m.mnt, err, m.mnt)
	}
	// Autoclear has normally detached the device at unmount already, and
	// another process may have attached it to its own file since: detach it
	// only if it still holds our image (a device found attached without
	// autoclear, say by losetup, is still ours to detach).
	lf, err := os.OpenFile(m.dev, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", m.dev, err)
	}
	defer lf.Close()
	info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
	if errors.Is(err, unix.ENXIO) {
		return nil // detached
	}
	if err != nil {
		return fmt.Errorf("detach %s: %w", m.dev, err)
	}
	if info.Inode != m.backing.Ino || info.Device != m.backing.Dev {
		return nil // someone else's now
	}
	if err := unix.IoctlSetInt(int(lf.Fd()), unix.LOOP_CLR_FD, 0); err != nil && !errors.Is(err, unix.ENXIO) {
		return fmt.Errorf("detach %s: %w: run `losetup -d %s`", m.dev, err, m.dev)
	}
	return nil
}

// attachLoop attaches image to a free loop device with autoclear and returns
// the open device.
func attachLoop(image string) (*os.File, error) {
	img, err := os.OpenFile(image, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("attach pool image: %w", err)
	}
	defer img.Close() // the loop device holds its own reference
	ctl, err := os.OpenFile("/dev/loop-control", os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("attach pool image %s: %w: loop devices need root and the loop driver", image, err)
	}
	defer ctl.Close()

	const attempts = 32
	for range attempts {
		n, err := unix.IoctlRetInt(int(ctl.Fd()), unix.LOOP_CTL_GET_FREE)
		if err != nil {
			return nil, fmt.Errorf("attach pool image: find a free loop device: %w", err)
		}
		dev := "/dev/loop" + strconv.Itoa(n)
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			// /dev is not devtmpfs: make the node.
			if err := unix.Mknod(dev, unix.S_IFBLK|0o660, int(unix.Mkdev(7, uint32(n)))); err != nil && !errors.Is(err, os.ErrExist) {
				return nil, fmt.Errorf("attach pool image: mknod %s: %w", dev, err)
			}
			lf, err = os.OpenFile(dev, os.O_RDWR, 0)
		}
		if err != nil {
			return nil, fmt.Errorf("attach pool image: %w", err)
		}
		cfg := unix.LoopConfig{Fd: uint32(img.Fd())}
		cfg.Info.Flags = unix.LO_FLAGS_AUTOCLEAR | unix.LO_FLAGS_DIRECT_IO
		copy(cfg.Info.File_name[:len(cfg.Info.File_name)-1], image)
		err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		if errors.Is(err, unix.EINVAL) {
			// Direct I/O refused by the backing filesystem: plain buffered.
			cfg.Info.Flags &^= unix.LO_FLAGS_DIRECT_IO
			err = unix.IoctlLoopConfigure(int(lf.Fd()), &cfg)
		}
		if errors.Is(err, unix.EBUSY) {
			lf.Close() // taken by someone else between GET_FREE and now
			continue
		}
		if err != nil {
			lf.Close()
			return nil, fmt.Errorf("attach pool image %s to %s: %w", image, dev, err)
		}
		return lf, nil
	}
	return nil, fmt.Errorf("attach pool image %s: every free loop device was taken by someone else %d times in a row", image, attempts)
}

// findLoop returns the loop device image is attached to, opened, or nil.
func findLoop(image string) (*os.File, error) {
	want, err := os.Stat(image)
	if err != nil {
		return nil, fmt.Errorf("attach pool image: %w", err)
	}
	devs, err := filepath.Glob("/sys/block/loop*/loop/backing_file")
	if err != nil {
		return nil, err
	}
	for _, bf := range devs {
		dev := loopBacking(bf, want)
		if dev == "" {
			continue
		}
		lf, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			continue // detached meanwhile
		}
		info, err := unix.IoctlLoopGetStatus64(int(lf.Fd()))
		if err == nil && info.Inode == inode(want) {
			return lf, nil
		}
		lf.Close()
	}
	return nil, nil
}

// loopBacking returns /dev/loopN when the sysfs backing_file bf names the
// file want.
func loopBacking(bf string, want os.FileInfo) string {
	b, err := os.ReadFile(bf)
	if err != nil {
		return ""
	}
	fi, err := os.Stat(strings.TrimSpace(string(b)))
	if err != nil || !os.SameFile(fi, want) {
		return ""
	}
	return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(bf)))
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}

// mountedImage reports whether mnt is the mount point of a Btrfs mounted from
// a loop device backed by image. Something else mounted on mnt is an error.
func mountedImage(image, mnt string) (bool, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false, err
	}
	defer f.Close()
	var fstype, source string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		if !ok {
			continue
		}
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if len(fields) < 5 || len(pf) < 2 || unescapeMountinfo(fields[4]) != mnt {
			continue
		}
		fstype, source = pf[0], unescapeMountinfo(pf[1]) // the last one listed is on top
	}
	if err := sc.Err(); err != nil {
		return false, err
	}
	if fstype == "" {
		return false, nil
	}
	if want, err := os.Stat(image); err == nil && fstype == "btrfs" && strings.HasPrefix(source, "/dev/loop") &&
		loopBacking(filepath.Join("/sys/block", filepath.Base(source), "loop/backing_file"), want) != "" {
		return true, nil
	}
	return false, fmt.Errorf("open pool image %s: %s already has %s from %s mounted on it: unmount it or choose another mount point", image, mnt, fstype, source)
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
