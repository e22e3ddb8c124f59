package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs"
)

// The daily pass takes the scheduled backups of the VMs due, passBatch at
// a time. Each backup is still an operation of its own, with the steps of
// any backup, which recovery finishes or rolls back one by one (see
// recoverBackup); what the batch shares is the writes:
//
//   - the operations begin in one transaction (two: their ids are drawn
//     first, then each VM's lock is taken, then they are recorded);
//   - the snapshots are taken one after the other, each running guest
//     frozen just around its own snapshot ioctl;
//   - their rows, the VMs' next backup times, their events and their steps
//     (frozen, snapshot, thawed, saved) are written in one transaction;
//   - the backups retention drops are deleted with one btrfs commit for the
//     batch (Pool.DeleteBackupList), not one each;
//   - the sizes of the backups each VM keeps are read again (Pool.Usages:
//     what a backup holds alone grows as its VM rewrites its disk), so
//     that a list across VMs, which reads stored rows, shows sizes of the
//     last day at most;
//   - the pruned rows go, the sizes are written, and the operations end,
//     in one transaction.
//
// A batch holds no lock an API request waits for: the VMs' own locks (an
// operation on one of them is refused as busy, as during any backup), and
// store transactions of a few milliseconds.

// passBatch is how many due VMs the daily pass backs up together. 32 keeps
// each transaction small (some 100 KiB) and each VM locked for about a
// second; more saves little (measured: the snapshots dominate).
const passBatch = 32

// scheduledBackups takes the scheduled backups of the VMs ids, due at now,
// passBatch at a time. A VM busy with another operation, or no longer
// live, is left for the next pass; one whose backup failed is tried again
// an hour later, with a backup.failed event.
func (a *Appliance) scheduledBackups(ctx context.Context, now time.Time, ids []string) error {
	var errs []error
	for start := 0; start < len(ids); start += passBatch {
		if err := ctx.Err(); err != nil {
			return err
		}
		if a.shuttingDown() {
			return nil // the next start's pass takes the rest
		}
		errs = append(errs, a.backupBatch(ctx, now, ids[start:min(start+passBatch, len(ids))])...)
	}
	return errors.Join(errs...)
}

