package appliance

import (
	"context"
	"errors"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/vmm"
)

// process is the part of a Machine that is a host process, which the QEMU
// machines are (a stub machine is not: it has no usage).
type process interface {
	PID() int
}

// cgroupUsage is the part of a Machine that runs in a cgroup of its own (a
// systemd unit) whose figures may be known.
type cgroupUsage interface {
	CgroupUsage(ctx context.Context) (memory int64, cpu time.Duration, ok bool)
}

var _ cgroupUsage = qemuMachine{}

var _ process = qemuMachine{}

// minCPUWindow is the shortest time between two samples of a process that
// gives a new CPU figure: /proc counts CPU time in 10 ms ticks, so a
// shorter window says more about the ticks than about the guest. A sample
// asked for sooner answers the last figure.
const minCPUWindow = 500 * time.Millisecond

// cpuSample is the last sample of one process, and the figure it gave.
type cpuSample struct {
	usage   vmm.Usage
	percent float64
}

// VMUsage returns the memory and CPU use of every VM whose process runs,
// ordered by VM id. CPU is measured since the previous call's sample of
// the same process (see model.VMUsage), on the host's own clock of
// /proc/uptime, not the appliance's, which may be a manual one: it is the
// host's CPU that is measured.
func (a *Appliance) VMUsage(ctx context.Context) ([]model.VMUsage, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	type running struct {
		vm  string
		pid int
		cg  cgroupUsage
	}
	var procs []running
	a.mu.Lock()
	for id, mc := range a.machines {
		if p, ok := mc.m.(process); ok {
			if pid := p.PID(); pid > 0 {
				cg, _ := mc.m.(cgroupUsage)
				procs = append(procs, running{id, pid, cg})
			}
		}
	}
	a.mu.Unlock()
	slices.SortFunc(procs, func(x, y running) int { return strings.Compare(x.vm, y.vm) })

	a.usageMu.Lock()
	defer a.usageMu.Unlock()
	out := []model.VMUsage{}
	seen := make(map[int]bool, len(procs))
	for _, p := range procs {
		u, err := vmm.ProcessUsage(p.pid)
		if errors.Is(err, fs.ErrNotExist) {
			continue // it exited since the list was taken
		}
		if err != nil {
			a.log.Warn("cannot read a VM process's usage", "vm", p.vm, "pid", p.pid, "err", err)
			continue
		}
		seen[p.pid] = true
		prev, ok := a.samples[p.pid]
		pct := prev.percent
		if !ok || prev.usage.Started != u.Started || u.Sampled-prev.usage.Sampled >= minCPUWindow {
			pct = vmm.CPUPercent(prev.usage, u)
			a.samples[p.pid] = cpuSample{usage: u, percent: pct}
		}
		use := model.VMUsage{VMID: p.vm, MemoryBytes: u.RSSBytes, CPUPercent: pct, CPUTime: u.CPUTime, Source: model.UsageFromProc}
		if p.cg != nil {
			// The unit's cgroup counts all of the VM (QEMU and its
			// companions) where the host's controllers tell it.
			if mem, cpu, ok := p.cg.CgroupUsage(ctx); ok {
				use.MemoryBytes, use.CPUTime, use.Source = mem, cpu, model.UsageFromCgroup
			}
		}
		out = append(out, use)
	}
	// The samples of processes that are gone go with them.
	for pid := range a.samples {
		if !seen[pid] {
			delete(a.samples, pid)
		}
	}
	return out, nil
}
