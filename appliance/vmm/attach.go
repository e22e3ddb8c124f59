package vmm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/superjolt/superjolt/guest"
)

// ErrNoMachine: no QEMU of the machine runs (Attach found none to take over).
var ErrNoMachine = errors.New("vmm: no QEMU of this machine runs")

// Running reports whether a QEMU of machine name runs from runDir (its pid file names it), and its pid.
func Running(runDir, name string) (int, bool) {
	pid := qemuPid(filepath.Join(runDir, "qemu.pid"), name)
	return pid, pid > 0
}

// Attach takes over the QEMU of cfg that an earlier driver started and let go of (a daemon that
// was restarted, upgraded or killed): it finds the process by the pid file and launch record in
// cfg.RunDir, reconnects to QMP and to the guest agent, and returns the machine running, with the
// boot id its agent reports now. QEMU and its guest are not disturbed. ctx bounds the reconnection.
// It returns an error wrapping [ErrNoMachine] when no QEMU of the machine runs; any other error
// means one runs that could not be taken over (the caller decides whether to end it: see [Kill]).
func Attach(life, ctx context.Context, cfg Config) (*QEMU, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	m := &QEMU{cfg: cfg, life: life, log: cfg.Logger.With("vm", cfg.Name), rebooted: make(chan struct{}, 1)}
	rec, err := readRecord(cfg.RunDir)
	if errors.Is(err, fs.ErrNotExist) {
		if pid, ok := Running(cfg.RunDir, cfg.Name); ok {
			return nil, fmt.Errorf("vmm: %s: QEMU (pid %d) runs without a launch record (started by an older superjoltd)", cfg.Name, pid)
		}
		return nil, fmt.Errorf("%w: %s has no launch record in %s", ErrNoMachine, cfg.Name, cfg.RunDir)
	}
	if err != nil {
		return nil, err
	}
	if rec.Config.Name != cfg.Name {
		return nil, fmt.Errorf("vmm: the launch record in %s is of %s, not %s", cfg.RunDir, rec.Config.Name, cfg.Name)
	}
	pp := rec.paths()
	pid := qemuPid(pp.pid, cfg.Name)
	if pid == 0 {
		return nil, fmt.Errorf("%w: %s (no live QEMU in %s)", ErrNoMachine, cfg.Name, pp.pid)
	}
	p, err := m.follow(pid, pp)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.proc, m.accel, m.transport, m.status = p, rec.Accel, rec.Transport, StatusStarting
	m.mu.Unlock()
	fail := func(err error) (*QEMU, error) {
		m.Detach()
		return nil, fmt.Errorf("vmm: %s: reattach to QEMU (pid %d): %w", cfg.Name, pid, err)
	}
	start := time.Now()
	if _, err := m.connectQMP(ctx, p); err != nil {
		return fail(err)
	}
	if rec.Config.Paused {
		m.setStatus(StatusRunning)
		return m, nil
	}
	ping, err := m.connectAgent(ctx, p, rec.Transport)
	if err != nil {
		return fail(err)
	}
	m.log.Info("reattached", "pid", pid, "boot_id", ping.BootID, "guest_uptime", ping.Uptime,
		"took", time.Since(start).Round(time.Millisecond))
	return m, nil
}

// Detach lets go of the machine without touching QEMU: its QMP and agent connections are closed
// (QEMU accepts the next driver's), and its end is no longer noticed. A later [Attach], by this
// process or another, takes it over again. The machine is not usable after.
func (m *QEMU) Detach() {
	m.mu.Lock()
	p := m.proc
	if p != nil {
		p.detached = true
	}
	m.mu.Unlock()
	if p == nil {
		return
	}
	m.mu.Lock()
	agent, q := p.agent, p.qmp
	m.mu.Unlock()
	if agent != nil {
		agent.Close()
	}
	if q != nil {
		q.Close()
	}
}

// Kill ends the QEMU of machine name that runs from runDir, if one does, and waits (up to
// killWait) for it to go: for a machine that could not be taken over, or that the store does not
// know. A unit's QEMU is killed too; its unit then fails and is reset at its next start.
func Kill(runDir, name string) error {
	pid, ok := Running(runDir, name)
	if !ok {
		return nil
	}
	w, err := watchPid(pid)
	if err != nil {
		return nil // gone meanwhile
	}
	defer w.close()
	if !isQEMUOf(pid, name) {
		return nil
	}
	if err := w.kill(); err != nil {
		return fmt.Errorf("vmm: kill QEMU %d of %s: %w", pid, name, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.wait() }()
	select {
	case <-done:
	case <-time.After(killWait):
		return fmt.Errorf("vmm: QEMU %d of %s still there %v after SIGKILL", pid, name, killWait)
	}
	os.Remove(filepath.Join(runDir, "qemu.pid"))
	return nil
}

// ShutdownGuest asks the agent of the machine running from runDir to power its guest off, without
// a driver: for a unit's stop command when no superjoltd holds the machine (the agent's socket
// takes one client at a time, which is superjoltd's while it runs). It returns once QEMU has
// exited, or with an error when ctx ends first or the agent cannot be reached; no QEMU running is
// not an error.
func ShutdownGuest(ctx context.Context, runDir, name string) error {
	rec, err := readRecord(runDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	pp := rec.paths()
	pid := qemuPid(pp.pid, name)
	if pid == 0 {
		return nil
	}
	w, err := watchPid(pid)
	if err != nil {
		return nil // gone meanwhile
	}
	defer w.close()
	var conn net.Conn
	if rec.Transport == TransportVsock {
		conn, err = guest.DialVsock(ctx, rec.Config.GuestCID, guest.VsockPort)
	} else {
		conn, err = guest.DialSerial(ctx, pp.agentSock)
	}
	if err != nil {
		return fmt.Errorf("vmm: %s: reach the agent: %w", name, err)
	}
	c := guest.NewClient(conn)
	defer c.Close()
	if err := c.Shutdown(ctx); err != nil && !errors.Is(err, guest.ErrClosed) {
		return fmt.Errorf("vmm: %s: ask the agent to power off: %w", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- w.wait() }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("vmm: %s: the guest did not power off: %w", name, ctx.Err())
	}
}
