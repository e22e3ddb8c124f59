package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	sjnet "github.com/superjolt/superjolt/appliance/net"
)

// How a QEMU process is started, and found again.
//
// Every launch leaves a record in the run directory (launch.json, root's, 0600): the machine's
// configuration, the accelerator and transport it boots with and where its sockets are. The
// record serves twice. With [Config.Units] the daemon cannot hand QEMU descriptors (a service
// manager starts the process), so the unit's command is the launcher, `superjoltd exec-vm
// RUNDIR`, which reads the record, does as root what the daemon does for a QEMU it starts itself
// (lease a uid, open the files and sockets, see confine.go), writes the pid file and then exec()s
// QEMU: QEMU is the unit's main process, with the launcher's pid. And a daemon that starts after
// an earlier one went away reads the record to reattach to the QEMU that still runs ([Attach]).
//
// Without Units the daemon starts QEMU itself, as a process in a session of its own and without a
// parent-death signal: QEMU outlives the daemon, whose restart or upgrade reboots no guest.

// recordFile is the launch record's name in the run directory.
const recordFile = "launch.json"

// record is what a launch leaves in the run directory.
type record struct {
	Config     Config
	QEMU       string // the binary
	Accel      Accel
	Transport  Transport
	TSCKHz     uint64
	SockDir    string
	OwnSockDir bool
}

func (r record) paths() paths {
	p := paths{runDir: r.Config.RunDir, sockDir: r.SockDir, ownSockDir: r.OwnSockDir}
	p.consoleLog = filepath.Join(p.runDir, "console.log")
	p.qemuLog = filepath.Join(p.runDir, "qemu.log")
	p.pid = filepath.Join(p.runDir, "qemu.pid")
	p.qmpSock = filepath.Join(p.sockDir, "qmp.sock")
	p.agentSock = filepath.Join(p.sockDir, "agent.sock")
	p.consoleSock = filepath.Join(p.sockDir, "console.sock")
	return p
}

func writeRecord(r record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("vmm: launch record: %w", err)
	}
	path := filepath.Join(r.Config.RunDir, recordFile)
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("vmm: launch record: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("vmm: launch record: %w", err)
	}
	return nil
}

// readRecord reads the launch record of the machine in runDir and checks that it is one.
func readRecord(runDir string) (record, error) {
	var r record
	b, err := os.ReadFile(filepath.Join(runDir, recordFile))
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("vmm: launch record of %s does not parse: %w", runDir, err)
	}
	if filepath.Clean(r.Config.RunDir) != filepath.Clean(runDir) {
		return r, fmt.Errorf("vmm: launch record in %s names the run directory %s", runDir, r.Config.RunDir)
	}
	if _, err := r.Config.withDefaults(); err != nil {
		return r, err
	}
	return r, nil
}

// openFiles opens, for a QEMU that runs as uid:gid (-1: the caller's), every file and socket it
// gets (see confine.go), and gives each the descriptor number QEMU will see it as (assign). The
// caller closes the files once QEMU has its copies.
func openFiles(c Config, pp paths, transport Transport, uid, gid int, assign func(*os.File) int) (qemuFDs, []*os.File, error) {
	var fds qemuFDs
	type opener struct {
		fd   *int
		file func() (*os.File, error)
	}
	open := []opener{
		{&fds.kernel, func() (*os.File, error) { return openReadable("kernel", c.Kernel, uid) }},
		{&fds.initrd, func() (*os.File, error) { return openReadable("initrd", c.Initrd, uid) }},
		{&fds.rootfs, func() (*os.File, error) { return openOwned("rootfs", c.Rootfs, uid, gid) }},
		{&fds.console, func() (*os.File, error) { return createOwned("console log", pp.consoleLog, uid, gid) }},
		{&fds.qmp, func() (*os.File, error) { return listen(pp.qmpSock) }},
		{&fds.serial, func() (*os.File, error) { return listen(pp.consoleSock) }},
	}
	if transport == TransportVsock {
		open = append(open, opener{&fds.vhost, func() (*os.File, error) { return os.OpenFile("/dev/vhost-vsock", os.O_RDWR, 0) }})
	} else {
		open = append(open, opener{&fds.agent, func() (*os.File, error) { return listen(pp.agentSock) }})
	}
	if c.Net != nil {
		open = append(open, opener{&fds.tap, func() (*os.File, error) {
			f, err := openQueue(c.Net.NetNS, c.Net.TAP)
			if err != nil {
				return nil, fmt.Errorf("vmm: %w", err)
			}
			return f, nil
		}})
	}
	var files []*os.File
	for _, o := range open {
		f, err := o.file()
		if err != nil {
			for _, f := range files {
				f.Close()
			}
			return fds, nil, err
		}
		files = append(files, f)
		*o.fd = assign(f)
	}
	return fds, files, nil
}

