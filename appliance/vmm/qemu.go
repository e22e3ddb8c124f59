package vmm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/superjolt/superjolt/appliance/vmm/qmp"
	"github.com/superjolt/superjolt/guest"
)

// Timeouts of the shutdown ladder and of the agent's readiness pings.
const (
	agentShutdownWait = 20 * time.Second // agent asked to power off -> QEMU gone
	powerdownWait     = 5 * time.Second  // ACPI power button -> QEMU gone
	killWait          = 10 * time.Second // SIGKILL -> process reaped
	readyPingTimeout  = 2 * time.Second  // one readiness ping
	readyPingInterval = 100 * time.Millisecond
)

// QEMU is a [Machine] run by qemu-system-x86_64 on the microvm machine type.
type QEMU struct {
	cfg  Config
	life context.Context
	log  *slog.Logger

	startMu sync.Mutex // serialises Start and Shutdown; Kill does not take it, so it can end a boot under way

	mu        sync.Mutex
	status    Status
	proc      *process
	accel     Accel
	transport Transport
	bootID    string

	rebooted chan struct{} // one pending notice of a guest reboot; see Rebooted
}

// process is one run of the QEMU binary: a child of the daemon (started by it without a service
// manager), or a process it follows through a pidfd (a unit's main process, or a QEMU that an
// earlier daemon started and this one reattached to).
type process struct {
	pid    int
	kill   func() error // SIGKILL; gone already is not an error
	paths  paths
	qmp    *qmp.Conn
	agent  *guest.Client
	exited chan struct{}
	err    error // how it exited; read after exited is closed
	uid    int   // the uid QEMU runs as; -1: the daemon's own

	// eventsDone is closed when watchEvents has read QEMU's last event; the reaper waits for it, so
	// that exit is set before exited is closed.
	eventsDone chan struct{}
	// Under QEMU.mu:
	exit      Exit // how it ended, as the events said
	resetting bool // a reboot is being followed (afterReset)
	detached  bool // the driver let go of it (Detach): its end is no longer this driver's business
}

func (p *process) hasExited() bool {
	select {
	case <-p.exited:
		return true
	default:
		return false
	}
}

// New returns a machine for cfg. Its QEMU process, once started, lives until it exits, is shut down or
// killed, whatever happens to the daemon; life (the daemon's long-lived context, never a request's)
// bounds the driver's own work for it, such as following a reboot of the guest.
func New(life context.Context, cfg Config) (*QEMU, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &QEMU{cfg: cfg, life: life, log: cfg.Logger.With("vm", cfg.Name), rebooted: make(chan struct{}, 1)}, nil
}

// Config returns the machine's configuration with defaults filled in.
func (m *QEMU) Config() Config { return m.cfg }

// Status says where the machine is in its life.
func (m *QEMU) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.status
}

// Rebooted receives a value after the guest restarted (a reset of the machine, whoever asked for it;
// QEMU itself goes on) and its agent then reported a new boot id, which [QEMU.BootID] returns from
// then on, as [QEMU.Agent] returns the client of the new boot. Several reboots before the value is
// read leave one value.
func (m *QEMU) Rebooted() <-chan struct{} { return m.rebooted }

// Exit says how the last QEMU process ended; it is meaningful once [QEMU.Wait] has returned.
func (m *QEMU) Exit() Exit {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return ExitUnasked
	}
	return m.proc.exit
}

// Accel and Transport return what the last boot used.
func (m *QEMU) Accel() Accel {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.accel
}

// Transport returns how the host reaches the agent of the last boot.
func (m *QEMU) Transport() Transport {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transport
}

// BootID returns the boot id the agent reported when the machine came up ("" before that).
func (m *QEMU) BootID() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.bootID
}

// Agent returns the client connected to the guest agent, or nil when the machine is not running or was
// started paused. The machine owns it: do not Close it. Over virtio-serial only one host connection can
// exist, so every caller shares this one (the client multiplexes requests).
func (m *QEMU) Agent() *guest.Client {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil
	}
	return m.proc.agent
}

