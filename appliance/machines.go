package appliance

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// spec is what the hypervisor needs to run vm.
func (a *Appliance) spec(ctx context.Context, vm model.VM) (MachineSpec, error) {
	var tier model.Tier
	if err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		tier, err = tx.Tier(vm.Tier)
		return err
	}); err != nil {
		return MachineSpec{}, categorised(notFoundIs(err, "tier %s of %s no longer exists", vm.Tier, vm.ID), "read the tier")
	}
	dir, err := a.pool.VMPath(vm.ID)
	if err != nil {
		return MachineSpec{}, categorised(err, "find the disk")
	}
	return MachineSpec{ID: vm.ID, Name: vm.Name, Account: vm.AccountID, VCPUs: tier.VCPUs, MemoryMiB: tier.MemoryMiB,
		Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile), Rootfs: filepath.Join(dir, RootfsFile),
		RunDir: a.vmRunDir(vm.ID)}, nil
}

// boot launches the VM's process and starts its supervisor. It returns
// the new boot id.
func (a *Appliance) boot(ctx context.Context, vm model.VM) (string, error) {
	spec, err := a.spec(ctx, vm)
	if err != nil {
		return "", err
	}
	if spec.Net, err = a.guestNet(vm); err != nil {
		return "", err
	}
	if spec.Net != nil {
		// The VM is on the host in the store: the firewall takes it in, if
		// it does not hold it yet, before it boots.
		a.takeOnNetwork(ctx, vm.ID)
	}
	bctx, cancel := context.WithTimeout(ctx, a.bootMax)
	defer cancel()
	m, err := a.hv.Launch(a.life, bctx, spec)
	if err != nil {
		return "", unavailablef("%s did not boot: %v; its console log is in %s", vm.ID, err, spec.RunDir)
	}
	if spec.Net != nil {
		if err := a.checkGuestNet(bctx, vm.ID, m, spec); err != nil {
			_ = m.Kill()
			return "", err
		}
	}
	mc, err := a.take(vm.ID, m)
	if err != nil {
		return "", err
	}
	a.log.Info("VM booted", "vm", vm.ID, "boot_id", mc.bootID)
	return mc.bootID, nil
}

// attach takes over the process of a running VM that an earlier daemon
// left running, and starts its supervisor. It returns the boot id the
// guest reports now. A VM whose process runs but cannot be taken over
// (its agent does not answer, its NIC is not on this daemon's network) is
// left to the caller, which ends it and boots the VM again.
func (a *Appliance) attach(ctx context.Context, vm model.VM) (string, error) {
	spec, err := a.spec(ctx, vm)
	if err != nil {
		return "", err
	}
	if a.net != nil && vm.IP.IsValid() {
		// The guest's NIC is on the VM's TAP, held by its QEMU: a TAP that
		// is not here, or held by nobody, means the QEMU runs on another
		// network (a daemon in another namespace started it).
		if held, err := a.net.TAPHeld(vm.ID); err != nil || !held {
			return "", fmt.Errorf("its network device is not on this host's bridge (held: %v, %v)", held, err)
		}
	}
	actx, cancel := context.WithTimeout(ctx, attachMax)
	defer cancel()
	m, err := a.hv.Attach(a.life, actx, spec)
	if err != nil {
		return "", err
	}
	mc, err := a.take(vm.ID, m)
	if err != nil {
		return "", err
	}
	a.log.Info("VM taken over", "vm", vm.ID, "boot_id", mc.bootID)
	return mc.bootID, nil
}

// attachMax bounds the reconnection to a running VM's QMP and agent.
const attachMax = 20 * time.Second

// take makes m the VM's machine and starts its supervisor.
func (a *Appliance) take(id string, m Machine) (*machine, error) {
	mc := &machine{m: m, bootID: m.BootID(), done: make(chan struct{})}
	a.mu.Lock()
	if a.halting {
		a.mu.Unlock()
		m.Detach()
		return nil, unavailablef("the appliance is shutting down; %s was not taken on", id)
	}
	a.machines[id] = mc
	a.wg.Add(1)
	a.mu.Unlock()
	go a.supervise(id, mc)
	return mc, nil
}

// halt stops the VM's process, if it has one, and waits until it is gone.
func (a *Appliance) halt(ctx context.Context, id string) {
	a.mu.Lock()
	mc := a.machines[id]
	delete(a.machines, id)
	a.mu.Unlock()
	if mc == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := mc.m.Shutdown(sctx); err != nil {
		a.log.Warn("VM did not shut down; killing it", "vm", id, "err", err)
		_ = mc.m.Kill()
	}
	<-mc.done
}

