package appliance

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// RestoreVM rewinds a VM's disk to one of its backups (SubmitRestore) and
// returns the VM once it is done.
func (a *Appliance) RestoreVM(ctx context.Context, vmID, backupID string) (model.VM, error) {
	o, err := a.submitRestore(ctx, vmID, backupID)
	return a.vmAfter(ctx, o, err)
}

// SubmitRestore starts rewinding a VM's disk to one of its backups, in
// place: it stops the VM's process, replaces rootfs.img with a reflink of
// the backup's (an atomic rename), and boots it again if it was running,
// ending once the agent reports a new boot id. Id, address, ports and
// domains stay.
func (a *Appliance) SubmitRestore(ctx context.Context, vmID, backupID string) (model.Operation, error) {
	return accepted(a.submitRestore(ctx, vmID, backupID))
}

func (a *Appliance) submitRestore(ctx context.Context, vmID, backupID string) (*op, error) {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return nil, err
	}
	if err := model.ValidateID(model.KindBackup, backupID); err != nil {
		return nil, err
	}
	vm, err := a.readVM(ctx, vmID)
	if err != nil {
		return nil, err
	}
	check := func(tx *store.Tx) (model.VM, error) {
		cur, err := getVM(tx, vmID)
		if err != nil {
			return cur, err
		}
		b, err := getBackup(tx, backupID)
		if err != nil {
			return cur, err
		}
		if b.VMID != vmID {
			return cur, invalidf("%s is a backup of %s, not of %s: a VM can only be restored from its own backups (`superjolt backup list %s`)", backupID, b.VMID, vmID, vmID)
		}
		if cur.State != model.StateRunning && cur.State != model.StateStopped {
			return cur, stateError(cur, "restore it")
		}
		return cur, nil
	}
	if err := a.view(ctx, func(tx *store.Tx) error { _, err := check(tx); return err }); err != nil {
		return nil, categorised(err, "check the restore")
	}
	if err := a.checkRestoreSpace(ctx, vmID); err != nil { // before stopping the guest
		return nil, err
	}
	wasRunning := false
	o, err := a.begin(ctx, model.OpRestore, vmID, intent{}, func(tx *store.Tx, rec *model.Operation, in *intent) error {
		cur, err := check(tx)
		if err != nil {
			return err
		}
		rec.BackupID = backupID
		in.OldBootID = cur.BootID
		wasRunning = cur.State == model.StateRunning
		vm = cur
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error { return a.runRestore(ctx, o, vm, wasRunning) }), nil
}

// runRestore stops the VM, puts the backup's disk in place and boots it
// again when it was running.
func (a *Appliance) runRestore(ctx context.Context, o *op, vm model.VM, wasRunning bool) error {
	vmID, backupID := o.rec.VMID, o.rec.BackupID
	log := o.log.With("backup", backupID)
	a.halt(ctx, vmID)
	if err := o.step("stopped", 20, func(tx *store.Tx) error {
		cur, err := getVM(tx, vmID)
		if err != nil {
			return err
		}
		cur.BootID = ""
		return tx.PutVM(cur)
	}); err != nil {
		return o.finish(err, nil)
	}
	if err := a.pool.RestoreFile(context.WithoutCancel(ctx), vmID, backupID, RootfsFile); err != nil {
		err = a.noSpaceOr(ctx, err, "restore "+vmID+" (its disk is unchanged)", unavailablef("cannot put back the disk of %s from %s: %v; the disk is unchanged", vmID, backupID, err))
		if !wasRunning {
			return o.finish(err, nil)
		}
		bootID, berr := a.boot(ctx, vm)
		return o.finish(err, func(tx *store.Tx) error {
			if berr != nil {
				log.Warn("cannot boot the VM again after a failed restore", "err", berr)
				_, err := a.setStopped(tx, vmID, model.StopBootFailed, "vm.boot_failed", "%s did not boot again after a failed restore; try `superjolt vm start %s`", vmID, vmID)
				return err
			}
			cur, err := getVM(tx, vmID)
			if err != nil {
				return err
			}
			cur.BootID = bootID
			return tx.PutVM(cur)
		})
	}
	if err := o.step("replaced", 60, nil); err != nil {
		return o.finish(err, nil)
	}
	bootID := ""
	if wasRunning {
		var err error
		bootID, err = a.boot(ctx, vm)
		if err == nil && bootID == o.in.OldBootID {
			a.halt(ctx, vmID)
			err = unavailablef("%s came back with its old boot id %s: it did not reboot", vmID, bootID)
		}
		if err != nil {
			return o.finish(err, func(tx *store.Tx) error {
				_, err := a.setStopped(tx, vmID, model.StopBootFailed, "vm.boot_failed", "%s was restored from %s but did not boot; try `superjolt vm start %s`", vmID, backupID, vmID)
				return err
			})
		}
		a.testPoint(ctx, "restore:booted")
	}
	return o.finish(nil, func(tx *store.Tx) error {
		cur, err := getVM(tx, vmID)
		if err != nil {
			return err
		}
		if wasRunning {
			cur.State, cur.BootID = model.StateRunning, bootID
		}
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.restored", vmID, cur.AccountID, "%s restored from backup %s%s", vmID, backupID, bootMsg(bootID))
	})
}

func bootMsg(bootID string) string {
	if bootID == "" {
		return " (stopped: the new disk is used at the next start)"
	}
	return fmt.Sprintf("; running again with boot id %s", bootID)
}

// recoverRestore finishes a restore the daemon left unfinished: the disk is
// replaced again from the backup (an atomic rename, so doing it twice is
// harmless); the VM boots with the others at start if it should run. When
// the disk cannot be put back and had not been, the restore failed and the
// disk is as it was before it; the event says so.
func (a *Appliance) recoverRestore(ctx context.Context, rec model.Operation, in intent, log *slog.Logger) (recovery, error) {
	id := rec.VMID
	r := recovery{final: model.OpDone}
	if err := a.pool.RestoreFile(ctx, id, rec.BackupID, RootfsFile); err != nil && !in.did("replaced") {
		log.Error("cannot finish the restore; the disk is as it was before it (the replacement is atomic)", "backup", rec.BackupID, "err", err)
		r.final = model.OpFailed
	}
	r.also = func(tx *store.Tx) error {
		vm, err := tx.VM(id)
		if err != nil {
			return ignoreNotFound(err)
		}
		vm.BootID = ""
		if err := tx.PutVM(vm); err != nil {
			return err
		}
		if r.final == model.OpFailed {
			return event(tx, a.clock.Now(), "vm.restore_failed", id, vm.AccountID,
				"restore of %s from %s, left unfinished by a restart, could not be finished: the disk is as it was before the restore", id, rec.BackupID)
		}
		return event(tx, a.clock.Now(), "vm.restored", id, vm.AccountID, "restore of %s from %s finished after a restart", id, rec.BackupID)
	}
	return r, nil
}
