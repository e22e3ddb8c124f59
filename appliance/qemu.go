package appliance

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/vmm"
)

// QEMU is the real [Hypervisor]: every VM is a QEMU microvm process driven
// by package vmm. With Config.Units (systemd as PID 1) each runs as a
// transient service of its own; otherwise superjoltd starts it itself. In
// both cases it outlives the daemon: a new superjoltd takes it over with
// Attach (see recover.go's bootWanted).
//
// QEMU does not run as root: vmm gives every QEMU a uid of its own, runs it
// under QEMU's seccomp sandbox and hands it descriptors of its kernel,
// initrd, disk, console log and sockets instead of paths (see package vmm).
// Before each launch vmm makes the VM's rootfs.img owned by that uid, mode
// 0600, which a restore (a reflink made by root) or a backup (which keeps
// the owner of its day) may have changed; Launch closes the VM's own
// subvolume directory to everyone but root (0700), so that no other VM's
// user can even look into it, and makes the VM's own copies of its kernel
// and initrd readable for QEMU. What stays root is the daemon (and the
// launcher of a unit): btrfs subvolumes and snapshots (ioctls), the pool's
// loop device, the growth of disks, and the launch itself (the switch of
// user happens before QEMU's code runs), and the network: the bridge, each
// VM's TAP (QEMU gets an open queue of it) and the firewall (network.go).
type QEMU struct {
	// Config is the base machine configuration; Name, Hostname, VCPUs,
	// MemoryMiB, Kernel, Initrd, Rootfs, RunDir and Description are filled
	// in per VM (Hostname from the VM's name). Zero fields take vmm's
	// defaults.
	Config vmm.Config
	// Logger receives the driver's logs. Default: slog.Default().
	Logger *slog.Logger
}

var _ Hypervisor = (*QEMU)(nil)

