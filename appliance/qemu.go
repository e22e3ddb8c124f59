package appliance

import (
	"context"
	"log/slog"

	"github.com/superjolt/superjolt/appliance/vmm"
)

// QEMU is the real [Hypervisor]: every VM is a QEMU microvm process driven
// by package vmm, supervised by the daemon itself (vmm kills QEMU when the
// daemon dies, through Pdeathsig, and when the life context ends).
type QEMU struct {
	// Config is the base machine configuration; Name, VCPUs, MemoryMiB,
	// Kernel, Initrd, Rootfs and RunDir are filled in per VM. Zero fields
	// take vmm's defaults.
	Config vmm.Config
	// Logger receives the driver's logs. Default: slog.Default().
	Logger *slog.Logger
}

var _ Hypervisor = (*QEMU)(nil)

// Launch boots a QEMU machine for spec. A QEMU process left running from a
// previous daemon (found by the pid file in the run directory) is killed
// first, so that a VM never runs twice on the same disk.
func (q *QEMU) Launch(life, boot context.Context, spec MachineSpec) (Machine, error) {
	cfg := q.Config
	cfg.Name = spec.ID
	cfg.VCPUs, cfg.MemoryMiB = spec.VCPUs, spec.MemoryMiB
	cfg.Kernel, cfg.Initrd, cfg.Rootfs = spec.Kernel, spec.Initrd, spec.Rootfs
	cfg.RunDir = spec.RunDir
	if cfg.Logger == nil {
		cfg.Logger = q.Logger
	}
	vmm.KillStale(spec.RunDir, spec.ID, cfg.Logger)
	m, err := vmm.New(life, cfg)
	if err != nil {
		return nil, err
	}
	if err := m.Start(boot); err != nil {
		_ = m.Kill()
		return nil, err
	}
	return qemuMachine{m}, nil
}

type qemuMachine struct{ *vmm.QEMU }

func (m qemuMachine) Agent() Agent {
	if c := m.QEMU.Agent(); c != nil {
		return c
	}
	return nil
}
