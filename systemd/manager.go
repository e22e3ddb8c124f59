package systemd

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// VMUnit is what a VM's transient service is made of.
//
// Every VM unit is in Slice, Type=exec, Restart=no (superjoltd restarts a
// crashed VM itself, with a back-off), KillMode=mixed (SIGTERM to the main
// process, then SIGKILL to every process left), SendSIGKILL=yes, and stays
// loaded when it fails (CollectMode=inactive, systemd's default) so that its
// Result can be read after a crash, until the next StartVM resets it. Its
// journal lines carry SUPERJOLT_VM=<id>; stdout and stderr go to the journal.
type VMUnit struct {
	VMID string
	// Description is what systemctl shows, e.g. "superjolt VM vm-abc123 (web,
	// account acme)".
	Description string
	// Command is ExecStart: an absolute path and its arguments. It is the
	// unit's main process (Type=exec); it may exec() QEMU, which then is.
	Command []string
	// StopCommand is ExecStop (optional): it runs before systemd signals the
	// main process, with $MAINPID set.
	StopCommand []string
	// Env is Environment=, as KEY=VALUE.
	Env []string
	// MemoryMax is the memory limit in bytes; 0 leaves it unset.
	MemoryMax uint64
	// CPUQuota is the CPU time the unit may use per second of wall time (two
	// vCPUs: 2s); 0 leaves it unset.
	CPUQuota time.Duration
	// TasksMax limits the unit's tasks (threads); 0 leaves it unset.
	TasksMax uint64
	// IOWeight is the unit's share of block I/O, 1..10000; 0 leaves it unset.
	IOWeight uint64
	// StopTimeout bounds a stop (ExecStop, then the main process after
	// SIGTERM) before SIGKILL; 0 means 90s.
	StopTimeout time.Duration
	// After orders the unit after these units: with After=DaemonUnit, a VM
	// unit stops before superjoltd at shutdown.
	After []string
}

// DefaultStopTimeout is a VM unit's stop timeout when VMUnit.StopTimeout is 0.
const DefaultStopTimeout = 90 * time.Second

// Limits are the resource limits of a running VM unit; a zero field is left
// as it is.
type Limits struct {
	MemoryMax uint64
	CPUQuota  time.Duration
	TasksMax  uint64
	IOWeight  uint64
}

// Manager starts, watches and stops VM units over systemd's private D-Bus
// socket. Its methods may be called from several goroutines.
type Manager struct {
	conn *sddbus.Conn
}

// NewManager connects to systemd (root only). ctx bounds the connection's
// whole life, not just the dial: give it the daemon's context, never a
// request's.
func NewManager(ctx context.Context) (*Manager, error) {
	if !Booted() {
		return nil, errors.New("systemd: PID 1 is not systemd (no /run/systemd/system)")
	}
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		if !isRoot() {
			return nil, fmt.Errorf("systemd: connect to systemd (only root may): %w", err)
		}
		return nil, fmt.Errorf("systemd: connect to systemd: %w", err)
	}
	return &Manager{conn: conn}, nil
}

// Close closes the connection.
func (m *Manager) Close() error {
	m.conn.Close()
	return nil
}

// properties returns u as the properties of a transient unit.
func (u VMUnit) properties() ([]sddbus.Property, error) {
	if err := CheckVMID(u.VMID); err != nil {
		return nil, err
	}
	if len(u.Command) == 0 || !strings.HasPrefix(u.Command[0], "/") {
		return nil, fmt.Errorf("systemd: %s: the command must start with an absolute path, got %q", u.VMID, u.Command)
	}
	if len(u.StopCommand) > 0 && !strings.HasPrefix(u.StopCommand[0], "/") {
		return nil, fmt.Errorf("systemd: %s: the stop command must start with an absolute path, got %q", u.VMID, u.StopCommand)
	}
	if u.IOWeight > 10000 {
		return nil, fmt.Errorf("systemd: %s: IOWeight %d is not in 1..10000", u.VMID, u.IOWeight)
	}
	stop := u.StopTimeout
	if stop <= 0 {
		stop = DefaultStopTimeout
	}
	desc := u.Description
	if desc == "" {
		desc = "superjolt VM " + u.VMID
	}
	props := []sddbus.Property{
		sddbus.PropDescription(desc),
		sddbus.PropSlice(Slice),
		sddbus.PropType("exec"),
		execProp("ExecStart", u.Command),
		prop("Restart", "no"),
		prop("KillMode", "mixed"),
		prop("SendSIGKILL", true),
		prop("TimeoutStopUSec", usec(stop)),
		prop("LogExtraFields", [][]byte{[]byte("SUPERJOLT_VM=" + u.VMID)}),
		// For VMStatus's MemoryCurrent and CPUUsage.
		prop("MemoryAccounting", true),
		prop("CPUAccounting", true),
	}
	if len(u.StopCommand) > 0 {
		props = append(props, execProp("ExecStop", u.StopCommand))
	}
	if len(u.Env) > 0 {
		props = append(props, prop("Environment", u.Env))
	}
	if len(u.After) > 0 {
		props = append(props, sddbus.PropAfter(u.After...))
	}
	return append(props, Limits{u.MemoryMax, u.CPUQuota, u.TasksMax, u.IOWeight}.properties()...), nil
}