// supervise follows a VM's process until it exits or the appliance lets
// go of it (Close). A reboot of the guest (the process goes on, the agent
// comes back with a new boot id) is recorded as the VM's new boot. An
// exit nobody asked for marks the VM stopped, saying why: the guest
// powered itself off (a stop the tenant asked for), or the process ended
// unasked (QEMU crashed or was killed, or a reboot never came back), and
// then the VM boots again after a back-off (see crashed).
func (a *Appliance) supervise(id string, mc *machine) {
	defer a.wg.Done()
	exited := make(chan error, 1)
	go func() { exited <- mc.m.Wait(a.life) }()
	var err error
	for waiting := true; waiting; {
		select {
		case err = <-exited:
			waiting = false
		case <-mc.m.Rebooted():
			a.recordReboot(id, mc)
		}
	}
	a.mu.Lock()
	expected := a.machines[id] != mc || a.halting || a.life.Err() != nil
	if a.machines[id] == mc {
		delete(a.machines, id)
	}
	a.mu.Unlock()
	close(mc.done)
	if expected {
		return // stopped, or let go of: the process is someone else's business
	}
	how := mc.m.Exit()
	a.log.Warn("VM process exited on its own", "vm", id, "err", err, "exit", how)
	if how == ExitPoweredOff {
		a.recordExit(id, mc.bootID, func(tx *store.Tx) error {
			_, err := a.setStopped(tx, id, model.StopGuestPowerOff, "vm.exited", "%s was powered off from inside; it keeps billing while stopped; start it with `superjolt vm start %s`", id, id)
			return err
		})
		return
	}
	why := processEnd(err)
	if how == ExitRebootFailed {
		why = fmt.Sprintf("it rebooted from inside but did not come back up; see its console log in %s", a.vmRunDir(id))
	}
	a.crashed(id, mc.bootID, why)
}

// recordExit records, with change, the end of boot bootID of a VM that
// the store says runs it.
func (a *Appliance) recordExit(id, bootID string, change func(tx *store.Tx) error) bool {
	done := false
	uerr := a.update(a.life, func(tx *store.Tx) error {
		done = false
		vm, err := getVM(tx, id)
		if err != nil || vm.State != model.StateRunning || vm.BootID != bootID {
			return err
		}
		done = true
		return change(tx)
	})
	if uerr != nil && !errors.Is(uerr, model.ErrNotFound) {
		a.log.Warn("cannot record that a VM exited", "vm", id, "err", uerr)
		return false
	}
	return done
}

// recordReboot records the new boot of a VM whose guest rebooted itself,
// unless an operation has taken the VM over meanwhile.
func (a *Appliance) recordReboot(id string, mc *machine) {
	bootID := mc.m.BootID()
	a.mu.Lock()
	if a.machines[id] != mc || a.halting || bootID == "" || bootID == mc.bootID {
		a.mu.Unlock()
		return
	}
	old := mc.bootID
	mc.bootID = bootID
	a.mu.Unlock()
	a.log.Info("VM rebooted from inside", "vm", id, "old_boot_id", old, "boot_id", bootID)
	uerr := a.update(a.life, func(tx *store.Tx) error {
		vm, err := getVM(tx, id)
		if err != nil || vm.State != model.StateRunning || vm.BootID != old {
			return err
		}
		vm.BootID = bootID
		if err := tx.PutVM(vm); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.rebooted", id, vm.AccountID, "%s rebooted from inside; it runs again with boot id %s", id, bootID)
	})
	if uerr != nil && !errors.Is(uerr, model.ErrNotFound) {
		a.log.Warn("cannot record that a VM rebooted", "vm", id, "err", uerr)
	}
}

// agent returns the agent client of a running VM, or nil.
func (a *Appliance) agent(id string) Agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if mc := a.machines[id]; mc != nil {
		return mc.m.Agent()
	}
	return nil
}

// processEnd says how a VM process ended, from what Wait returned.
func processEnd(err error) string {
	if err == nil {
		return "its process exited with status 0, the guest did not power off"
	}
	return "its process ended: " + err.Error()
}

// HaltVM shuts a running VM's guest down cleanly through its agent
// because the host stops it: the machine powers off, or an operator
// stopped superjolt.slice, and the service manager runs the VM unit's stop
// command, which asks for this. The VM is then stopped but still wanted
// running: it boots again when superjoltd next starts. A VM that does not
// run is left as it is.
func (a *Appliance) HaltVM(ctx context.Context, id string) (model.VM, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return vm, err
	}
	a.mu.Lock()
	mc := a.machines[id]
	a.mu.Unlock()
	if vm.State != model.StateRunning || mc == nil {
		return vm, nil
	}
	a.log.Info("the host stops a VM; shutting its guest down", "vm", id)
	a.halt(ctx, id)
	err = a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		cur, err := getVM(tx, id)
		if err != nil || cur.State != model.StateRunning || cur.BootID != mc.bootID {
			return err
		}
		cur, err = a.setStopped(tx, id, model.StopHost, "vm.halted", "%s was shut down with the host (its unit was stopped); it boots again when superjoltd starts, or with `superjolt vm start %s`", id, id)
		if err != nil {
			return err
		}
		cur.WantRunning = true
		vm = cur
		return tx.PutVM(cur)
	})
	return vm, err
}
