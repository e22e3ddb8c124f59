package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// recover finishes or rolls back every operation a crashed daemon left
// unfinished, then sets aside subvolumes no row knows about (see
// sweepOrphans). It runs in New, before anything else touches the store or
// the pool. It never deletes on doubt: an operation whose record does not
// parse, or whose state in the pool cannot be read, stops recovery with an
// error (and so the daemon's start) before anything else is changed.
//
// Each kind's recovery sits beside its forward path: recoverCreate and
// recoverStop (vms.go), recoverBackup and recoverDeleteBackup
// (backups.go), recoverRestore (restore.go), recoverRetire, recoverResume
// and recoverReclaim (retire.go). A start is finished as far as the store
// says: the VM boots with the others below if it should run.
func (a *Appliance) recover(ctx context.Context) error {
	var ops []model.Operation
	if err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		ops, err = tx.UnfinishedOperations()
		return err
	}); err != nil {
		return categorised(err, "read unfinished operations")
	}
	slices.SortFunc(ops, func(x, y model.Operation) int { return x.StartedAt.Compare(y.StartedAt) })
	// VM processes outlive the daemon, but not one whose VM an operation
	// was changing when the daemon died: its guest may be frozen, or its
	// disk about to be replaced. It is ended first, and the VM boots again
	// once its operation is finished or rolled back (bootWanted).
	for _, o := range ops {
		if o.VMID == "" || model.ValidateID(model.KindVM, o.VMID) != nil {
			continue
		}
		if err := a.hv.Kill(a.runDir, o.VMID); err != nil {
			return fmt.Errorf("appliance: cannot end the process of %s, whose %s was left unfinished: %w", o.VMID, o.Kind, err)
		}
	}
	for _, o := range ops {
		if err := a.recoverOp(ctx, o); err != nil {
			// On doubt, stop: nothing more is changed, the sweep does not
			// run, and the daemon does not start until an operator looks.
			a.log.Error("cannot recover an unfinished operation; stopping", "op", o.ID, "vm", o.VMID, "kind", o.Kind, "err", err)
			return fmt.Errorf("appliance: cannot recover %s (%s of %s), left unfinished by the previous run: %w; "+
				"nothing was deleted and superjoltd does not start until this is fixed", o.ID, o.Kind, o.VMID, err)
		}
	}
	if err := a.sweepOrphans(ctx); err != nil {
		return fmt.Errorf("appliance: cannot check the pool for subvolumes the store does not know: %w; "+
			"nothing was deleted and superjoltd does not start until this is fixed", err)
	}
	return nil
}

// recovery is how one unfinished operation ends: its final state, and the
// changes recorded with that end in one transaction (also, nil for none).
// Work on disks is done before, by the kind's recover function.
type recovery struct {
	final model.OpState
	also  func(tx *store.Tx) error
}

// recoverOp finishes or rolls back one unfinished operation with the
// recover function of its kind, kept beside the kind's forward path.
func (a *Appliance) recoverOp(ctx context.Context, rec model.Operation) error {
	var in intent
	if len(rec.Intent) > 0 {
		if err := json.Unmarshal(rec.Intent, &in); err != nil {
			return fmt.Errorf("its intent record does not parse (%v): the store is damaged; restore it from a copy, or ask for help with this log", err)
		}
	}
	log := a.log.With("op", rec.ID, "vm", rec.VMID, "kind", string(rec.Kind), "steps", stepsIn(in))
	log.Warn("recovering an operation a previous run left unfinished")
	bg := context.WithoutCancel(ctx)
	var r recovery
	var err error
	switch rec.Kind {
	case model.OpCreate:
		r, err = a.recoverCreate(bg, rec)
	case model.OpBackup:
		r, err = a.recoverBackup(bg, rec, in)
	case model.OpDeleteBackup:
		r, err = a.recoverDeleteBackup(bg, rec, in)
	case model.OpRestore:
		r, err = a.recoverRestore(bg, rec, in, log)
	case model.OpStop:
		r, err = a.recoverStop(rec)
	case model.OpDestroy, model.OpArchive:
		r, err = a.recoverRetire(rec, in)
	case model.OpResume:
		r, err = a.recoverResume(bg, rec)
	case model.OpReclaim:
		r, err = a.recoverReclaim(bg, rec, in, log)
	default: // start and anything newer: the store already says what is wanted
		r = recovery{final: model.OpDone}
	}
	if err != nil {
		return err
	}
	after := rec.Step
	return a.update(ctx, func(tx *store.Tx) error {
		// Read before also, which may delete the VM (a reclaim).
		acct := vmAccount(tx, rec.VMID)
		if r.also != nil {
			if err := r.also(tx); err != nil {
				return err
			}
		}
		rec.State, rec.FinishedAt, rec.Step = r.final, a.clock.Now(), "recovered"
		if r.final == model.OpFailed {
			rec.Error, rec.ErrorCode = "could not be finished after a restart; see the daemon's log", "internal"
		}
		if err := tx.PutOperation(rec); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "op.recovered", rec.ID, acct, "%s of %s, left unfinished by a previous run after step %q, was %s", rec.Kind, rec.VMID, after, r.final)
	})
}

func ignoreNotFound(err error) error {
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	return err
}