// properties returns the non-zero limits as unit properties.
func (l Limits) properties() []sddbus.Property {
	var props []sddbus.Property
	if l.MemoryMax > 0 {
		props = append(props, prop("MemoryMax", l.MemoryMax))
	}
	if l.CPUQuota > 0 {
		props = append(props, prop("CPUQuotaPerSecUSec", usec(l.CPUQuota)))
	}
	if l.TasksMax > 0 {
		props = append(props, prop("TasksMax", l.TasksMax))
	}
	if l.IOWeight > 0 {
		props = append(props, prop("IOWeight", l.IOWeight))
	}
	return props
}

func prop(name string, value any) sddbus.Property {
	return sddbus.Property{Name: name, Value: dbus.MakeVariant(value)}
}

// execProp is an Exec*= property (a(sasb)) running command; a failing
// command fails the unit. The boolean of go-systemd's PropExecStart, which it
// calls UncleanIsFailure, is systemd's "ignore failure" (the "-" prefix of a
// unit file): true would make a QEMU killed by SIGKILL a success.
func execProp(name string, command []string) sddbus.Property {
	p := sddbus.PropExecStart(command, false)
	p.Name = name
	return p
}

func usec(d time.Duration) uint64 { return uint64(d / time.Microsecond) }

// StartVM starts u's transient unit and waits until systemd has started its
// main process. A failed unit of the same name from an earlier run is reset
// first. The unit lives on its own: ctx bounds only this call.
func (m *Manager) StartVM(ctx context.Context, u VMUnit) error {
	props, err := u.properties()
	if err != nil {
		return err
	}
	unit := UnitName(u.VMID)
	for {
		if err := m.conn.ResetFailedUnitContext(ctx, unit); err != nil && !isNoSuchUnit(err) {
			return fmt.Errorf("systemd: reset %s: %w", unit, err)
		}
		done := make(chan string, 1) // buffered: the connection must never block on it
		_, err := m.conn.StartTransientUnitContext(ctx, unit, "fail", props, done)
		if err == nil {
			return waitJob(ctx, done, "start", unit)
		}
		if !isUnitExists(err) {
			return fmt.Errorf("systemd: start %s: %w", unit, err)
		}
		// The unit of the VM's previous run may still be stopping: its
		// main process (QEMU) ended, and systemd runs its stop command and
		// collects it, which takes some milliseconds after a stop that the
		// daemon saw end. Wait for it to go; one that runs is a conflict.
		st, serr := m.status(ctx, u.VMID, unit)
		if serr == nil && st.Found && (st.ActiveState == "active" || st.ActiveState == "activating" || st.ActiveState == "reloading") {
			return fmt.Errorf("systemd: %s is already running (see systemctl status %s): %w", unit, unit, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("systemd: %s is still loaded (%s): gave up waiting for it to stop: %w", unit, st.ActiveState, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// StopVM stops VM vmID's unit and waits until it is stopped (ExecStop, then
// SIGTERM to the main process, SIGKILL after the stop timeout). A unit that is
// gone already is stopped.
func (m *Manager) StopVM(ctx context.Context, vmID string) error {
	unit, err := unitName(vmID)
	if err != nil {
		return err
	}
	done := make(chan string, 1)
	if _, err := m.conn.StopUnitContext(ctx, unit, "replace", done); err != nil {
		if isNoSuchUnit(err) {
			return nil
		}
		return fmt.Errorf("systemd: stop %s: %w", unit, err)
	}
	return waitJob(ctx, done, "stop", unit)
}

// waitJob waits for a job's result; anything but "done" is an error.
func waitJob(ctx context.Context, done <-chan string, what, unit string) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("systemd: %s %s: gave up waiting for the job (it goes on; see systemctl status %s): %w", what, unit, unit, ctx.Err())
	case res := <-done:
		if res == "done" {
			return nil
		}
		return fmt.Errorf("systemd: %s %s: job %s; see journalctl -u %s", what, unit, res, unit)
	}
}

// isNoSuchUnit reports whether err is systemd's "unit not loaded" (or not
// found).
func isNoSuchUnit(err error) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == "org.freedesktop.systemd1.NoSuchUnit"
	}
	return false
}

func isUnitExists(err error) bool {
	var de dbus.Error
	if errors.As(err, &de) {
		return de.Name == "org.freedesktop.systemd1.UnitExists"
	}
	return false
}

// VMStatus is a VM unit's state, as systemd reports it.
type VMStatus struct {
	VMID, Unit string
	// ActiveState and SubState: "active"/"running", "failed"/"failed",
	// "inactive"/"dead", "deactivating"/"stop-sigterm", ...
	ActiveState, SubState string
	// Result is why the unit last stopped or failed: "success", "exit-code",
	// "signal", "core-dump", "oom-kill", "timeout", ...
	Result  string
	MainPID int
	// ExecMainCode is how the main process ended: CLD_EXITED=1, CLD_KILLED=2,
	// CLD_DUMPED=3 (0 while it runs).
	ExecMainCode int
	// ExecMainStatus is its exit status, or the signal's number.
	ExecMainStatus int
	// MemoryCurrent is the memory in use in bytes, and CPUUsage the CPU time
	// used, from the unit's cgroup; each is 0 when systemd does not know it
	// (a host whose controllers are on cgroup v1), and UsageKnown is true
	// when it knows both.
	MemoryCurrent uint64
	CPUUsage      time.Duration
	UsageKnown    bool
	// Found is false when no such unit is loaded; the other fields are then
	// zero but VMID and Unit.
	Found bool
}

// CLD_* codes of VMStatus.ExecMainCode.
const (
	CLDExited = 1
	CLDKilled = 2
	CLDDumped = 3
)

// Running reports whether the unit is active or on its way there.
func (s VMStatus) Running() bool {
	return s.ActiveState == "active" || s.ActiveState == "activating" || s.ActiveState == "reloading"
}

// ExitReason says in words why the main process ended: "killed by signal
// KILL", "exited with status 1", "killed by the kernel's OOM killer
// (MemoryMax)", ...; "" while it has not ended.
func (s VMStatus) ExitReason() string {
	switch s.Result {
	case "oom-kill":
		return "killed by the kernel's OOM killer (MemoryMax)"
	case "timeout":
		return "did not stop within its stop timeout (or start within its start timeout) and was killed"
	case "watchdog":
		return "its watchdog timed out"
	case "start-limit-hit":
		return "started too often (start limit hit)"
	case "resources":
		return "systemd could not set it up (resources); see journalctl -u " + s.Unit
	}
	switch s.ExecMainCode {
	case CLDExited:
		if s.ExecMainStatus == 203 { // systemd's EXIT_EXEC
			return "could not be executed (status 203/EXEC; see journalctl -u " + s.Unit + ")"
		}
		return fmt.Sprintf("exited with status %d", s.ExecMainStatus)
	case CLDKilled:
		return "killed by signal " + signalName(s.ExecMainStatus)
	case CLDDumped:
		return "killed by signal " + signalName(s.ExecMainStatus) + " (core dumped)"
	}
	if s.Result != "" && s.Result != "success" {
		return "failed: " + s.Result
	}
	return ""
}

// signalName returns the name of signal n without SIG ("KILL"), or its number.
func signalName(n int) string {
	names := map[int]string{1: "HUP", 2: "INT", 3: "QUIT", 4: "ILL", 5: "TRAP", 6: "ABRT", 7: "BUS", 8: "FPE",
		9: "KILL", 10: "USR1", 11: "SEGV", 12: "USR2", 13: "PIPE", 14: "ALRM", 15: "TERM", 24: "XCPU", 25: "XFSZ", 31: "SYS"}
	if name, ok := names[n]; ok {
		return name
	}
	return fmt.Sprint(n)
}

// VMStatus returns VM vmID's unit's state; Found is false when it is not
// loaded.
func (m *Manager) VMStatus(ctx context.Context, vmID string) (VMStatus, error) {
	unit, err := unitName(vmID)
	if err != nil {
		return VMStatus{}, err
	}
	return m.status(ctx, vmID, unit)
}

func (m *Manager) status(ctx context.Context, vmID, unit string) (VMStatus, error) {
	st := VMStatus{VMID: vmID, Unit: unit}
	props, err := m.conn.GetAllPropertiesContext(ctx, unit)
	if err != nil {
		return st, fmt.Errorf("systemd: read %s: %w", unit, err)
	}
	str := func(k string) string { s, _ := props[k].(string); return s }
	if str("LoadState") == "not-found" || str("LoadState") == "" {
		return st, nil // systemd made up an unloaded unit to answer about
	}
	st.Found = true
	st.ActiveState, st.SubState, st.Result = str("ActiveState"), str("SubState"), str("Result")
	if v, ok := props["MainPID"].(uint32); ok {
		st.MainPID = int(v)
	}
	if v, ok := props["ExecMainCode"].(int32); ok {
		st.ExecMainCode = int(v)
	}
	if v, ok := props["ExecMainStatus"].(int32); ok {
		st.ExecMainStatus = int(v)
	}
	// systemd says "unknown" with 2^64-1 (no accounting, cgroup v1).
	mem, memOK := props["MemoryCurrent"].(uint64)
	memOK = memOK && mem != math.MaxUint64
	if memOK {
		st.MemoryCurrent = mem
	}
	cpu, cpuOK := props["CPUUsageNSec"].(uint64)
	cpuOK = cpuOK && cpu != math.MaxUint64
	if cpuOK {
		st.CPUUsage = time.Duration(cpu)
	}
	st.UsageKnown = memOK && cpuOK
	return st, nil
}

// ListVMs returns the state of every loaded VM unit (running, failed, or
// stopping).
func (m *Manager) ListVMs(ctx context.Context) ([]VMStatus, error) {
	units, err := m.conn.ListUnitsByPatternsContext(ctx, nil, []string{unitPrefix + "*" + unitSuffix})
	if err != nil {
		return nil, fmt.Errorf("systemd: list the VM units: %w", err)
	}
	var out []VMStatus
	for _, u := range units {
		id, ok := VMIDOfUnit(u.Name)
		if !ok {
			continue
		}
		st, err := m.status(ctx, id, u.Name)
		if err != nil {
			return nil, err
		}
		if st.Found {
			out = append(out, st)
		}
	}
	return out, nil
}

// SetVMLimits changes the limits of VM vmID's running unit at once, without
// a restart; zero fields are left alone. The change lasts until the unit
// stops (runtime): the next StartVM sets the limits it is given.
func (m *Manager) SetVMLimits(ctx context.Context, vmID string, l Limits) error {
	unit, err := unitName(vmID)
	if err != nil {
		return err
	}
	if l.IOWeight > 10000 {
		return fmt.Errorf("systemd: %s: IOWeight %d is not in 1..10000", vmID, l.IOWeight)
	}
	props := l.properties()
	if len(props) == 0 {
		return nil
	}
	if err := m.conn.SetUnitPropertiesContext(ctx, unit, true, props...); err != nil {
		return fmt.Errorf("systemd: set the limits of %s: %w", unit, err)
	}
	return nil
}

// SystemStopping reports whether the system is shutting down (systemd's
// SystemState is "stopping"): a VM unit stopped now is not the operator's
// wish to stop the VM for good. An error reads as not stopping.
func (m *Manager) SystemStopping(ctx context.Context) bool {
	p, err := m.conn.SystemStateContext(ctx)
	if err != nil {
		return false
	}
	s, _ := p.Value.Value().(string)
	return s == "stopping"
}