// ExecLaunch is the launcher of a machine run as a unit (`superjoltd exec-vm RUNDIR`): it reads
// the launch record in runDir, leases a uid for QEMU (as root), opens QEMU's files and sockets,
// writes the pid file (its own pid, which QEMU keeps) and exec()s QEMU with them. It returns only
// on failure, with the reason, before QEMU ran.
func ExecLaunch(runDir string) error {
	r, err := readRecord(runDir)
	if err != nil {
		return err
	}
	c := r.Config
	uid, gid := -1, -1
	var lease *userLease
	if confined() {
		if lease, err = leaseUser(LeaseDir, c.Name); err != nil {
			return err
		}
		uid, gid = int(lease.uid), int(lease.uid)
	}
	pp := r.paths()
	// QEMU inherits the files at the numbers they have here.
	fds, files, err := openFiles(c, pp, r.Transport, uid, gid, func(f *os.File) int { return int(f.Fd()) })
	if err != nil {
		return err
	}
	if err := writePidFile(pp.pid, os.Getpid()); err != nil {
		return fmt.Errorf("vmm: pid file: %w", err)
	}
	// The guest's console into the journal, for as long as QEMU (this
	// process, once exec()ed) runs (see journal.go). Started while QEMU's
	// descriptors are still close-on-exec: it must not hold any of them.
	if exe, err := os.Executable(); err == nil {
		follow := exec.Command(exe, "follow-console", pp.consoleLog, strconv.Itoa(os.Getpid()))
		follow.Stdout, follow.Stderr = os.Stdout, os.Stderr
		if err := follow.Start(); err != nil {
			fmt.Fprintf(os.Stderr, "superjoltd exec-vm: the console will not be in the journal: %v\n", err)
		}
	}
	if lease != nil {
		// QEMU holds its own uid's lease for as long as it runs.
		files = append(files, lease.lock)
	}
	for _, f := range files {
		if _, err := unix.FcntlInt(f.Fd(), unix.F_SETFD, 0); err != nil {
			return fmt.Errorf("vmm: pass %s to QEMU: %w", f.Name(), err)
		}
	}
	fmt.Fprintf(os.Stderr, "superjoltd exec-vm: starting QEMU for %s (%s, %s) as uid %d\n", c.Name, r.Accel, r.Transport, uid)
	if lease != nil {
		groups := []int{}
		if g := ProbeHost().KVMGroup; r.Accel == AccelKVM && g >= 0 {
			groups = append(groups, g)
		}
		if err := syscall.Setgroups(groups); err != nil {
			return fmt.Errorf("vmm: setgroups: %w", err)
		}
		if err := syscall.Setgid(gid); err != nil {
			return fmt.Errorf("vmm: setgid %d: %w", gid, err)
		}
		if err := syscall.Setuid(uid); err != nil {
			return fmt.Errorf("vmm: setuid %d: %w", uid, err)
		}
	}
	args := append([]string{r.QEMU}, argv(c, fds, r.Accel, r.Transport, r.TSCKHz)...)
	err = syscall.Exec(r.QEMU, args, os.Environ())
	runtime.KeepAlive(files) // their descriptors must stay open up to the exec
	os.Remove(pp.pid)
	return fmt.Errorf("vmm: exec %s: %w", r.QEMU, err)
}

