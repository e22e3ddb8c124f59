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

// bootWanted boots every VM that should be running (the daemon stopped or
// crashed while it ran), two at a time. A VM that does not boot is marked
// stopped, with an event.
func (a *Appliance) bootWanted(ctx context.Context) {
	var want []model.VM
	if err := a.view(ctx, func(tx *store.Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			if vm.State == model.StateRunning || (vm.State == model.StateStopped && vm.WantRunning) {
				want = append(want, vm)
			}
			return nil
		})
	}); err != nil {
		a.log.Error("cannot list the VMs to boot", "err", err)
		return
	}
	sem := make(chan struct{}, 2)
	var wg sync.WaitGroup
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