// QMP returns the QMP connection of the running QEMU, or nil.
func (m *QEMU) QMP() *qmp.Conn {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return nil
	}
	return m.proc.qmp
}

// PID returns the QEMU process id, or 0.
func (m *QEMU) PID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil {
		return 0
	}
	return m.proc.pid
}

// UID returns the uid the running QEMU runs as: one leased for it alone when the daemon is root (see
// [UIDBase]); -1 when it runs as the daemon's own user or is not running.
func (m *QEMU) UID() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.hasExited() {
		return -1
	}
	return m.proc.uid
}

// AgentSocket is the path of the virtio-serial agent socket of the running machine ("" when it uses
// vsock or is not running). Only one client can be connected to it at a time: the machine's own
// [QEMU.Agent] is, once booted.
func (m *QEMU) AgentSocket() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.transport != TransportSerial {
		return ""
	}
	return m.proc.paths.agentSock
}

// ConsoleSocket is the path of the UNIX socket of the running machine's serial console ("" when it
// is not running): a connection reads what the guest writes to its first UART and writes what it
// types. QEMU serves one connection at a time; the console log records the output all the same.
func (m *QEMU) ConsoleSocket() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.proc == nil || m.proc.hasExited() {
		return ""
	}
	return m.proc.paths.consoleSock
}

// ConsoleLog is the path of the guest's serial console log.
func (m *QEMU) ConsoleLog() string { return filepath.Join(m.cfg.RunDir, "console.log") }

// Start boots the machine. It returns once the guest agent has reported a boot id, or (Config.Paused)
// once QMP answers. A boot that misses Config.BootTimeout is killed and tried again, up to
// Config.BootAttempts times; a KVM boot that fails is retried under TCG. ctx bounds the whole boot;
// the process itself lives under the context given to [New].
func (m *QEMU) Start(ctx context.Context) error {
	m.startMu.Lock()
	defer m.startMu.Unlock()

	m.mu.Lock()
	if m.proc != nil && !m.proc.hasExited() {
		m.mu.Unlock()
		return ErrAlreadyStarted
	}
	m.status = StatusStarting
	m.bootID = ""
	m.mu.Unlock()

	bin := m.cfg.QEMU
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			m.setStatus(StatusStopped)
			return fmt.Errorf("vmm: %w (install qemu-system-x86)", err)
		}
	}

	h := ProbeHost()
	accel := m.cfg.Accel
	if accel == AccelAuto {
		accel = AccelTCG
		if h.KVM {
			accel = AccelKVM
		}
	}
	transport := m.cfg.Transport
	if transport == TransportAuto {
		transport = TransportSerial
		if h.VhostVsock {
			transport = TransportVsock
		}
	}
	if accel == AccelTCG && h.TSCKHz == 0 {
		m.log.Warn("host TSC frequency unknown; the guest calibrates its own (may hang under load)",
			"why", h.TSCSource)
	}

	var errs []error
	for attempt := 1; attempt <= m.cfg.BootAttempts; attempt++ {
		err := m.boot(ctx, bin, accel, transport, h.TSCKHz)
		if err == nil {
			if accel == AccelTCG && len(errs) > 0 && m.cfg.Accel == AccelAuto && h.KVM {
				m.log.Warn("KVM cannot boot guests here; using TCG from now on", "kvm_err", errs[0])
				markKVMBroken(errs[0])
			}
			return nil
		}
		errs = append(errs, fmt.Errorf("attempt %d (%s): %w", attempt, accel, err))
		if ctx.Err() != nil || m.life.Err() != nil {
			break
		}
		m.log.Warn("boot failed; killing and retrying", "attempt", attempt, "accel", accel, "err", err)
		if accel == AccelKVM && m.cfg.Accel == AccelAuto {
			accel = AccelTCG // a nested or half-working KVM: fall back to emulation
		}
	}
	m.setStatus(StatusStopped)
	err := errors.Join(errs...)
	if ctx.Err() == nil && m.life.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("%w: %w", ErrBootTimeout, err)
	}
	return fmt.Errorf("vmm: %s: start: %w", m.cfg.Name, err)
}

