package appliance

import (
	"context"
	"io"

	"github.com/superjolt/superjolt/appliance/model"
)

// LogSource is a Hypervisor that keeps its VMs' logs: QEMU's own output
// and the guest's console (*QEMU does: the unit's journal under systemd,
// the run directory otherwise).
type LogSource interface {
	// Logs writes the last lines of VM id's log to w and, with follow,
	// what comes after, until ctx ends.
	Logs(ctx context.Context, runDir, id string, lines int, follow bool, w io.Writer) error
}

var _ LogSource = (*QEMU)(nil)

// DefaultLogLines is how many lines of a VM's log VMLogs gives by default.
const DefaultLogLines = 100

// VMLogs writes the log of VM id to w (`superjolt vm logs`): what QEMU
// said and what its guest wrote on its console, the last lines of it and,
// with follow, what comes after until ctx ends.
func (a *Appliance) VMLogs(ctx context.Context, id string, lines int, follow bool, w io.Writer) error {
	if lines < 1 || lines > model.MaxListLimit {
		return invalidf("lines=%d: ask for 1 to %d lines", lines, model.MaxListLimit)
	}
	if _, err := a.readVM(ctx, id); err != nil {
		return err
	}
	src, ok := a.hv.(LogSource)
	if !ok {
		return unavailablef("this appliance's hypervisor keeps no logs of %s", id)
	}
	return src.Logs(ctx, a.runDir, id, lines, follow, w)
}
