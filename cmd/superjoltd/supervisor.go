package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/systemd"
)

// Who supervises the VMs' QEMU processes (--supervisor).
const (
	supervisorAuto    = "auto"    // systemd when PID 1 is systemd, self otherwise
	supervisorSystemd = "systemd" // one transient unit per VM, in superjolt.slice
	supervisorSelf    = "self"    // superjoltd starts QEMU itself; QEMU outlives it all the same
)

// hypervisor returns the appliance's QEMU driver for the supervisor the
// flags chose, and a function that releases what it holds.
func hypervisor(ctx context.Context, cfg config, log *slog.Logger) (*appliance.QEMU, func(), error) {
	q := &appliance.QEMU{Logger: log}
	mode := cfg.supervisor
	if mode == supervisorAuto {
		mode = supervisorSelf
		if systemd.Booted() {
			mode = supervisorSystemd
		}
	}
	if mode == supervisorSelf {
		log.Info("VM processes are started by superjoltd itself", "supervisor", mode)
		return q, func() {}, nil
	}
	exe, err := os.Executable()
	if err != nil {
		return nil, nil, fmt.Errorf("--supervisor=systemd: find superjoltd's own binary: %w", err)
	}
	m, err := systemd.NewManager(context.WithoutCancel(ctx))
	if err != nil {
		return nil, nil, fmt.Errorf("--supervisor=systemd: %w (or run with --supervisor=self)", err)
	}
	q.Config.Units = units{m}
	q.Config.Launcher = []string{exe}
	q.Config.StopCommand = []string{exe, "stop-vm", "--socket", cfg.socket, "--run-dir", cfg.runDir}
	log.Info("VM processes run as systemd units", "supervisor", mode, "slice", systemd.Slice)
	return q, func() { m.Close() }, nil
}

// units is vmm's view of package systemd's Manager.
type units struct{ m *systemd.Manager }

var _ vmm.Units = units{}

func (u units) StartVM(ctx context.Context, vu vmm.Unit) error {
	return u.m.StartVM(ctx, systemd.VMUnit{
		VMID: vu.VMID, Description: vu.Description, Command: vu.Command, StopCommand: vu.StopCommand,
		MemoryMax: vu.MemoryMax, CPUQuota: vu.CPUQuota, TasksMax: vu.TasksMax, IOWeight: vu.IOWeight,
		// Stopped before the daemon at a host shutdown, so that the daemon
		// is there to shut each guest down through its agent.
		After: []string{systemd.DaemonUnit},
	})
}

func (u units) StopVM(ctx context.Context, id string) error { return u.m.StopVM(ctx, id) }

func (u units) Journal(ctx context.Context, id string, lines int, follow bool, w io.Writer) error {
	return systemd.VMJournal(ctx, id, lines, follow, w)
}

func (u units) UnitState(ctx context.Context, id string) (vmm.UnitState, bool, error) {
	s, err := u.m.VMStatus(ctx, id)
	if err != nil || !s.Found {
		return vmm.UnitState{}, false, err
	}
	return vmm.UnitState{Active: s.Running(), MainPID: s.MainPID, Reason: s.ExitReason(),
		MemoryBytes: s.MemoryCurrent, CPUTime: s.CPUUsage, UsageKnown: s.UsageKnown}, true, nil
}
