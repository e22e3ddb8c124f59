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
	spec := MachineSpec{ID: vm.ID, VCPUs: tier.VCPUs, MemoryMiB: tier.MemoryMiB,
		Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile), Rootfs: filepath.Join(dir, RootfsFile),
		RunDir: a.vmRunDir(vm.ID)}
	bctx, cancel := context.WithTimeout(ctx, a.bootMax)
	defer cancel()
	m, err := a.hv.Launch(a.life, bctx, spec)
	if err != nil {
		return "", unavailablef("%s did not boot: %v; its console log is in %s", vm.ID, err, spec.RunDir)
	}
	mc := &machine{m: m, bootID: m.BootID(), done: make(chan struct{})}
	a.mu.Lock()
	if a.halting {
		a.mu.Unlock()
		_ = m.Kill()
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

// supervise waits for a VM's process to exit. An exit nobody asked for
// (the guest powered itself off, QEMU crashed) marks the VM stopped.
func (a *Appliance) supervise(id string, mc *machine) {
	defer a.wg.Done()
	err := mc.m.Wait(a.life)
	if a.life.Err() != nil {
		_ = mc.m.Kill()
	}
	a.mu.Lock()
	expected := a.machines[id] != mc || a.halting
	if !expected {
		delete(a.machines, id)
	}
	a.mu.Unlock()
	close(mc.done)
	if expected {
		return
	}
	a.log.Warn("VM process exited on its own", "vm", id, "err", err)
	uerr := a.update(a.life, func(tx *store.Tx) error {
		vm, err := getVM(tx, id)
		if err != nil || vm.State != model.StateRunning || vm.BootID != mc.bootID {
			return err
		}
		_, err = a.setStopped(tx, id, "vm.exited", "%s exited on its own (the guest powered off or its process died); start it with `superjolt vm start %s`", id, id)
		return err
	})
	if uerr != nil && !errors.Is(uerr, model.ErrNotFound) {
		a.log.Warn("cannot record that a VM exited", "vm", id, "err", uerr)
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
