package vmm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// Units runs machines as services of the host's service manager (systemd, through the adapter
// superjoltd builds on package systemd): one transient unit per machine, QEMU its main process,
// the machine's limits its properties, its output in the journal.
type Units interface {
	// StartVM starts the machine's unit and returns once its command runs.
	StartVM(ctx context.Context, u Unit) error
	// StopVM stops the machine's unit; a unit that is gone is not an error.
	StopVM(ctx context.Context, vmID string) error
	// UnitState says how the machine's unit is (found false: no such unit).
	UnitState(ctx context.Context, vmID string) (s UnitState, found bool, err error)
	// Journal writes the last lines of the unit's journal to w and, with
	// follow, what comes after until ctx ends.
	Journal(ctx context.Context, vmID string, lines int, follow bool, w io.Writer) error
}

// Unit is what the service manager is asked to run for one machine.
type Unit struct {
	VMID, Description string
	Command           []string // the launcher: Launcher, "exec-vm", the run directory
	StopCommand       []string
	// The machine's limits: MemoryMax is the guest's RAM and QEMU's own (see UnitLimits).
	MemoryMax uint64
	CPUQuota  time.Duration // per second of wall time: one second per vCPU
	TasksMax  uint64
	IOWeight  uint64
}

// UnitState is a machine unit's state as the service manager tells it.
type UnitState struct {
	Active  bool   // the unit runs
	MainPID int    // its main process (QEMU once the launcher has exec()ed it)
	Reason  string // after it ended: why, in words ("killed by signal KILL")
	// MemoryBytes and CPUTime come from the unit's cgroup when UsageKnown.
	MemoryBytes uint64
	CPUTime     time.Duration
	UsageKnown  bool
}

// What QEMU needs beyond the guest's RAM, and at most how many threads it runs. Measured on this
// project's machines from /proc/PID/smaps of running nano guests (TCG, 256 MiB, 1 vCPU, booted and
// used): QEMU's own resident memory (its binary, libraries, heap and device state) was 64 MiB, the
// guest's RAM mapping held 126-130 MiB of its 256, and the TCG translation cache 60 MiB of the
// tcgCacheMiB it is bounded to (-accel tcg,tb-size=). qemuOverheadMiB is twice what QEMU used. It
// ran 4 threads idle; its block I/O thread pool can add up to 64.
const (
	qemuOverheadMiB = 128
	tcgCacheMiB     = 128
	qemuTasksMax    = 96
)

// UnitLimits returns the limits of a machine of vcpus and memoryMiB under accel: MemoryMax is the
// guest's RAM plus QEMU's own needs (a limit of the guest's RAM alone gets QEMU killed by the OOM
// killer as soon as the guest touches all of it), one CPU-second per second per vCPU, and
// TasksMax for QEMU's threads.
func UnitLimits(vcpus, memoryMiB int, accel Accel) (memoryMax uint64, cpuQuota time.Duration, tasksMax uint64) {
	mib := uint64(memoryMiB) + qemuOverheadMiB
	if accel != AccelKVM {
		mib += tcgCacheMiB
	}
	return mib << 20, time.Duration(vcpus) * time.Second, qemuTasksMax + uint64(vcpus)
}

// unitProcess starts the machine's unit and waits until its QEMU runs: the launcher has written the
// pid file and exec()ed QEMU. A unit that fails before is reported with the manager's reason.
func (m *QEMU) unitProcess(ctx context.Context, rec record) (int, error) {
	c := m.cfg
	if len(c.Launcher) == 0 {
		return 0, errors.New("vmm: Config.Units needs Config.Launcher (superjoltd)")
	}
	mem, cpu, tasks := UnitLimits(c.VCPUs, c.MemoryMiB, rec.Accel)
	var stop []string
	if len(c.StopCommand) > 0 {
		stop = append(append([]string{}, c.StopCommand...), c.Name)
	}
	u := Unit{VMID: c.Name, Description: c.Description, StopCommand: stop,
		Command:   append(append([]string{}, c.Launcher...), "exec-vm", c.RunDir),
		MemoryMax: mem, CPUQuota: cpu, TasksMax: tasks, IOWeight: 100}
	if u.Description == "" {
		u.Description = "superjolt VM " + c.Name
	}
	if err := c.Units.StartVM(ctx, u); err != nil {
		return 0, fmt.Errorf("vmm: start the unit of %s: %w", c.Name, err)
	}
	alive := func() error {
		s, found, err := c.Units.UnitState(ctx, c.Name)
		switch {
		case err != nil:
			return fmt.Errorf("vmm: the unit of %s: %w", c.Name, err)
		case !found || !s.Active:
			why := s.Reason
			if why == "" {
				why = "it is not active"
			}
			return fmt.Errorf("vmm: the unit of %s ended before QEMU ran (%s); see `superjolt vm logs %s`", c.Name, why, c.Name)
		}
		return nil
	}
	return waitForQEMU(ctx, rec.paths().pid, c.Name, alive)
}