// bootWanted takes over the VM processes an earlier daemon left running
// and boots every other VM that should be running (the host restarted, or
// a process died while no daemon watched). Checked against the store:
//   - a running VM whose process runs is taken over (Attach): QMP and its
//     agent are reconnected, its guest is not disturbed; a guest that
//     rebooted meanwhile is recorded with its new boot id;
//   - a process the store does not say runs (an unknown VM, or one the
//     store has stopped, destroyed or archived) is ended, with an event;
//   - a running VM whose process could not be taken over is ended and
//     booted again;
//   - a VM wanted running without a process is booted, two at a time; one
//     that does not boot is marked stopped, with an event.
func (a *Appliance) bootWanted(ctx context.Context) {
	var all []model.VM
	if err := a.view(ctx, func(tx *store.Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			all = append(all, vm)
			return nil
		})
	}); err != nil {
		a.log.Error("cannot list the VMs to boot", "err", err)
		return
	}
	byID := make(map[string]model.VM, len(all))
	for _, vm := range all {
		byID[vm.ID] = vm
	}
	left := map[string]bool{}
	for _, id := range a.hv.Leftovers(a.runDir) {
		vm, known := byID[id]
		if known && vm.State == model.StateRunning {
			left[id] = true
			continue
		}
		state := "unknown to the store"
		if known {
			state = "in state " + string(vm.State)
		}
		a.log.Warn("ending a VM process the store does not say runs", "vm", id, "state", state)
		err := a.hv.Kill(a.runDir, id)
		msg := fmt.Sprintf("a process of %s ran although %s is %s; it was ended", id, id, state)
		if err != nil {
			msg = fmt.Sprintf("a process of %s runs although %s is %s, and could not be ended: %v", id, id, state, err)
		}
		_ = a.update(ctx, func(tx *store.Tx) error {
			return event(tx, a.clock.Now(), "vm.stray", id, byID[id].AccountID, "%s", msg)
		})
	}

	var want []model.VM
	var mu sync.Mutex
	var wg sync.WaitGroup
	attachSem := make(chan struct{}, 16)
	for _, vm := range all {
		if !left[vm.ID] {
			if vm.State == model.StateRunning || (vm.State == model.StateStopped && vm.WantRunning) {
				want = append(want, vm)
			}
			continue
		}
		wg.Add(1)
		attachSem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-attachSem }()
			if a.takeOver(ctx, vm) {
				return
			}
			mu.Lock()
			want = append(want, vm)
			mu.Unlock()
		}()
	}
	wg.Wait()

	sem := make(chan struct{}, 2)
	for _, vm := range want {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			bootID, err := a.boot(ctx, vm)
			uerr := a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
				if err != nil {
					_, serr := a.setStopped(tx, vm.ID, model.StopBootFailed, "vm.boot_failed", "%s did not boot at the daemon's start (%v); try `superjolt vm start %s`", vm.ID, err, vm.ID)
					return serr
				}
				cur, gerr := getVM(tx, vm.ID)
				if gerr != nil {
					return gerr
				}
				cur.State, cur.BootID, cur.WantRunning = model.StateRunning, bootID, true
				if perr := tx.PutVM(cur); perr != nil {
					return perr
				}
				return event(tx, a.clock.Now(), "vm.started", vm.ID, cur.AccountID, "%s booted again at the daemon's start (boot %s)", vm.ID, bootID)
			})
			if uerr != nil {
				a.log.Warn("cannot record a boot at start", "vm", vm.ID, "err", uerr)
			}
		}()
	}
	wg.Wait()
}

// takeOver takes over the running process of vm. It returns false, having
// ended the process, when that could not be done: the VM is then booted
// again.
func (a *Appliance) takeOver(ctx context.Context, vm model.VM) bool {
	bootID, err := a.attach(ctx, vm)
	if err != nil {
		a.log.Warn("cannot take over a running VM; ending its process and booting it again", "vm", vm.ID, "err", err)
		if kerr := a.hv.Kill(a.runDir, vm.ID); kerr != nil {
			a.log.Error("cannot end a VM process that could not be taken over", "vm", vm.ID, "err", kerr)
		}
		_ = a.update(ctx, func(tx *store.Tx) error {
			return event(tx, a.clock.Now(), "vm.takeover_failed", vm.ID, vm.AccountID, "%s ran but could not be taken over at the daemon's start (%v); it is booted again", vm.ID, err)
		})
		return false
	}
	if bootID == vm.BootID {
		return true
	}
	// The guest rebooted while no daemon watched.
	a.mu.Lock()
	if mc := a.machines[vm.ID]; mc != nil {
		mc.bootID = bootID
	}
	a.mu.Unlock()
	uerr := a.update(ctx, func(tx *store.Tx) error {
		cur, err := getVM(tx, vm.ID)
		if err != nil || cur.State != model.StateRunning {
			return err
		}
		cur.BootID = bootID
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.rebooted", vm.ID, cur.AccountID, "%s rebooted from inside while superjoltd was away; it runs with boot id %s", vm.ID, bootID)
	})
	if uerr != nil {
		a.log.Warn("cannot record a reboot seen at start", "vm", vm.ID, "err", uerr)
	}
	return true
}