func (m *QEMU) setStatus(s Status) {
	m.mu.Lock()
	m.status = s
	m.mu.Unlock()
}

// boot runs one boot attempt. On failure the process is gone when it returns.
func (m *QEMU) boot(ctx context.Context, bin string, accel Accel, transport Transport, tscKHz uint64) error {
	started := time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()

	p, err := m.launch(ctx, bin, accel, transport, tscKHz)
	if err != nil {
		return err
	}
	// From here Kill, PID and Wait act on this process, also while the boot is under way.
	m.mu.Lock()
	m.proc, m.accel, m.transport = p, accel, transport
	m.status = StatusStarting // a failed earlier attempt's reaper may have said stopped
	m.mu.Unlock()
	fail := func(err error) error {
		m.killProcess(p)
		if tail := tailFile(p.paths.qemuLog, 2048); tail != "" {
			err = fmt.Errorf("%w; qemu said: %s", err, tail)
		}
		if tail := tailFile(p.paths.consoleLog, 2048); tail != "" {
			m.log.Info("guest console at failure", "console", tail)
		}
		return err
	}

	q, err := m.connectQMP(ctx, p)
	if err != nil {
		return fail(err)
	}
	// With -no-reboot a guest reboot would end QEMU; reset the machine instead. -no-reboot still covers
	// a panic before this point.
	if _, err := q.Execute(ctx, "set-action", map[string]string{"reboot": "reset"}); err != nil {
		return fail(err)
	}

	if m.cfg.Paused {
		m.setStatus(StatusRunning)
		m.log.Info("started paused", "accel", accel, "transport", transport, "pid", p.pid)
		return nil
	}

	ping, err := m.connectAgent(ctx, p, transport)
	if err != nil {
		return fail(err)
	}
	m.log.Info("booted", "accel", accel, "transport", transport, "pid", p.pid,
		"boot_id", ping.BootID, "guest_uptime", ping.Uptime, "took", time.Since(started).Round(time.Millisecond))
	return nil
}

// connectQMP connects to the QMP of p, QEMU just started or running already, and follows its
// events.
func (m *QEMU) connectQMP(ctx context.Context, p *process) (*qmp.Conn, error) {
	q, err := dialQMP(ctx, p)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	p.qmp = q
	go m.watchEvents(p) // started with p.qmp set: the reaper waits for it
	if p.hasExited() {
		q.Close() // the reaper has already run
	}
	m.mu.Unlock()
	return q, nil
}

// connectAgent waits until the agent of p's guest answers with a boot id, and makes it the
// machine's agent, its boot id the machine's, and the machine running.
func (m *QEMU) connectAgent(ctx context.Context, p *process, transport Transport) (guest.PingResult, error) {
	c, ping, err := m.waitAgent(ctx, p, transport, nil, "")
	if err != nil {
		return ping, err
	}
	m.mu.Lock()
	p.agent = c
	if p.hasExited() {
		c.Close()
	}
	m.bootID = ping.BootID
	if !p.hasExited() {
		m.status = StatusRunning
	}
	m.mu.Unlock()
	return ping, nil
}