// qemuPid returns the pid in the machine's pid file when that process is the machine's QEMU (see
// isQEMUOf); 0 otherwise.
func qemuPid(pidFile, name string) int {
	b, err := os.ReadFile(pidFile)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 || !isQEMUOf(pid, name) {
		return 0
	}
	return pid
}

// isQEMUOf reports whether process pid is a QEMU of machine name: its command line has
// "-name superjolt-<name>,…". A pid file that outlived its process, whose pid the kernel has since
// given to something else, or a launcher that has not exec()ed QEMU yet, is not.
func isQEMUOf(pid int, name string) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := bytes.Split(bytes.TrimSuffix(b, []byte{0}), []byte{0})
	for i := 0; i+1 < len(args); i++ {
		if string(args[i]) == "-name" {
			v, _, _ := strings.Cut(string(args[i+1]), ",")
			return v == "superjolt-"+name
		}
	}
	return false
}

// processUID returns the real uid process pid runs as, or -1.
func processUID(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "Uid:" {
			if uid, err := strconv.Atoi(f[1]); err == nil {
				return uid
			}
		}
	}
	return -1
}

// pidWatch follows a process that is not the daemon's child (a unit's QEMU, or one an earlier
// daemon started) through a pidfd, which the kernel makes readable when the process exits.
type pidWatch struct {
	pidfd *os.File
}

// watchPid opens a pidfd of pid. It fails when the process is gone.
func watchPid(pid int) (*pidWatch, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("vmm: pidfd of %d: %w", pid, err)
	}
	// Non-blocking: the runtime's poller waits for it, not a thread per machine.
	return &pidWatch{pidfd: os.NewFile(uintptr(fd), "pidfd:"+strconv.Itoa(pid))}, nil
}

// wait returns when the process has exited, or with an error when the pidfd cannot be waited on.
func (w *pidWatch) wait() error {
	rc, err := w.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	return rc.Read(func(fd uintptr) bool {
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 0)
		return n > 0 || (err != nil && !errors.Is(err, unix.EINTR))
	})
}

// kill sends SIGKILL to the process; gone already is fine.
func (w *pidWatch) kill() error {
	rc, err := w.pidfd.SyscallConn()
	if err != nil {
		return err
	}
	var kerr error
	if err := rc.Control(func(fd uintptr) {
		kerr = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	}); err != nil {
		return err
	}
	if errors.Is(kerr, unix.ESRCH) {
		return nil
	}
	return kerr
}

func (w *pidWatch) close() { w.pidfd.Close() }

// waitForQEMU waits until the pid file names the machine's QEMU (the launcher has exec()ed it), for
// as long as ctx lets it and alive says the launch is still under way.
func waitForQEMU(ctx context.Context, pidFile, name string, alive func() error) (int, error) {
	for {
		if pid := qemuPid(pidFile, name); pid > 0 {
			return pid, nil
		}
		if err := alive(); err != nil {
			return 0, err
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("vmm: QEMU did not start: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// openQueue opens a queue of the TAP name in the network namespace at path netns ("": this
// thread's), from a thread of its own that enters the namespace and is discarded after.
func openQueue(netns, name string) (*os.File, error) {
	if netns == "" {
		return sjnet.OpenQueue(name)
	}
	type result struct {
		f   *os.File
		err error
	}
	done := make(chan result, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with the goroutine, namespace and all
		fd, err := unix.Open(netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			done <- result{err: fmt.Errorf("network namespace %s: %w", netns, err)}
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			done <- result{err: fmt.Errorf("enter network namespace %s: %w", netns, err)}
			return
		}
		f, err := sjnet.OpenQueue(name)
		done <- result{f, err}
	}()
	r := <-done
	return r.f, r.err
}
