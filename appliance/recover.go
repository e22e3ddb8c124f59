package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

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
// What each kind does:
//
//	create   rolled back: disk deleted, row deleted, address freed
//	backup   a snapshot that exists is kept and recorded (consistency
//	         frozen only if the freeze was recorded, else crash); retention
//	         pruning planned before the crash is finished; no snapshot:
//	         rolled back. The guest cannot stay frozen: its process died
//	         with the daemon (or is killed before the VM boots again), and
//	         the agent thaws by itself at its deadline anyway.
//	restore  finished: the disk is replaced again from the backup (an
//	         atomic rename, so doing it twice is harmless); the VM boots
//	         below if it should run
//	destroy  finished: the VM goes to the graveyard (reclaimed at once by
//	         the reaper when it was younger than an hour)
//	reclaim  finished: disk, backups and rows deleted
//	archive  finished: the VM is archived
//	delete_backup  finished once the row is deleted (the snapshot goes
//	         too); rolled back before that: the backup is whole
//	resume, start, stop  finished as far as the store says
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

func (a *Appliance) recoverOp(ctx context.Context, rec model.Operation) error {
	var in intent
	if len(rec.Intent) > 0 {
		if err := json.Unmarshal(rec.Intent, &in); err != nil {
			return fmt.Errorf("its intent record does not parse (%v): the store is damaged; restore it from a copy, or ask for help with this log", err)
		}
	}
	id := rec.VMID
	log := a.log.With("op", rec.ID, "vm", id, "kind", string(rec.Kind), "steps", stepsIn(in))
	log.Warn("recovering an operation a previous run left unfinished")
	final := model.OpDone
	var also func(tx *store.Tx) error
	bg := context.WithoutCancel(ctx)

	switch rec.Kind {
	case model.OpCreate:
		a.undoCreate(bg, id)
		final = model.OpRolledBack
		also = func(tx *store.Tx) error {
			return a.dropCreatingVM(tx, id, errors.New("the daemon stopped during the creation"))
		}

	case model.OpBackup:
		bkID := rec.BackupID
		var have bool
		if err := a.view(ctx, func(tx *store.Tx) error {
			_, err := tx.Backup(bkID)
			have = err == nil
			if errors.Is(err, model.ErrNotFound) {
				return nil
			}
			return err
		}); err != nil {
			return err
		}
		snaps, err := a.pool.Backups(bg, id)
		if err != nil {
			return fmt.Errorf("cannot list the backups of %s in the pool, so cannot tell whether its snapshot was taken: %w", id, err)
		}
		onDisk := slices.Contains(snaps, bkID)
		switch {
		case have:
			for _, p := range in.Prune {
				if err := a.pool.DeleteBackup(bg, id, p); err != nil && !isPoolNotFound(err) {
					return err
				}
			}
			also = func(tx *store.Tx) error { return a.dropBackupRows(tx, id, in.Prune) }
		case onDisk:
			cons := in.Consistency
			if cons == model.Frozen && !in.did("frozen") {
				cons = model.Crash
			}
			bk := model.Backup{ID: bkID, VMID: id, Kind: in.BackupKind, TakenAt: rec.StartedAt, Consistency: cons}
			if bk.Kind == "" {
				bk.Kind = model.OnDemand
			}
			if p, err := a.pool.BackupPath(id, bkID); err == nil {
				if u, err := a.pool.Usage(bg, p); err == nil {
					bk.SizeBytes = u.Exclusive
				}
			}
			also = func(tx *store.Tx) error {
				vm, err := tx.VM(id)
				if errors.Is(err, model.ErrNotFound) {
					return nil // the sweep deletes the snapshot
				}
				if err != nil {
					return err
				}
				if err := tx.PutBackup(bk); err != nil {
					return err
				}
				if bk.Kind == model.Scheduled {
					vm.NextBackupAt = nextBackupAt(id, a.clock.Now())
					if err := tx.PutVM(vm); err != nil {
						return err
					}
				}
				return event(tx, a.clock.Now(), "backup.taken", bkID, vm.AccountID, "%s backup %s of %s recovered after a restart (%s)", bk.Kind, bkID, id, cons)
			}
		default:
			final = model.OpRolledBack
		}
		if ag := a.agent(id); ag != nil && in.did("frozen") {
			tctx, cancel := context.WithTimeout(bg, 10*time.Second)
			_ = ag.Thaw(tctx)
			cancel()
		}

	case model.OpRestore:
		err := a.pool.RestoreFile(bg, id, rec.BackupID, RootfsFile)
		if err != nil && !in.did("replaced") {
			log.Error("cannot finish the restore; the disk is as it was before it (the replacement is atomic)", "backup", rec.BackupID, "err", err)
			final = model.OpFailed
		}
		also = func(tx *store.Tx) error {
			vm, err := tx.VM(id)
			if err != nil {
				return ignoreNotFound(err)
			}
			vm.BootID = ""
			if err := tx.PutVM(vm); err != nil {
				return err
			}
			if final == model.OpFailed {
				return event(tx, a.clock.Now(), "vm.restore_failed", id, vm.AccountID,
					"restore of %s from %s, left unfinished by a restart, could not be finished: the disk is as it was before the restore", id, rec.BackupID)
			}
			return event(tx, a.clock.Now(), "vm.restored", id, vm.AccountID, "restore of %s from %s finished after a restart", id, rec.BackupID)
		}

	case model.OpDestroy:
		also = func(tx *store.Tx) error {
			_, err := a.toGraveyard(tx, id, in.Reclaim)
			return ignoreNotFound(err)
		}

	case model.OpReclaim:
		o := &op{a: a, rec: rec, in: in, log: log, ctx: bg}
		o.rec.State = model.OpRunning
		if err := a.reclaimDisks(bg, o); err != nil {
			return err
		}
		also = func(tx *store.Tx) error { return a.dropVM(tx, id) }

	case model.OpArchive:
		also = func(tx *store.Tx) error { return ignoreNotFound(a.toArchive(tx, id)) }

	case model.OpStop:
		also = func(tx *store.Tx) error {
			vm, err := tx.VM(id)
			if err != nil || vm.State != model.StateRunning {
				return ignoreNotFound(err)
			}
			_, err = a.setStopped(tx, id, "vm.stopped", "%s stopped (finished after a restart)", id)
			return err
		}

	case model.OpResume:
		also = func(tx *store.Tx) error {
			vm, err := tx.VM(id)
			if err != nil {
				return ignoreNotFound(err)
			}
			if !vm.State.Live() {
				final = model.OpRolledBack
			}
			return nil
		}

	case model.OpDeleteBackup:
		if !in.did("row-deleted") {
			final = model.OpRolledBack // the backup is still there, whole
			break
		}
		if err := a.deleteBackupSnapshot(bg, model.Backup{ID: rec.BackupID, VMID: id}); err != nil {
			return err
		}

	default: // start and anything newer: the store already says what is wanted
	}

	return a.update(ctx, func(tx *store.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		rec.State, rec.FinishedAt, rec.Step = final, a.clock.Now(), "recovered"
		if final == model.OpFailed {
			rec.Error, rec.ErrorCode = "could not be finished after a restart; see the daemon's log", "internal"
		}
		if err := tx.PutOperation(rec); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "op.recovered", rec.ID, "", "%s of %s, left unfinished by a previous run after step %q, was %s", rec.Kind, id, rec.Step, final)
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
					_, serr := a.setStopped(tx, vm.ID, "vm.boot_failed", "%s did not boot at the daemon's start (%v); try `superjolt vm start %s`", vm.ID, err, vm.ID)
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