// config is the machine configuration of spec.
func (q *QEMU) config(spec MachineSpec) vmm.Config {
	cfg := q.Config
	cfg.Name = spec.ID
	cfg.VCPUs, cfg.MemoryMiB = spec.VCPUs, spec.MemoryMiB
	cfg.Kernel, cfg.Initrd, cfg.Rootfs = spec.Kernel, spec.Initrd, spec.Rootfs
	cfg.RunDir = spec.RunDir
	cfg.Description = fmt.Sprintf("superjolt VM %s (%s, account %s)", spec.ID, spec.Name, spec.Account)
	if cfg.Logger == nil {
		cfg.Logger = q.Logger
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	// The guest is called by the VM's name. A name that is not a valid
	// hostname (made before names were checked) must not keep the VM from
	// booting: the guest then keeps the hostname on its disk.
	cfg.Hostname = ""
	if err := model.ValidateVMName(spec.Name); err == nil {
		cfg.Hostname = spec.Name
	} else if spec.Name != "" {
		cfg.Logger.Warn("VM name is not a valid hostname; the guest keeps its own", "vm", spec.ID, "name", spec.Name)
	}
	cfg.Net = nil
	if n := spec.Net; n != nil {
		cfg.Net = &vmm.GuestNet{Addr: n.Addr, Gateway: n.Gateway, DNS: n.DNS, MAC: n.MAC, TAP: n.TAP}
	}
	return cfg
}

// Launch boots a QEMU machine for spec. A QEMU of the VM that runs already
// (which the appliance did not take over) is killed first, so that a VM
// never runs twice on the same disk.
func (q *QEMU) Launch(life, boot context.Context, spec MachineSpec) (Machine, error) {
	cfg := q.config(spec)
	if err := vmm.Kill(spec.RunDir, spec.ID); err != nil {
		return nil, err
	}
	if err := sealVMDir(spec); err != nil {
		return nil, err
	}
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

// Attach takes over the QEMU of spec that an earlier daemon started.
func (q *QEMU) Attach(life, ctx context.Context, spec MachineSpec) (Machine, error) {
	m, err := vmm.Attach(life, ctx, q.config(spec))
	if err != nil {
		return nil, err
	}
	return qemuMachine{m}, nil
}

// Leftovers lists the VMs whose QEMU runs from a directory under runDir.
func (q *QEMU) Leftovers(runDir string) []string {
	ents, err := os.ReadDir(runDir)
	if err != nil {
		return nil
	}
	var ids []string
	for _, e := range ents {
		if model.ValidateID(model.KindVM, e.Name()) != nil {
			continue
		}
		if _, ok := vmm.Running(filepath.Join(runDir, e.Name()), e.Name()); ok {
			ids = append(ids, e.Name())
		}
	}
	return ids
}

// Kill ends the QEMU of VM id that runs from runDir, if one does.
func (q *QEMU) Kill(runDir, id string) error {
	return vmm.Kill(filepath.Join(runDir, id), id)
}

type qemuMachine struct{ *vmm.QEMU }

func (m qemuMachine) Exit() Exit {
	switch m.QEMU.Exit() {
	case vmm.ExitGuestPowerOff:
		return ExitPoweredOff
	case vmm.ExitRebootFailed:
		return ExitRebootFailed
	}
	return ExitUnasked
}

// CgroupUsage returns the memory and CPU time of the VM's systemd unit,
// when it runs as one and systemd knows them.
func (m qemuMachine) CgroupUsage(ctx context.Context) (int64, time.Duration, bool) {
	u := m.QEMU.Config().Units
	if u == nil {
		return 0, 0, false
	}
	s, found, err := u.UnitState(ctx, m.QEMU.Config().Name)
	if err != nil || !found || !s.UsageKnown {
		return 0, 0, false
	}
	return int64(s.MemoryBytes), s.CPUTime, true
}

func (m qemuMachine) Agent() Agent {
	if c := m.QEMU.Agent(); c != nil {
		return c
	}
	return nil
}

// sealVMDir closes the directory holding a VM's files (its subvolume) to
// everyone but root, and makes the VM's own copies of its kernel and initrd
// readable, which QEMU needs to reopen them through /proc/self/fd and which
// leaks nothing once the directory above them is closed. Backups, as
// snapshots of the subvolume, inherit the closed directory.
func sealVMDir(spec MachineSpec) error {
	if err := os.Chmod(filepath.Dir(spec.Rootfs), 0o700); err != nil {
		return fmt.Errorf("close the directory of %s: %w", spec.ID, err)
	}
	for _, f := range []string{spec.Kernel, spec.Initrd} {
		if filepath.Dir(f) != filepath.Dir(spec.Rootfs) {
			continue // not the VM's own copy: leave it as it is
		}
		fi, err := os.Lstat(f)
		if err != nil {
			return err
		}
		if fi.Mode().IsRegular() && fi.Mode().Perm()&0o444 != 0o444 {
			if err := os.Chmod(f, fi.Mode().Perm()|0o444); err != nil {
				return fmt.Errorf("make %s readable: %w", f, err)
			}
		}
	}
	return nil
}

// Accel says how guests run: the configured accelerator, or KVM when the
// host has a KVM that QEMU's user can use, TCG (software emulation)
// otherwise.
func (q *QEMU) Accel() string {
	if q.Config.Accel != vmm.AccelAuto {
		return string(q.Config.Accel)
	}
	if vmm.ProbeHost().KVM {
		return string(vmm.AccelKVM)
	}
	return string(vmm.AccelTCG)
}

// Logs writes the log of VM id: with systemd units, its unit's journal
// (QEMU, its launcher and the guest's console); otherwise QEMU's own log
// and the guest's console log from the run directory, and with follow the
// console as it grows.
func (q *QEMU) Logs(ctx context.Context, runDir, id string, lines int, follow bool, w io.Writer) error {
	if q.Config.Units != nil {
		return q.Config.Units.Journal(ctx, id, lines, follow, w)
	}
	dir := filepath.Join(runDir, id)
	if b, err := os.ReadFile(filepath.Join(dir, "qemu.log")); err == nil {
		for _, l := range lastLines(string(b), lines) {
			fmt.Fprintf(w, "qemu: %s\n", l)
		}
	}
	return vmm.TailConsole(ctx, filepath.Join(dir, "console.log"), lines, follow, w)
}

// lastLines returns the last n non-empty lines of text.
func lastLines(text string, n int) []string {
	ls := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == '\r' })
	return ls[max(len(ls)-n, 0):]
}