// launch starts the QEMU process, and a goroutine that notices its end (see launch.go for how
// it is started, by the daemon or as a unit, and why it outlives the daemon).
func (m *QEMU) launch(ctx context.Context, bin string, accel Accel, transport Transport, tscKHz uint64) (p *process, err error) {
	pp, err := makePaths(m.cfg.RunDir, m.cfg.Name)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			m.removeSockDir(pp)
		}
	}()
	os.Remove(pp.pid)
	rec := record{Config: m.cfg, QEMU: bin, Accel: accel, Transport: transport, TSCKHz: tscKHz,
		SockDir: pp.sockDir, OwnSockDir: pp.ownSockDir}
	if err := writeRecord(rec); err != nil {
		return nil, err
	}
	if m.cfg.Units != nil {
		pid, err := m.unitProcess(ctx, rec)
		if err != nil {
			return nil, err
		}
		return m.follow(pid, pp)
	}
	return m.startChild(bin, pp, accel, transport, tscKHz)
}

// startChild starts QEMU as the daemon's child. With a root daemon QEMU runs as a uid leased for it
// alone, and gets its files and sockets as descriptors (see confine.go).
func (m *QEMU) startChild(bin string, pp paths, accel Accel, transport Transport, tscKHz uint64) (p *process, err error) {
	var (
		lease    *userLease
		uid, gid = -1, -1
		h        handover
	)
	defer func() {
		h.close()       // QEMU has its own copies once started
		lease.release() // QEMU holds the lease's lock itself (the last of its descriptors)
	}()
	if confined() {
		if lease, err = leaseUser(LeaseDir, m.cfg.Name); err != nil {
			return nil, err
		}
		uid, gid = int(lease.uid), int(lease.uid)
	}
	// qemu.log is the daemon's (QEMU's stdout and stderr); removed first so that nothing planted at
	// its path is followed.
	os.Remove(pp.qemuLog)
	logf, err := os.OpenFile(pp.qemuLog, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("vmm: %w", err)
	}
	defer logf.Close()

	fds, files, err := openFiles(m.cfg, pp, transport, uid, gid, h.add)
	if err != nil {
		return nil, err
	}
	_ = files // h holds them too
	if lease != nil {
		// A descriptor of its lease's lock, which QEMU does not know of, keeps the lease for as
		// long as QEMU runs, whoever its daemon is by then.
		lock, err := dupFile(lease.lock)
		if err != nil {
			return nil, err
		}
		h.add(lock)
	}

	args := argv(m.cfg, fds, accel, transport, tscKHz)
	cmd := exec.Command(bin, args...)
	cmd.Stdin = nil
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = h.files
	cmd.WaitDelay = killWait
	// QEMU outlives the daemon: no parent-death signal, and a session of its own, which keeps a
	// terminal's Ctrl-C and hangup (meant for the daemon) away from it. It stops only through us.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if lease != nil {
		cred := &syscall.Credential{Uid: lease.uid, Gid: lease.uid, Groups: []uint32{}}
		if g := ProbeHost().KVMGroup; accel == AccelKVM && g >= 0 {
			cred.Groups = append(cred.Groups, uint32(g))
		}
		cmd.SysProcAttr.Credential = cred
	}
	m.log.Debug("starting qemu", "argv", append([]string{bin}, args...), "uid", uid)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("vmm: start qemu: %w", err)
	}
	p = &process{pid: cmd.Process.Pid, paths: pp, exited: make(chan struct{}), uid: uid, eventsDone: make(chan struct{}),
		kill: func() error {
			if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
				return err
			}
			return nil
		}}
	go func() { m.ended(p, cmd.Wait()) }()
	// The pid file is written by the daemon, in its own directory, so that QEMU cannot point it at
	// another process.
	if err := writePidFile(pp.pid, cmd.Process.Pid); err != nil {
		m.log.Warn("cannot write the pid file", "err", err)
	}
	return p, nil
}

// follow takes on QEMU process pid, which is not the daemon's child, and notices its end through a
// pidfd.
func (m *QEMU) follow(pid int, pp paths) (*process, error) {
	w, err := watchPid(pid)
	if err != nil {
		return nil, err
	}
	if !isQEMUOf(pid, m.cfg.Name) { // the pid was reused between the check and the pidfd
		w.close()
		return nil, fmt.Errorf("%w: process %d is no longer the QEMU of %s", ErrExited, pid, m.cfg.Name)
	}
	p := &process{pid: pid, paths: pp, exited: make(chan struct{}), uid: processUID(pid), eventsDone: make(chan struct{}), kill: w.kill}
	go func() {
		err := w.wait()
		w.close()
		if err == nil {
			err = m.exitReason(pid)
		}
		m.ended(p, err)
	}()
	return p, nil
}

