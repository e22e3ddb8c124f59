package guest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// InitOptions configures Init. Zero fields take the defaults named.
type InitOptions struct {
	// ModulesDir holds the kernel modules (uncompressed .ko) and the file
	// "order" listing them, one file name a line, in load order
	// (default /lib/modules/superjolt).
	ModulesDir string
	// RootDevice is the root disk (default /dev/vda), mounted as
	// RootFSType (default ext4) read-write on NewRoot (default /newroot).
	RootDevice, RootFSType, NewRoot string
	// DeviceTimeout bounds the wait for RootDevice (default 30s: TCG is
	// slow).
	DeviceTimeout time.Duration
	// Exec is the program to run as PID 1 on the new root, with ExecArgs.
	// Default: what [InitExecFile] names when the initramfs has it (the
	// init of an image with systemd), else /sbin/superjolt-agent serve.
	Exec     string
	ExecArgs []string
	// Logger (default: text to /dev/console).
	Logger *slog.Logger
}

// InitEnv is the environment Init gives the program it execs.
var InitEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"TERM=linux",
}

// Init is the initramfs stage of the test image, run as PID 1 from /init:
// it mounts /proc, /sys and /dev (devtmpfs), points stdout and stderr at
// /dev/console, loads the modules of ModulesDir/order with finit_module
// (a failure is logged, never fatal: the wait for the root disk is the real
// check), waits for the root disk, mounts it on NewRoot, moves /proc, /sys
// and /dev into it, makes it the root (MS_MOVE, chroot) and execs Exec
// there. It returns only on failure.
func Init(opts InitOptions) error {
	if opts.ModulesDir == "" {
		opts.ModulesDir = "/lib/modules/superjolt"
	}
	if opts.RootDevice == "" {
		opts.RootDevice = "/dev/vda"
	}
	if opts.RootFSType == "" {
		opts.RootFSType = "ext4"
	}
	if opts.NewRoot == "" {
		opts.NewRoot = "/newroot"
	}
	if opts.DeviceTimeout <= 0 {
		opts.DeviceTimeout = 30 * time.Second
	}
	if opts.Exec == "" {
		exec, args, err := readInitExec(InitExecFile)
		switch {
		case err == nil:
			opts.Exec, opts.ExecArgs = exec, args
		case errors.Is(err, os.ErrNotExist):
			opts.Exec, opts.ExecArgs = "/sbin/superjolt-agent", []string{"serve"}
		default:
			return err
		}
	}
	if opts.ExecArgs == nil {
		opts.ExecArgs = []string{}
	}

	for _, m := range []struct {
		fstype, target string
		flags          uintptr
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV},
		{"devtmpfs", "/dev", unix.MS_NOSUID},
	} {
		if err := mountFS(m.fstype, m.target, m.flags, ""); err != nil {
			return err
		}
	}
	ConsoleOutput()
	log := opts.Logger
	if log == nil {
		log = ConsoleLogger(slog.LevelInfo)
	}
	log.Info("superjolt init: initramfs stage")

	LoadModules(log, opts.ModulesDir)

	if err := waitDevice(opts.RootDevice, opts.DeviceTimeout); err != nil {
		return err
	}
	if err := os.MkdirAll(opts.NewRoot, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(opts.RootDevice, opts.NewRoot, opts.RootFSType, 0, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", opts.RootDevice, opts.RootFSType, opts.NewRoot, err)
	}
	for _, d := range []string{"/proc", "/sys", "/dev"} {
		target := filepath.Join(opts.NewRoot, d)
		if err := os.MkdirAll(target, 0o755); err != nil {
			return err
		}
		if err := unix.Mount(d, target, "", unix.MS_MOVE, ""); err != nil {
			return fmt.Errorf("move %s to %s: %w", d, target, err)
		}
	}
	if err := unix.Chdir(opts.NewRoot); err != nil {
		return err
	}
	// Free the initramfs' memory, as switch_root does: nothing on it is
	// needed once the root disk is mounted (this binary stays mapped).
	if freed, err := clearInitramfs("/"); err != nil {
		log.Warn("initramfs not cleared", "err", err)
	} else {
		log.Info("initramfs cleared", "freed_bytes", freed)
	}
	if err := unix.Mount(".", "/", "", unix.MS_MOVE, ""); err != nil {
		return fmt.Errorf("move %s to /: %w", opts.NewRoot, err)
	}
	if err := unix.Chroot("."); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return err
	}
	if _, err := os.Stat(opts.Exec); err != nil {
		return fmt.Errorf("the root disk has no %s: %w", opts.Exec, err)
	}
	log.Info("switching root", "device", opts.RootDevice, "exec", opts.Exec)
	argv := append([]string{opts.Exec}, opts.ExecArgs...)
	return fmt.Errorf("exec %s: %w", opts.Exec, unix.Exec(opts.Exec, argv, InitEnv))
}

// readInitExec reads an [InitExecFile]: the program on its first line,
// arguments on the later non-empty lines.
func readInitExec(path string) (string, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	var fields []string
	for _, l := range strings.Split(string(b), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			fields = append(fields, l)
		}
	}
	if len(fields) == 0 || !filepath.IsAbs(fields[0]) {
		return "", nil, fmt.Errorf("%s must name an absolute path on its first line", path)
	}
	return fields[0], fields[1:], nil
}

// mountFS mounts a virtual filesystem on target (made if missing); one
// already mounted there (EBUSY) is fine.
func mountFS(fstype, target string, flags uintptr, data string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	err := unix.Mount(fstype, target, fstype, flags, data)
	if err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mount %s on %s: %w", fstype, target, err)
	}
	return nil
}

