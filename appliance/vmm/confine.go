package vmm

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// How QEMU is confined.
//
// When the daemon runs as root, every QEMU runs as a user of its own: a uid (with the gid of the same
// number and no supplementary groups, except /dev/kvm's group when KVM is used) from the range
// [UIDBase, UIDBase+UIDCount), leased for that one QEMU process and held until it has been reaped. No
// two QEMU processes that run at once share a uid, even when they belong to different daemons or test
// binaries on the same host: a lease is an exclusive flock on <LeaseDir>/<uid> held by the process that
// started the QEMU, and a uid that any live process already runs as (a QEMU left by a daemon that
// crashed, say) is never leased. A VM usually gets the same uid on every boot (the search starts at a
// hash of its name), but nothing depends on it. With a uid of its own a QEMU cannot signal or ptrace
// another VM's QEMU, nor open another's disk through /proc/PID/fd.
//
// QEMU also runs under its seccomp sandbox (-sandbox on with obsolete, elevateprivileges, spawn and
// resourcecontrol denied: no setuid, no fork/exec, no scheduler or affinity changes), which sets
// no_new_privs. Capabilities are gone with the switch away from uid 0.
//
// QEMU needs no path into the pool or the run directory: the daemon opens every file and socket and
// hands QEMU the descriptors (kernel and initrd read-only, the disk read-write, the console log, the
// listening QMP and agent sockets, /dev/vhost-vsock, and the VM's TAP device, which the daemon opened
// with TUNSETIFF since QEMU cannot open /dev/net/tun). QEMU reopens the files through /proc/self/fd,
// which the kernel allows without any access to the directories above them but checks against the
// file's own mode, so before each launch the daemon makes the disk and the console log owned by the
// leased uid, mode 0600 (a restore replaces the disk with a copy made by root; a backup keeps whatever
// owner the disk had, so this is done at every launch, not once). The kernel and initrd, which may be
// shared between machines, are only opened: they must be world-readable (the built-in images are).
// The sockets and the pid file stay root's (only the daemon connects; QEMU cannot rewrite the pid file
// that [Kill] and [Attach] trust), as does the run directory (0700). The directories holding a VM's disk can
// therefore be closed to everyone but root: the appliance makes each VM's subvolume 0700.
//
// What still runs as root is the daemon: it makes and snapshots btrfs subvolumes (ioctls), attaches
// the pool's loop device, grows disks, opens the files above, and starts QEMU (the launch itself:
// setgroups, setgid, setuid in the child between fork and exec, so that no QEMU code runs as root);
// later it will also own TAP devices and nftables. When the daemon itself does not run as root, QEMU
// runs as the daemon's user, still sandboxed.
const (
	// UIDBase is the first uid (and gid) of QEMU processes: 0x70000000, above the range systemd gives
	// to containers (524288-1879048191) and below 2^31, which some tools take as negative.
	UIDBase = 0x70000000
	// UIDCount is how many uids the range holds: at most this many QEMUs run at once on one host.
	UIDCount = 65536
	// LeaseDir holds one lock file per leased uid (see above).
	LeaseDir = "/run/superjolt/qemu-uid"
)

// sandboxArg is QEMU's -sandbox argument.
const sandboxArg = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"

// ErrNoUser: every uid of the range is in use.
var ErrNoUser = errors.New("vmm: no free uid for QEMU in its range")

// userLease is one uid leased for one QEMU process; release ends it.
type userLease struct {
	uid  uint32
	lock *os.File
}

// confined reports whether QEMU gets a user of its own: only a root daemon can give it one.
func confined() bool { return os.Geteuid() == 0 }

// leaseUser leases a uid for a QEMU of machine name, from dir (see the comment at the top).
func leaseUser(dir, name string) (*userLease, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("vmm: uid leases: %w", err)
	}
	used, err := liveIDs()
	if err != nil {
		return nil, fmt.Errorf("vmm: uid leases: %w", err)
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	start := h.Sum32() % UIDCount
	for i := uint32(0); i < UIDCount; i++ {
		uid := UIDBase + (start+i)%UIDCount
		if used[uid] {
			continue
		}
		f, err := os.OpenFile(filepath.Join(dir, strconv.FormatUint(uint64(uid), 10)),
			os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return nil, fmt.Errorf("vmm: uid lease: %w", err)
		}
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
			f.Close()
			continue // another process holds it
		}
		// For an operator wondering whose uid this is.
		f.Truncate(0)
		f.WriteAt([]byte(name+"\n"), 0)
		return &userLease{uid: uid, lock: f}, nil
	}
	return nil, ErrNoUser
}

func (l *userLease) release() {
	if l != nil {
		l.lock.Close() // drops the flock
	}
}