// backupBatch takes the scheduled backups of ids (see the comment above),
// and returns the errors of those that failed.
func (a *Appliance) backupBatch(ctx context.Context, now time.Time, ids []string) []error {
	// One check for the batch, before any guest is frozen for nothing.
	if err := a.checkPoolSpace(ctx, "take the scheduled backups"); err != nil {
		failed := make(map[string]error, len(ids))
		for _, id := range ids {
			failed[id] = err
		}
		return a.failScheduled(ctx, now, failed)
	}
	ops, err := a.beginBackups(ctx, ids)
	if err != nil && a.shuttingDown() {
		return nil // nothing was begun, nothing is put off
	}
	if err != nil {
		failed := make(map[string]error, len(ids))
		for _, id := range ids {
			failed[id] = err
		}
		return a.failScheduled(ctx, now, failed)
	}
	// Each operation ends within this function; then it no longer counts
	// for Close (launch does this for operations run on their own).
	defer func() {
		for _, o := range ops {
			o.cancel()
			a.opsWG.Done()
		}
	}()
	failed := map[string]error{}
	// A backup cancelled, or cut short by a shutdown, is taken at the next
	// pass; one that failed is put off by an hour.
	fail := func(o *op, err error) {
		if ferr := o.finish(err, nil); ferr != nil && !errors.Is(err, errCancelled) && !a.shuttingDown() {
			failed[o.rec.VMID] = ferr
		}
	}

	// The snapshots, one after the other: each guest is frozen only
	// around its own.
	var taken []*op
	for _, o := range ops {
		if err := a.snapshotBackup(o.ctx, o); err != nil {
			fail(o, err)
			continue
		}
		taken = append(taken, o)
	}
	if len(taken) == 0 {
		return a.failScheduled(ctx, now, failed)
	}

	// A just-taken snapshot holds nothing alone (it shares everything
	// with its VM): its size is 0 until the guest rewrites what it holds.
	bg := context.WithoutCancel(ctx)

	// What retention drops, planned from one read of the store.
	bks := make([]model.Backup, len(taken))
	kept := make(map[*op][]string, len(taken)) // the VM's older backups that stay
	at := a.clock.Now()
	for i, o := range taken {
		bks[i] = model.Backup{ID: o.rec.BackupID, VMID: o.rec.VMID, Kind: model.Scheduled, TakenAt: at,
			Consistency: o.in.Consistency}
		if bks[i].Consistency == model.Frozen && o.frozen > 0 {
			bks[i].FrozenMS = max(o.frozen.Milliseconds(), 1)
		}
	}
	if err := a.view(bg, func(tx *store.Tx) error {
		for i, o := range taken {
			o.in.Prune = nil
			vm, err := getVM(tx, o.rec.VMID)
			if err != nil {
				return err
			}
			acct, err := getAccount(tx, vm.AccountID)
			if err != nil {
				return err
			}
			old, err := tx.Backups(vm.ID)
			if err != nil {
				return err
			}
			o.in.Prune = toRemove(applyRetention(append(old, bks[i]), acct.Entitlements.BackupRetention))
			for _, b := range old {
				if !slices.Contains(o.in.Prune, b.ID) {
					kept[o] = append(kept[o], b.ID)
				}
			}
		}
		return nil
	}); err != nil {
		// Kept for now: the next backup of each VM plans again.
		a.log.Warn("cannot plan retention for a batch of scheduled backups; the next backups prune", "err", err)
		for _, o := range taken {
			o.in.Prune = nil
		}
	}

	// Rows, next backup times, events and steps, in one transaction.
	for _, o := range taken {
		o.reach("saved", 80)
	}
	err = a.update(bg, func(tx *store.Tx) error {
		for i, o := range taken {
			bk := bks[i]
			vm, err := getVM(tx, bk.VMID)
			if err != nil {
				return err
			}
			if err := tx.PutBackup(bk); err != nil {
				return err
			}
			vm.NextBackupAt = nextBackupAt(vm.ID, bk.TakenAt)
			if err := tx.PutVM(vm); err != nil {
				return err
			}
			if err := event(tx, bk.TakenAt, "backup.taken", bk.ID, vm.AccountID, "%s backup %s of %s taken (%s)", bk.Kind, bk.ID, vm.ID, bk.Consistency); err != nil {
				return err
			}
			if err := o.recordIn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		for _, o := range taken {
			// Not saved after all: the record must not say it was.
			o.in.Steps = o.in.Steps[:len(o.in.Steps)-1]
			o.unrecorded = o.unrecorded[:len(o.unrecorded)-1]
			o.rec.Step = o.in.Steps[len(o.in.Steps)-1]
			fail(o, categorised(err, "record step saved"))
		}
		return a.failScheduled(ctx, now, failed)
	}
	for _, o := range taken {
		o.recorded()
	}

	// Pruning: the subvolumes first, with one commit, then the rows.
	var refs []btrfs.BackupRef
	owner := []*op{}
	for _, o := range taken {
		for _, id := range o.in.Prune {
			refs = append(refs, btrfs.BackupRef{VM: o.rec.VMID, Backup: id})
			owner = append(owner, o)
		}
	}
	pruneFailed := map[*op]error{}
	for i, err := range a.pool.DeleteBackupList(bg, refs) {
		if err != nil && !isPoolNotFound(err) {
			pruneFailed[owner[i]] = errors.Join(pruneFailed[owner[i]], err)
		}
	}
	for o, err := range pruneFailed {
		o.log.Warn("pruning scheduled backups failed; the next backup tries again", "err", err)
	}
	for _, o := range taken {
		if len(o.in.Prune) > 0 && pruneFailed[o] == nil {
			o.reach("pruned", 95)
		}
	}
	sizes := a.backupSizes(bg, taken, kept)
	for _, o := range taken {
		_ = o.end(nil)
	}
	uerr := a.update(bg, func(tx *store.Tx) error {
		for _, o := range taken {
			if len(o.in.Prune) > 0 && pruneFailed[o] == nil {
				if err := a.dropBackupRows(tx, o.rec.VMID, o.in.Prune); err != nil {
					return err
				}
			}
			if err := resizeBackups(tx, sizes[o]); err != nil {
				return err
			}
			if err := o.endIn(tx); err != nil {
				return err
			}
		}
		return nil
	})
	for i, o := range taken {
		if err := o.ended(nil, uerr); err != nil {
			failed[o.rec.VMID] = err
		} else {
			o.log.Info("backup taken", "backup", o.rec.BackupID, "consistency", bks[i].Consistency, "frozen_for", o.frozen)
		}
		o.release()
	}
	return a.failScheduled(ctx, now, failed)
}

// beginBackups begins a scheduled backup operation on each VM of ids that
// is live and not busy with another operation, in one transaction, and
// returns them, each holding its VM's lock. The others are left out: the
// next pass sees them.
func (a *Appliance) beginBackups(ctx context.Context, ids []string) ([]*op, error) {
	// Counted before anything is recorded, under the lock Close takes to
	// stop new operations (see begin).
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return nil, unavailablef("superjoltd is shutting down; try again once it is back")
	}
	a.opsWG.Add(len(ids))
	a.mu.Unlock()
	begun := 0
	defer func() { a.opsWG.Add(begun - len(ids)) }()

	ctx = context.WithoutCancel(ctx)
	opIDs := make([]string, len(ids))
	if err := a.update(ctx, func(tx *store.Tx) error {
		for i := range ids {
			var err error
			if opIDs[i], err = tx.NewID(model.KindOperation); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return nil, categorised(err, "record the operations")
	}
	var locked []int
	for i, id := range ids {
		if a.lock(id, opIDs[i]) == nil {
			locked = append(locked, i)
		}
	}
	var ops []*op
	err := a.update(ctx, func(tx *store.Tx) error {
		ops = ops[:0]
		now := a.clock.Now()
		for _, i := range locked {
			vm, err := tx.VM(ids[i])
			if errors.Is(err, model.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if vm.State != model.StateRunning && vm.State != model.StateStopped {
				continue // no longer live
			}
			o := &op{a: a, done: make(chan struct{}), account: vm.AccountID,
				in: intent{Steps: []string{"recorded"}, BackupKind: model.Scheduled, Consistency: model.Offline}}
			if vm.State == model.StateRunning {
				o.in.Consistency = model.Frozen
			}
			o.rec = model.Operation{ID: opIDs[i], Kind: model.OpBackup, VMID: vm.ID, State: model.OpRunning, Step: "recorded", StartedAt: now}
			if o.rec.BackupID, err = tx.NewID(model.KindBackup); err != nil {
				return err
			}
			raw, err := json.Marshal(o.in)
			if err != nil {
				return err
			}
			o.rec.Intent = raw
			if err := tx.PutOperation(o.rec); err != nil {
				return err
			}
			if err := event(tx, now, "op.started", o.rec.ID, o.account, "%s of %s started", o.rec.Kind, o.rec.VMID); err != nil {
				return err
			}
			ops = append(ops, o)
		}
		return nil
	})
	if err != nil {
		ops = nil
	}
	mine := map[string]bool{}
	for _, o := range ops {
		mine[o.rec.VMID] = true
	}
	for _, i := range locked {
		if !mine[ids[i]] {
			a.unlock(ids[i], opIDs[i])
		}
	}
	if err != nil {
		return nil, categorised(err, "start the operations")
	}
	begun = len(ops)
	for _, o := range ops {
		a.started(o)
		o.allowCancel()
	}
	return ops, nil
}

// shuttingDown reports whether Close has begun: the daily pass stops
// between batches and puts nothing off.
func (a *Appliance) shuttingDown() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closing || a.life.Err() != nil
}

// failScheduled puts off the scheduled backups of the VMs in failed (by
// id, with why) by an hour, with a backup.failed event each, in one
// transaction, and returns their errors.
func (a *Appliance) failScheduled(ctx context.Context, now time.Time, failed map[string]error) []error {
	if len(failed) == 0 {
		return nil
	}
	var errs []error
	for id, err := range failed {
		a.log.Warn("scheduled backup failed; retrying in an hour", "vm", id, "err", err)
		errs = append(errs, err)
	}
	if err := a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		for id, cause := range failed {
			vm, err := tx.VM(id)
			if errors.Is(err, model.ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			vm.NextBackupAt = now.Add(time.Hour)
			if err := tx.PutVM(vm); err != nil {
				return err
			}
			if err := event(tx, now, "backup.failed", id, vm.AccountID, "scheduled backup of %s failed (%v); retrying in an hour", id, cause); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		a.log.Warn("cannot put off failed scheduled backups", "err", err)
	}
	return errs
}

// backupSizes reads what each of the backups kept (by op) holds alone now,
// keyed by op and backup id. A backup whose size cannot be read keeps the
// size it had; the failure is logged. Data a backup shared only with one
// pruned in the same pass counts as shared until the Btrfs cleaner has
// dropped the pruned one (seconds): the next day's figure has it.
func (a *Appliance) backupSizes(ctx context.Context, taken []*op, kept map[*op][]string) map[*op]map[string]int64 {
	type kept1 struct {
		o        *op
		id, path string
	}
	var all []kept1
	var paths []string
	for _, o := range taken {
		for _, id := range kept[o] {
			if p, err := a.pool.BackupPath(o.rec.VMID, id); err == nil {
				all = append(all, kept1{o, id, p})
				paths = append(paths, p)
			}
		}
	}
	us, err := a.pool.Usages(ctx, paths)
	if err != nil {
		a.log.Warn("cannot read the sizes of kept backups; they keep the sizes they had", "backups", len(paths), "err", err)
		return nil
	}
	out := make(map[*op]map[string]int64, len(taken))
	for _, k := range all {
		if u, ok := us[k.path]; ok {
			if out[k.o] == nil {
				out[k.o] = map[string]int64{}
			}
			out[k.o][k.id] = u.Exclusive
		}
	}
	return out
}

// resizeBackups writes the sizes read by backupSizes into the backups'
// rows; a backup deleted meanwhile is left out.
func resizeBackups(tx *store.Tx, sizes map[string]int64) error {
	for id, size := range sizes {
		b, err := tx.Backup(id)
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if b.SizeBytes == size {
			continue
		}
		b.SizeBytes = size
		if err := tx.PutBackup(b); err != nil {
			return err
		}
	}
	return nil
}