// ConsoleOutput points stdout and stderr at /dev/console when it can be
// opened, so that logs reach the serial console the host captures.
func ConsoleOutput() {
	fd, err := unix.Open("/dev/console", unix.O_WRONLY|unix.O_NOCTTY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	_ = unix.Dup3(fd, 1, 0)
	_ = unix.Dup3(fd, 2, 0)
	_ = unix.Close(fd)
}

// ConsoleLogger logs concise text lines (no timestamps: the console log
// and journald have their own) to stderr.
func ConsoleLogger(level slog.Level) *slog.Logger {
	return TextLogger(os.Stderr, level)
}

// TextLogger logs concise text lines, without timestamps, to w.
func TextLogger(w io.Writer, level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{
		Level: level,
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
}

// LoadModules loads the modules listed in dir/order (one .ko file name a
// line; blank lines and # comments skipped) with finit_module. A module
// already loaded or built in (EEXIST) counts as loaded; any other failure
// is logged and loading goes on, since some modules (vsock) are optional.
// It returns the names that loaded.
func LoadModules(log *slog.Logger, dir string) []string {
	return loadModules(log, dir, loadModule)
}

func loadModules(log *slog.Logger, dir string, load func(path string) error) []string {
	f, err := os.Open(filepath.Join(dir, "order"))
	if err != nil {
		log.Info("no kernel modules to load", "err", err)
		return nil
	}
	defer f.Close()
	var loaded []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name := strings.TrimSpace(sc.Text())
		if name == "" || strings.HasPrefix(name, "#") {
			continue
		}
		if err := load(filepath.Join(dir, name)); err != nil {
			log.Warn("kernel module not loaded", "module", name, "err", err)
			continue
		}
		loaded = append(loaded, name)
	}
	log.Info("kernel modules loaded", "modules", loaded)
	return loaded
}

func loadModule(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	err = unix.FinitModule(fd, "", 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}

// waitDevice waits for a block device node, making it with mknod from
// /sys/class/block/<name>/dev if devtmpfs has not.
func waitDevice(dev string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	name := filepath.Base(dev)
	for {
		if _, err := os.Stat(dev); err == nil {
			return nil
		}
		if b, err := os.ReadFile("/sys/class/block/" + name + "/dev"); err == nil {
			var maj, mnr uint32
			if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &mnr); err == nil {
				_ = unix.Mknod(dev, unix.S_IFBLK|0o600, int(unix.Mkdev(maj, mnr)))
				continue
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not appear within %s (virtio_blk not loaded, or no disk attached)", dev, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// StartInitServices prepares a PID 1 agent on its real root: it mounts
// tmpfs on /tmp and /run (and /proc, /sys, /dev if missing, for a rootfs
// booted without Init), and starts a Reaper, which the caller must hand to
// ProcessRunner.
func StartInitServices(ctx context.Context, log *slog.Logger) (*Reaper, error) {
	for _, m := range []struct {
		fstype, target string
		flags          uintptr
		data           string
	}{
		{"proc", "/proc", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{"sysfs", "/sys", unix.MS_NOSUID | unix.MS_NOEXEC | unix.MS_NODEV, ""},
		{"devtmpfs", "/dev", unix.MS_NOSUID, ""},
		{"tmpfs", "/tmp", unix.MS_NOSUID | unix.MS_NODEV, "mode=1777"},
		{"tmpfs", "/run", unix.MS_NOSUID | unix.MS_NODEV, "mode=0755"},
	} {
		if mounted(m.target) {
			continue
		}
		if err := mountFS(m.fstype, m.target, m.flags, m.data); err != nil {
			return nil, err
		}
	}
	r := NewReaper(log)
	go r.Run(ctx)
	return r, nil
}

// mounted reports whether path is a mount point (its device differs from
// its parent's).
func mounted(path string) bool {
	var st, parent unix.Stat_t
	if unix.Stat(path, &st) != nil || unix.Stat(filepath.Join(path, ".."), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// clearInitramfs deletes everything under root when root is an initramfs
// (ramfs or tmpfs), without crossing into other filesystems: the root disk
// mounted on a directory below it is never touched. It returns the bytes
// of the regular files removed.
func clearInitramfs(root string) (int64, error) {
	var sfs unix.Statfs_t
	if err := unix.Statfs(root, &sfs); err != nil {
		return 0, err
	}
	if sfs.Type != unix.RAMFS_MAGIC && sfs.Type != unix.TMPFS_MAGIC {
		return 0, fmt.Errorf("%s is not an initramfs (filesystem type %#x)", root, sfs.Type)
	}
	var st unix.Stat_t
	if err := unix.Lstat(root, &st); err != nil {
		return 0, err
	}
	return deleteTree(root, st.Dev, false)
}

// deleteTree removes the entries of dir that live on device dev, depth
// first, and dir itself if self is set. Directories of other devices
// (mount points) are left alone with all they hold.
func deleteTree(dir string, dev uint64, self bool) (int64, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	var freed int64
	var errs []error
	for _, e := range ents {
		p := filepath.Join(dir, e.Name())
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Dev != dev {
			continue // a mount point: not ours
		}
		if st.Mode&unix.S_IFMT == unix.S_IFDIR {
			n, err := deleteTree(p, dev, true)
			freed += n
			if err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := unix.Unlink(p); err != nil {
			errs = append(errs, err)
			continue
		}
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			freed += st.Size
		}
	}
	if self {
		// A directory still holding a mount point cannot go: EBUSY or
		// ENOTEMPTY is expected then.
		if err := unix.Rmdir(dir); err != nil && !errors.Is(err, unix.EBUSY) && !errors.Is(err, unix.ENOTEMPTY) {
			errs = append(errs, err)
		}
	}
	return freed, errors.Join(errs...)
}