// liveIDs returns the uids and gids in the range that live processes run as (any of real, effective,
// saved, filesystem).
func liveIDs() (map[uint32]bool, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	used := map[uint32]bool{}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		f, err := os.Open(filepath.Join("/proc", e.Name(), "status"))
		if err != nil {
			continue // gone already
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			line := sc.Text()
			if !strings.HasPrefix(line, "Uid:") && !strings.HasPrefix(line, "Gid:") {
				continue
			}
			for _, field := range strings.Fields(line)[1:] {
				if id, err := strconv.ParseUint(field, 10, 32); err == nil && id >= UIDBase && id < UIDBase+UIDCount {
					used[uint32(id)] = true
				}
			}
		}
		f.Close()
	}
	return used, nil
}

// handover holds what the daemon opened for one QEMU process. Its files are passed to QEMU in order
// as fds 3, 4, …; close releases the daemon's copies once QEMU has them (or the launch failed).
type handover struct {
	files []*os.File
}

// add appends f and returns the fd number QEMU will see it as.
func (h *handover) add(f *os.File) int {
	h.files = append(h.files, f)
	return 2 + len(h.files)
}

func (h *handover) close() {
	for _, f := range h.files {
		f.Close()
	}
	h.files = nil
}

// procFD is the path QEMU opens to reach an inherited descriptor.
func procFD(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// openReadable opens a file QEMU only reads (kernel, initrd) and checks that a QEMU running as uid
// could open it again through /proc/self/fd.
func openReadable(what, path string, uid int) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("vmm: %s: %w", what, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmm: %s: %w", what, err)
	}
	if uid > 0 && st.Mode&0o004 == 0 && !(int(st.Uid) == uid && st.Mode&0o400 != 0) {
		f.Close()
		return nil, fmt.Errorf("vmm: %s %s is mode %04o owned by uid %d: QEMU runs as uid %d and cannot read it; make it world-readable (chmod 0644)",
			what, path, st.Mode&0o7777, st.Uid, uid)
	}
	return f, nil
}

// openOwned opens a regular file that belongs to one machine alone (its disk) read-write, without
// following a symlink, and makes it owned by uid:gid, mode 0600 (when uid >= 0).
func openOwned(what, path string, uid, gid int) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("vmm: %s: %w", what, err)
	}
	if err := own(f, uid, gid); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmm: %s %s: %w", what, path, err)
	}
	return f, nil
}

// createOwned makes a fresh file at path (removing what was there, never following a symlink) for
// QEMU to write, owned by uid:gid, mode 0600 (when uid >= 0).
func createOwned(what, path string, uid, gid int) (*os.File, error) {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("vmm: %s: %w", what, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmm: %s: %w", what, err)
	}
	if err := own(f, uid, gid); err != nil {
		f.Close()
		return nil, fmt.Errorf("vmm: %s %s: %w", what, path, err)
	}
	return f, nil
}

func own(f *os.File, uid, gid int) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return errors.New("not a regular file")
	}
	if uid < 0 {
		return nil
	}
	if err := f.Chown(uid, gid); err != nil {
		return err
	}
	return f.Chmod(0o600)
}

// listen makes a listening UNIX socket at path, owned by the daemon, and returns its descriptor for
// QEMU, which accepts on it. The socket file stays when the daemon's copy is closed.
func listen(path string) (*os.File, error) {
	os.Remove(path)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("vmm: %w", err)
	}
	l.SetUnlinkOnClose(false)
	defer l.Close()
	f, err := l.File()
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("vmm: %w", err)
	}
	return f, nil
}

// kvmGroup says whether a QEMU that runs unprivileged can open /dev/kvm: with gid -1 when the device
// is open to all, with /dev/kvm's group as a supplementary group when it is open to that group; an
// error naming the fix otherwise (it is mode 0600 root on some hosts).
func kvmGroup() (int, error) {
	var st unix.Stat_t
	if err := unix.Stat("/dev/kvm", &st); err != nil {
		return -1, fmt.Errorf("stat /dev/kvm: %w", err)
	}
	switch {
	case st.Mode&0o006 == 0o006:
		return -1, nil
	case st.Mode&0o060 == 0o060 && st.Gid != 0:
		return int(st.Gid), nil
	}
	return -1, fmt.Errorf("/dev/kvm is mode %04o owned by %d:%d, and QEMU runs unprivileged: give it a group "+
		"(a udev rule KERNEL==\"kvm\", GROUP=\"kvm\", MODE=\"0660\")", st.Mode&0o7777, st.Uid, st.Gid)
}

// dupFile returns a second descriptor of f (close-on-exec, as every descriptor the daemon opens).
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("vmm: dup %s: %w", f.Name(), err)
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}