// exitReason says how a process that is not the daemon's child ended: its unit's result when it
// ran as one; otherwise nobody but its real parent knows.
func (m *QEMU) exitReason(pid int) error {
	if m.cfg.Units != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		// The manager may take a moment to notice the exit itself.
		for range 20 {
			s, found, err := m.cfg.Units.UnitState(ctx, m.cfg.Name)
			if err != nil || !found {
				break
			}
			if !s.Active || s.MainPID != pid {
				if s.Reason != "" {
					return fmt.Errorf("qemu (pid %d) %s", pid, s.Reason)
				}
				break
			}
			time.Sleep(50 * time.Millisecond) // waiting for the service manager, not for the clock
		}
	}
	return fmt.Errorf("qemu (pid %d) ended; it was not this daemon's child, so its exit status is not known", pid)
}

// ended records the end of p: QEMU's last events (a guest's SHUTDOWN) say how it ended, so they are
// read first; then its sockets and pid file go, unless the driver let go of it.
func (m *QEMU) ended(p *process, err error) {
	m.mu.Lock()
	watched, detached := p.qmp != nil, p.detached
	m.mu.Unlock()
	if watched {
		select {
		case <-p.eventsDone:
		case <-time.After(time.Second):
		}
	}
	// Sockets go before exited is closed, so that a new boot in the same run directory never has
	// its fresh sockets removed by this one. A detached process's files may be another driver's now.
	if !detached {
		m.removeSockDir(p.paths)
		os.Remove(p.paths.pid)
	}
	m.mu.Lock()
	p.err = err
	close(p.exited)
	if m.proc == p {
		m.status = StatusStopped
	}
	agent, q := p.agent, p.qmp
	m.mu.Unlock()
	if agent != nil {
		agent.Close()
	}
	if q != nil {
		q.Close()
	}
	m.log.Info("qemu exited", "pid", p.pid, "err", err)
}

