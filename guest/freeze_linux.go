package guest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// The freeze ioctls, _IOWR('X', 119, int) and _IOWR('X', 120, int); x/sys
// does not name them.
const (
	ioctlFIFREEZE = 0xC0045877
	ioctlFITHAW   = 0xC0045878
)

// skipFSTypes are filesystem types never frozen: virtual, in-memory,
// read-only by nature, or remote.
var skipFSTypes = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "tmpfs": true, "devpts": true, "ramfs": true,
	"rootfs": true, "cgroup": true, "cgroup2": true, "securityfs": true, "debugfs": true,
	"tracefs": true, "pstore": true, "bpf": true, "mqueue": true, "hugetlbfs": true,
	"configfs": true, "fusectl": true, "autofs": true, "binfmt_misc": true, "efivarfs": true,
	"rpc_pipefs": true, "nsfs": true, "selinuxfs": true, "squashfs": true, "iso9660": true,
	"overlay": true, "nfs": true, "nfs4": true, "cifs": true, "smb3": true, "9p": true,
	"virtiofs": true, "erofs": true, "fuse": true, "ceph": true,
}

// FSFreezer is the real Freezer: FIFREEZE and FITHAW on the writable
// filesystems of /proc/self/mounts.
type FSFreezer struct {
	// MountsFile is read for the mount table (default /proc/self/mounts).
	MountsFile string
	// Logger (default slog.Default()).
	Logger *slog.Logger
}

var _ Freezer = FSFreezer{}

// Filesystems lists the mount points of writable, freezable filesystem
// types in mount order, one per filesystem (bind mounts and mounts of the
// same device collapse to the first).
func (f FSFreezer) Filesystems() ([]string, error) {
	path := f.MountsFile
	if path == "" {
		path = "/proc/self/mounts"
	}
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	entries, err := parseMounts(file)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", path, err)
	}
	log := f.Logger
	if log == nil {
		log = slog.Default()
	}
	seenDev := map[uint64]bool{}
	var out []string
	for _, m := range freezeCandidates(entries) {
		var st unix.Stat_t
		if err := unix.Stat(m.mountpoint, &st); err != nil {
			log.Warn("skipping mount point", "mountpoint", m.mountpoint, "err", err)
			continue
		}
		if seenDev[st.Dev] {
			continue
		}
		seenDev[st.Dev] = true
		out = append(out, m.mountpoint)
	}
	return out, nil
}

// mountEntry is one line of /proc/self/mounts.
type mountEntry struct {
	source, mountpoint, fstype string
	options                    []string
}

// parseMounts reads a mounts table (fstab format, octal escapes).
func parseMounts(r io.Reader) ([]mountEntry, error) {
	var out []mountEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("short mounts line %q", sc.Text())
		}
		out = append(out, mountEntry{
			source:     unescapeMount(f[0]),
			mountpoint: unescapeMount(f[1]),
			fstype:     f[2],
			options:    strings.Split(f[3], ","),
		})
	}
	return out, sc.Err()
}

// freezeCandidates keeps writable mounts of freezable types, deduplicated
// by mount point, in order.
func freezeCandidates(entries []mountEntry) []mountEntry {
	seen := map[string]bool{}
	var out []mountEntry
	for _, m := range entries {
		base, _, _ := strings.Cut(m.fstype, ".") // fuse.sshfs -> fuse
		if skipFSTypes[m.fstype] || skipFSTypes[base] {
			continue
		}
		ro := false
		for _, o := range m.options {
			if o == "ro" {
				ro = true
			}
		}
		if ro || seen[m.mountpoint] {
			continue
		}
		seen[m.mountpoint] = true
		out = append(out, m)
	}
	return out
}

// unescapeMount undoes the \ooo octal escapes of the mounts table.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && isOctal(s[i+1]) && isOctal(s[i+2]) && isOctal(s[i+3]) {
			b.WriteByte((s[i+1]-'0')<<6 | (s[i+2]-'0')<<3 | (s[i+3] - '0'))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }

// Freeze runs FIFREEZE on the filesystem mounted at mountpoint.
func (FSFreezer) Freeze(mountpoint string) error {
	err := fsIoctl(mountpoint, ioctlFIFREEZE)
	switch {
	case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTTY):
		return fmt.Errorf("%w: %s does not support FIFREEZE", ErrNotFreezable, mountpoint)
	case errors.Is(err, unix.EBUSY):
		return fmt.Errorf("%w: %s is frozen already by someone else", ErrNotFreezable, mountpoint)
	case err != nil:
		return fmt.Errorf("FIFREEZE %s: %w", mountpoint, err)
	}
	return nil
}

// Thaw runs FITHAW; a filesystem that is not frozen (EINVAL) counts as
// thawed.
func (FSFreezer) Thaw(mountpoint string) error {
	err := fsIoctl(mountpoint, ioctlFITHAW)
	if err != nil && !errors.Is(err, unix.EINVAL) {
		return fmt.Errorf("FITHAW %s: %w", mountpoint, err)
	}
	return nil
}

func fsIoctl(mountpoint string, req uint) error {
	fd, err := unix.Open(mountpoint, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", mountpoint, err)
	}
	defer unix.Close(fd)
	for {
		err = unix.IoctlSetInt(fd, req, 0)
		if !errors.Is(err, unix.EINTR) {
			return err
		}
	}
}

func syncAll() { unix.Sync() }
