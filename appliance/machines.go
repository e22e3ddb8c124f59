package appliance

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// boot launches the VM's process under the appliance's life and starts its
// supervisor. It returns the new boot id.
func (a *Appliance) boot(ctx context.Context, vm model.VM) (string, error) {
	var tier model.Tier
	if err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		tier, err = tx.Tier(vm.Tier)
		return err
	}); err != nil {
		return "", categorised(notFoundIs(err, "tier %s of %s no longer exists", vm.Tier, vm.ID), "read the tier")
	}
	dir, err := a.pool.VMPath(vm.ID)
	if err != nil {
		return "", categorised(err, "find the disk")
	}
	spec := MachineSpec{ID: vm.ID, Name: vm.Name, VCPUs: tier.VCPUs, MemoryMiB: tier.MemoryMiB,
		Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile), Rootfs: filepath.Join(dir, RootfsFile),
		RunDir: a.vmRunDir(vm.ID)}
	if spec.Net, err = a.guestNet(vm); err != nil {
		return "", err
	}
	if spec.Net != nil {
		// The VM is on the host in the store: the firewall takes it in, if
		// it does not hold it yet, before it boots.
		a.takeOnNetwork(ctx, vm.ID)
	}
	closeTAP := func() {
		if spec.Net != nil {
			spec.Net.TAP.Close()
		}
	}
	bctx, cancel := context.WithTimeout(ctx, a.bootMax)
	defer cancel()
	m, err := a.hv.Launch(a.life, bctx, spec)
	if err != nil {
		closeTAP()
		return "", unavailablef("%s did not boot: %v; its console log is in %s", vm.ID, err, spec.RunDir)
	}
	if spec.Net != nil {
		if err := a.checkGuestNet(bctx, vm.ID, m, spec); err != nil {
			_ = m.Kill()
			closeTAP()
			return "", err
		}
	}
	mc := &machine{m: m, bootID: m.BootID(), done: make(chan struct{})}
	if spec.Net != nil {
		mc.tap = spec.Net.TAP
	}
	a.mu.Lock()
	if a.halting {
		a.mu.Unlock()
		_ = m.Kill()
		closeTAP()
		return "", unavailablef("the appliance is shutting down; %s was not started", vm.ID)
	}
	a.machines[vm.ID] = mc
	a.wg.Add(1)
	a.mu.Unlock()
	go a.supervise(vm.ID, mc)
	a.log.Info("VM booted", "vm", vm.ID, "boot_id", mc.bootID)
	return mc.bootID, nil
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

// supervise follows a VM's process until it exits. A reboot of the guest
// (the process goes on, the agent comes back with a new boot id) is
// recorded as the VM's new boot. An exit nobody asked for marks the VM
// stopped, saying why: the guest powered itself off, or the process
// ended unasked (QEMU crashed or was killed, or a reboot never came back).
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
	if a.life.Err() != nil {
		_ = mc.m.Kill()
	}
	a.mu.Lock()
	expected := a.machines[id] != mc || a.halting
	if !expected {
		delete(a.machines, id)
	}
	a.mu.Unlock()
	if mc.tap != nil {
		mc.tap.Close()
	}
	close(mc.done)
	if expected {
		return
	}
	how := mc.m.Exit()
	a.log.Warn("VM process exited on its own", "vm", id, "err", err, "exit", how)
	uerr := a.update(a.life, func(tx *store.Tx) error {
		vm, err := getVM(tx, id)
		if err != nil || vm.State != model.StateRunning || vm.BootID != mc.bootID {
			return err
		}
		switch how {
		case ExitPoweredOff:
			_, err = a.setStopped(tx, id, model.StopGuestPowerOff, "vm.exited", "%s was powered off from inside; it keeps billing while stopped; start it with `superjolt vm start %s`", id, id)
		case ExitRebootFailed:
			_, err = a.setStopped(tx, id, model.StopExited, "vm.exited", "%s rebooted from inside but did not come back up (see its console log in %s); start it with `superjolt vm start %s`", id, a.vmRunDir(id), id)
		default:
			_, err = a.setStopped(tx, id, model.StopExited, "vm.exited", "%s exited unexpectedly (%s); start it with `superjolt vm start %s`", id, processEnd(err), id)
		}
		return err
	})
	if uerr != nil && !errors.Is(uerr, model.ErrNotFound) {
		a.log.Warn("cannot record that a VM exited", "vm", id, "err", uerr)
	}
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