func writePidFile(path string, pid int) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o644)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(f, "%d\n", pid)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// dialQMP connects to QMP as soon as QEMU has made its socket.
func dialQMP(ctx context.Context, p *process) (*qmp.Conn, error) {
	for {
		c, err := qmp.Dial(ctx, p.paths.qmpSock)
		if err == nil {
			return c, nil
		}
		select {
		case <-p.exited:
			return nil, fmt.Errorf("%w before QMP answered: %v", ErrExited, p.err)
		case <-ctx.Done():
			return nil, fmt.Errorf("vmm: connect to QMP: %w (last: %v)", ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// watchEvents follows QMP events until the connection ends: a SHUTDOWN the guest asked for records
// how QEMU will end; a RESET (the guest rebooted, or someone reset the machine) starts following the
// new boot (afterReset).
func (m *QEMU) watchEvents(p *process) {
	defer close(p.eventsDone)
	for ev := range p.qmp.Events() {
		switch ev.Name {
		case "RESET", "SHUTDOWN", "POWERDOWN", "GUEST_PANICKED":
			m.log.Info("qemu event", "event", ev.Name, "data", string(ev.Data))
		default:
			m.log.Debug("qemu event", "event", ev.Name, "data", string(ev.Data))
		}
		var data struct {
			Guest  bool   `json:"guest"`
			Reason string `json:"reason"`
		}
		_ = json.Unmarshal(ev.Data, &data)
		switch {
		case ev.Name == "SHUTDOWN" && data.Reason == "guest-shutdown":
			m.mu.Lock()
			if p.exit == ExitUnasked {
				p.exit = ExitGuestPowerOff
			}
			m.mu.Unlock()
		case ev.Name == "RESET":
			m.mu.Lock()
			follow := m.proc == p && p.agent != nil && !p.resetting
			if follow {
				p.resetting = true
			}
			m.mu.Unlock()
			if follow {
				go m.afterReset(p)
			}
		}
	}
}

// afterReset follows a reboot of the guest: it waits for the agent of the new boot (over
// virtio-serial the host's connection survives the reset; over vsock it is dialled again), records
// its boot id and says so on Rebooted. An agent that does not answer within the boot deadline means
// a guest stuck in its boot: the machine is killed, and Exit says why.
func (m *QEMU) afterReset(p *process) {
	m.mu.Lock()
	old, c := m.bootID, p.agent
	if m.status == StatusRunning {
		m.status = StatusStarting
	}
	m.mu.Unlock()
	defer func() {
		m.mu.Lock()
		p.resetting = false
		m.mu.Unlock()
	}()
	start := time.Now()
	ctx, cancel := context.WithTimeout(m.life, m.cfg.BootTimeout)
	defer cancel()
	nc, ping, err := m.waitAgent(ctx, p, m.Transport(), c, old)
	if err != nil {
		if p.hasExited() || m.life.Err() != nil {
			return
		}
		m.log.Warn("the guest rebooted but its agent did not come back; killing the machine", "err", err)
		m.mu.Lock()
		p.exit = ExitRebootFailed
		m.mu.Unlock()
		_ = m.killProcess(p)
		return
	}
	m.mu.Lock()
	if m.proc != p || p.hasExited() {
		m.mu.Unlock()
		if nc != c {
			nc.Close()
		}
		return
	}
	p.agent = nc
	m.bootID = ping.BootID
	if m.status == StatusStarting {
		m.status = StatusRunning
	}
	m.mu.Unlock()
	if nc != c && c != nil {
		c.Close()
	}
	m.log.Info("guest rebooted", "old_boot_id", old, "boot_id", ping.BootID, "guest_uptime", ping.Uptime,
		"took", time.Since(start).Round(time.Millisecond))
	select {
	case m.rebooted <- struct{}{}:
	default: // a notice is already pending
	}
}

// waitAgent connects to the agent and pings it until it reports a boot id other than old. It starts
// with the client c when there is one (a reboot's; it is closed when it breaks).
func (m *QEMU) waitAgent(ctx context.Context, p *process, transport Transport, c *guest.Client, old string) (*guest.Client, guest.PingResult, error) {
	var last error
	for {
		if c == nil {
			var conn, err = m.dialAgent(ctx, p, transport)
			if err == nil {
				c = guest.NewClient(conn, guest.WithLogger(m.log))
			} else {
				last = err
			}
		}
		if c != nil {
			pctx, cancel := context.WithTimeout(ctx, readyPingTimeout)
			res, err := c.Ping(pctx)
			cancel()
			if err == nil && res.BootID != "" && res.BootID != old {
				return c, res, nil
			}
			if err == nil && res.BootID == "" {
				err = errors.New("agent answered a ping without boot id")
			} else if err == nil {
				err = fmt.Errorf("agent still reports the old boot id %s", old)
			}
			last = err
			// Over virtio-serial, pings written before the guest opened its port are answered late and
			// dropped by the client (unknown ids), so the connection is kept. A broken one is redialled.
			select {
			case <-c.Done():
				c = nil
			default:
			}
		}
		select {
		case <-p.exited:
			if c != nil {
				c.Close()
			}
			return nil, guest.PingResult{}, fmt.Errorf("%w while waiting for the agent: %v", ErrExited, p.err)
		case <-ctx.Done():
			if c != nil {
				c.Close()
			}
			return nil, guest.PingResult{}, fmt.Errorf("wait for agent: %w (last: %v)", ctx.Err(), last)
		case <-time.After(readyPingInterval):
		}
	}
}

func (m *QEMU) dialAgent(ctx context.Context, p *process, transport Transport) (net.Conn, error) {
	dctx, cancel := context.WithTimeout(ctx, readyPingTimeout)
	defer cancel()
	if transport == TransportVsock {
		return guest.DialVsock(dctx, m.cfg.GuestCID, guest.VsockPort)
	}
	return guest.DialSerial(dctx, p.paths.agentSock)
}

// Wait blocks until the QEMU process exits and returns how it exited (nil for exit status 0), or
// until ctx ends. It returns [ErrNotRunning] when no process was started.
func (m *QEMU) Wait(ctx context.Context) error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return ErrNotRunning
	}
	select {
	case <-p.exited:
		return p.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown powers the guest off and returns once QEMU has exited: it asks the agent (which syncs and
// powers off), then presses the ACPI power button through QMP, then kills QEMU. ctx bounds the polite
// steps; the kill always happens. It returns nil when the machine is down, however it got there.
func (m *QEMU) Shutdown(ctx context.Context) error {
	m.startMu.Lock()
	defer m.startMu.Unlock()
	m.mu.Lock()
	p := m.proc
	if p == nil || p.hasExited() {
		m.mu.Unlock()
		return nil
	}
	m.status = StatusStopping
	agent, q := p.agent, p.qmp // a reboot under way may change the agent: read them under mu
	m.mu.Unlock()
	start := time.Now()

	waitExit := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-p.exited:
			return true
		case <-t.C:
		case <-ctx.Done():
		}
		return false
	}

	if agent != nil && ctx.Err() == nil {
		actx, cancel := context.WithTimeout(ctx, readyPingTimeout)
		err := agent.Shutdown(actx)
		cancel()
		// The agent may power off before its answer leaves: a closed connection is not a failure.
		if err != nil && !errors.Is(err, guest.ErrClosed) {
			m.log.Warn("agent shutdown failed; trying ACPI", "err", err)
		} else if waitExit(agentShutdownWait) {
			m.log.Info("shut down by agent", "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
	}
	if q != nil && ctx.Err() == nil {
		qctx, cancel := context.WithTimeout(ctx, readyPingTimeout)
		_, err := q.Execute(qctx, "system_powerdown", nil)
		cancel()
		if err == nil && waitExit(powerdownWait) {
			m.log.Info("shut down by ACPI power button", "took", time.Since(start).Round(time.Millisecond))
			return nil
		}
		if p.hasExited() {
			return nil
		}
		m.log.Warn("guest ignored the ACPI power button; killing", "err", err)
	}
	if err := m.killProcess(p); err != nil {
		return err
	}
	m.log.Info("killed", "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Kill ends QEMU with SIGKILL and waits until it is reaped. Killing a machine that is not running is
// not an error.
func (m *QEMU) Kill() error {
	m.mu.Lock()
	p := m.proc
	m.mu.Unlock()
	if p == nil {
		return nil
	}
	return m.killProcess(p)
}

func (m *QEMU) killProcess(p *process) error {
	if p.hasExited() {
		return nil
	}
	if err := p.kill(); err != nil {
		return fmt.Errorf("vmm: kill qemu: %w", err)
	}
	select {
	case <-p.exited:
		return nil
	case <-time.After(killWait):
		return fmt.Errorf("vmm: qemu pid %d still there %v after SIGKILL", p.pid, killWait)
	}
}

func (m *QEMU) removeSockDir(pp paths) {
	os.Remove(pp.qmpSock)
	os.Remove(pp.agentSock)
	os.Remove(pp.consoleSock)
	if pp.ownSockDir {
		os.Remove(pp.sockDir)
	}
}

// tailFile returns up to the last n bytes of a file, trimmed, for error messages.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, 0)
	}
	b := make([]byte, n)
	k, _ := f.Read(b)
	return string(bytes.TrimSpace(b[:k]))
}
