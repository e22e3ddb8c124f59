package appliance

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs"
)

// backupStats are measurements of one backup, for logs and benchmarks.
type backupStats struct {
	Frozen time.Duration // from the freeze's answer to the thaw's
	Total  time.Duration
}

// CreateBackup takes an on-demand backup of a running or stopped VM
// (SubmitBackup) and returns it once it is recorded.
func (a *Appliance) CreateBackup(ctx context.Context, vmID string) (model.Backup, error) {
	o, err := a.submitBackup(ctx, vmID, model.OnDemand)
	rec, err := await(ctx, o, err)
	if err != nil {
		return model.Backup{}, err
	}
	return a.Backup(ctx, rec.BackupID)
}

// SubmitBackup starts an on-demand backup of a running or stopped VM: for
// a running VM the agent freezes its filesystems around a read-only
// snapshot (consistency frozen; crash when the agent does not answer); a
// stopped VM is backed up as it is (offline). On-demand backups are kept
// until DeleteBackup. Until its snapshot is taken, the operation can be
// cancelled (CancelOperation), leaving nothing behind.
func (a *Appliance) SubmitBackup(ctx context.Context, vmID string) (model.Operation, error) {
	return accepted(a.submitBackup(ctx, vmID, model.OnDemand))
}

// takeBackup runs a backup of kind on vmID to its end, with its
// measurements, for benchmarks (the daily pass takes scheduled backups in
// batches: dailypass.go).
func (a *Appliance) takeBackup(ctx context.Context, vmID string, kind model.BackupKind) (model.Backup, backupStats, error) {
	t0 := time.Now()
	o, err := a.submitBackup(ctx, vmID, kind)
	rec, err := await(ctx, o, err)
	if err != nil {
		return model.Backup{}, backupStats{}, err
	}
	st := backupStats{Frozen: o.frozen, Total: time.Since(t0)}
	bk, err := a.Backup(ctx, rec.BackupID)
	return bk, st, err
}

// Backup returns one backup.
func (a *Appliance) Backup(ctx context.Context, id string) (model.Backup, error) {
	if err := model.ValidateID(model.KindBackup, id); err != nil {
		return model.Backup{}, err
	}
	var bk model.Backup
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		bk, err = getBackup(tx, id)
		return err
	})
	return bk, categorised(err, "read the backup")
}

// submitBackup begins and launches a backup operation of kind on vmID; a
// scheduled one prunes the scheduled backups beyond the account's
// retention after it.
func (a *Appliance) submitBackup(ctx context.Context, vmID string, kind model.BackupKind) (*op, error) {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return nil, err
	}
	vm, err := a.readVM(ctx, vmID)
	if err != nil {
		return nil, err
	}
	if vm.State != model.StateRunning && vm.State != model.StateStopped {
		return nil, stateError(vm, "back it up")
	}
	if err := a.checkPoolSpace(ctx, "back up "+vmID); err != nil { // before freezing the guest for nothing
		return nil, err
	}
	o, err := a.begin(ctx, model.OpBackup, vmID, intent{BackupKind: kind}, func(tx *store.Tx, rec *model.Operation, in *intent) error {
		cur, err := getVM(tx, vmID)
		if err != nil {
			return err
		}
		if cur.State != model.StateRunning && cur.State != model.StateStopped {
			return stateError(cur, "back it up")
		}
		if rec.BackupID, err = tx.NewID(model.KindBackup); err != nil {
			return err
		}
		in.Consistency = model.Offline
		if cur.State == model.StateRunning {
			in.Consistency = model.Frozen
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	o.allowCancel()
	return a.launch(o, func(ctx context.Context) error { return a.runBackup(ctx, o, kind) }), nil
}

// runBackup freezes the guest (when it runs), snapshots its disk, thaws it
// and records the backup.
func (a *Appliance) runBackup(ctx context.Context, o *op, kind model.BackupKind) error {
	vmID, bkID := o.rec.VMID, o.rec.BackupID
	if err := a.snapshotBackup(ctx, o); err != nil {
		return o.finish(err, nil)
	}
	// The steps of the snapshot, written once the guest is thawed: a
	// follower sees them before the backup is saved. (The daily pass
	// writes them with the save, for a batch of VMs at once.)
	if err := o.record(nil); err != nil {
		return o.finish(err, nil)
	}
	bg := context.WithoutCancel(ctx)
	bk, err := a.saveBackup(bg, o, vmID, bkID, kind, o.in.Consistency)
	if err != nil {
		return o.finish(err, nil)
	}
	if kind == model.Scheduled {
		if err := a.prune(bg, o); err != nil {
			o.log.Warn("pruning scheduled backups failed; the next backup tries again", "err", err)
		}
	}
	if err := o.finish(nil, nil); err != nil {
		return err
	}
	o.log.Info("backup taken", "backup", bkID, "consistency", bk.Consistency, "size_bytes", bk.SizeBytes, "frozen_for", o.frozen)
	return nil
}

// snapshotBackup takes the snapshot of backup operation o: for a running
// VM whose agent answers, its filesystems are frozen just around the
// snapshot ioctl and thawed the moment it returns (consistency frozen;
// crash when the agent does not answer). It reaches the steps frozen (when
// the freeze held), snapshot and thawed without writing them: nothing waits
// on the store while the guest is frozen. Until the snapshot, the operation
// can be cancelled, leaving nothing behind. On error nothing is on disk and
// the guest is thawed; the caller finishes o.
//
// A crash after the snapshot and before its steps are written leaves a
// snapshot that recovery keeps, as crash-consistent: it cannot tell that
// the freeze held, and never claims one it cannot prove.
func (a *Appliance) snapshotBackup(ctx context.Context, o *op) error {
	vmID, bkID := o.rec.VMID, o.rec.BackupID
	log := o.log.With("backup", bkID)
	// The guest must never stay frozen because of what happens to this
	// operation: thawing is bounded on its own, off the operation's context.
	bg := context.WithoutCancel(ctx)

	var ag Agent
	if o.in.Consistency == model.Frozen {
		ag = a.agent(vmID)
	}
	frozen := false
	var frozenAt time.Time
	if ag != nil {
		fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		fr, ferr := ag.Freeze(fctx, FreezeDeadline)
		cancel()
		switch {
		case ferr == nil:
			frozen, frozenAt = true, time.Now()
			if len(fr.Skipped) > 0 {
				log.Warn("the agent could not freeze every filesystem; those it skipped are crash-consistent in this backup", "skipped", fr.Skipped)
			}
		case ctx.Err() != nil:
			// Cancelled (or out of time) while the agent froze: it may
			// have, so thaw below.
			frozen, frozenAt = true, time.Now()
		default:
			log.Warn("agent did not freeze; taking a crash-consistent backup", "err", ferr)
		}
	}
	thaw := func() {
		if !frozen {
			return
		}
		tctx, cancel := context.WithTimeout(bg, 10*time.Second)
		defer cancel()
		if err := ag.Thaw(tctx); err != nil {
			log.Warn("agent did not thaw; it thaws by itself at its deadline", "err", err, "deadline", FreezeDeadline)
		}
		o.frozen = time.Since(frozenAt)
		frozen = false
	}
	// The snapshot is the point of no return: a cancel before it leaves
	// nothing behind.
	a.testPoint(ctx, "backup:cancellable")
	if err := o.pointOfNoReturn(); err != nil {
		thaw()
		return err
	}
	if err := ctx.Err(); err != nil {
		thaw()
		return fmt.Errorf("%w: %s ran out of time before its snapshot: %v", model.ErrUnavailable, o.rec.ID, err)
	}
	if o.in.Consistency == model.Frozen && !frozenAt.IsZero() {
		o.reach("frozen", 20)
	} else if o.in.Consistency == model.Frozen {
		o.in.Consistency = model.Crash
	}

	if _, err := a.pool.Backup(bg, vmID, bkID); err != nil {
		thaw()
		return a.noSpaceOr(bg, err, "back up "+vmID, unavailablef("cannot snapshot the disk of %s: %v", vmID, err))
	}
	o.reach("snapshot", 50)
	if !frozenAt.IsZero() {
		thaw()
		o.reach("thawed", 60)
	}
	return nil
}

// recoverBackup ends a backup the daemon left unfinished, looking at the
// pool, not at how far its steps were written. A snapshot that exists is
// kept and recorded (consistency frozen only if the freeze was recorded,
// else crash: the steps are written after the thaw, so a crash right after
// a frozen snapshot records it as crash-consistent), and retention pruning
// planned before the crash is finished; with no snapshot it is rolled back.
// A scheduled backup of a batch (dailypass.go) is recovered alone, like any
// other. The guest cannot stay
// frozen: its process died with the daemon (or is killed before the VM
// boots again), and the agent thaws by itself at its deadline anyway; a
// thaw is still sent if an agent answers.
func (a *Appliance) recoverBackup(ctx context.Context, rec model.Operation, in intent) (recovery, error) {
	id, bkID := rec.VMID, rec.BackupID
	r := recovery{final: model.OpDone}
	var have bool
	if err := a.view(ctx, func(tx *store.Tx) error {
		_, err := tx.Backup(bkID)
		have = err == nil
		if errors.Is(err, model.ErrNotFound) {
			return nil
		}
		return err
	}); err != nil {
		return r, err
	}
	snaps, err := a.pool.Backups(ctx, id)
	if err != nil {
		return r, fmt.Errorf("cannot list the backups of %s in the pool, so cannot tell whether its snapshot was taken: %w", id, err)
	}
	onDisk := slices.Contains(snaps, bkID)
	switch {
	case have:
		for _, p := range in.Prune {
			if err := a.pool.DeleteBackup(ctx, id, p); err != nil && !isPoolNotFound(err) {
				return r, err
			}
		}
		r.also = func(tx *store.Tx) error { return a.dropBackupRows(tx, id, in.Prune) }
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
			if u, err := a.pool.Usage(ctx, p); err == nil {
				bk.SizeBytes = u.Exclusive
			}
		}
		r.also = func(tx *store.Tx) error {
			vm, err := tx.VM(id)
			if errors.Is(err, model.ErrNotFound) {
				return nil // the sweep sets the snapshot aside
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
		r.final = model.OpRolledBack
	}
	if ag := a.agent(id); ag != nil && in.did("frozen") {
		tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = ag.Thaw(tctx)
		cancel()
	}
	return r, nil
}

// saveBackup records the backup row of a snapshot that exists, and (for a
// scheduled one) plans which older scheduled backups retention drops, in
// the step "saved".
func (a *Appliance) saveBackup(ctx context.Context, o *op, vmID, bkID string, kind model.BackupKind, cons model.Consistency) (model.Backup, error) {
	bk := model.Backup{ID: bkID, VMID: vmID, Kind: kind, TakenAt: a.clock.Now(), Consistency: cons}
	if cons == model.Frozen && o.frozen > 0 {
		bk.FrozenMS = max(o.frozen.Milliseconds(), 1)
	}
	if p, err := a.pool.BackupPath(vmID, bkID); err == nil {
		if u, err := a.pool.Usage(context.WithoutCancel(ctx), p); err == nil {
			bk.SizeBytes = u.Exclusive
		} else {
			a.log.Warn("cannot read the size of a backup", "vm", vmID, "backup", bkID, "err", err)
		}
	}
	if kind == model.Scheduled {
		var verdicts []retentionVerdict
		if err := a.view(ctx, func(tx *store.Tx) error {
			vm, err := getVM(tx, vmID)
			if err != nil {
				return err
			}
			acct, err := getAccount(tx, vm.AccountID)
			if err != nil {
				return err
			}
			bks, err := tx.Backups(vmID)
			if err != nil {
				return err
			}
			verdicts = applyRetention(append(bks, bk), acct.Entitlements.BackupRetention)
			return nil
		}); err != nil {
			return bk, categorised(err, "plan retention")
		}
		o.in.Prune = toRemove(verdicts)
	}
	err := o.step("saved", 80, func(tx *store.Tx) error {
		vm, err := getVM(tx, vmID)
		if err != nil {
			return err
		}
		if err := tx.PutBackup(bk); err != nil {
			return err
		}
		if kind == model.Scheduled {
			vm.NextBackupAt = nextBackupAt(vmID, bk.TakenAt)
			if err := tx.PutVM(vm); err != nil {
				return err
			}
		}
		return event(tx, bk.TakenAt, "backup.taken", bkID, vm.AccountID, "%s backup %s of %s taken (%s)", kind, bkID, vmID, cons)
	})
	return bk, err
}

// prune deletes the scheduled backups the operation planned to drop: their
// subvolumes, then (step "pruned") their rows.
func (a *Appliance) prune(ctx context.Context, o *op) error {
	if len(o.in.Prune) == 0 {
		return nil
	}
	vmID := o.rec.VMID
	var errs []error
	for _, id := range o.in.Prune {
		if err := a.pool.DeleteBackup(context.WithoutCancel(ctx), vmID, id); err != nil && !isPoolNotFound(err) {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	return o.step("pruned", 95, func(tx *store.Tx) error { return a.dropBackupRows(tx, vmID, o.in.Prune) })
}

// dropBackupRows deletes pruned backups' rows, with an event each.
func (a *Appliance) dropBackupRows(tx *store.Tx, vmID string, ids []string) error {
	now := a.clock.Now()
	for _, id := range ids {
		b, err := tx.Backup(id)
		if errors.Is(err, model.ErrNotFound) {
			continue
		}
		if err != nil {
			return err
		}
		if err := tx.DeleteBackup(id); err != nil {
			return err
		}
		acct := ""
		if vm, err := tx.VM(vmID); err == nil {
			acct = vm.AccountID
		}
		if err := event(tx, now, "backup.pruned", id, acct, "scheduled backup %s of %s (taken %s) rolled off by retention", id, vmID, b.TakenAt.UTC().Format(time.RFC3339)); err != nil {
			return err
		}
	}
	return nil
}

// Backups lists a VM's backups, newest first. SizeBytes is what deleting
// each would free now (btrfs exclusive bytes), read fresh from the pool.
func (a *Appliance) Backups(ctx context.Context, vmID string) ([]model.Backup, error) {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return nil, err
	}
	var out []model.Backup
	err := a.view(ctx, func(tx *store.Tx) error {
		if _, err := getVM(tx, vmID); err != nil {
			return err
		}
		var err error
		out, err = tx.Backups(vmID)
		return err
	})
	if err != nil {
		return nil, categorised(err, "list backups")
	}
	out = sortNewestFirst(out)
	for i := range out {
		if p, err := a.pool.BackupPath(vmID, out[i].ID); err == nil {
			if u, err := a.pool.Usage(ctx, p); err == nil {
				out[i].SizeBytes = u.Exclusive
			}
		}
	}
	return out, nil
}

// BackupFilter selects backups across VMs; zero fields select all.
type BackupFilter struct {
	AccountID string           `json:"account_id,omitempty"`
	VMID      string           `json:"vm_id,omitempty"`
	Kind      model.BackupKind `json:"kind,omitempty"`
}

// ListBackups lists the backups of every stored VM (running, stopped, in
// the graveyard or archived) that f selects, ordered by VM id, then newest
// first, in one read of the store: cheap enough for every backup of a box
// with 10,000 VMs. SizeBytes is as recorded when each backup was taken;
// Backups reads it fresh from the pool, one VM at a time. An account or VM
// that does not exist is an error, not an empty list.
func (a *Appliance) ListBackups(ctx context.Context, f BackupFilter) ([]model.Backup, error) {
	if err := validateBackupFilter(f); err != nil {
		return nil, err
	}
	var out []model.Backup
	err := a.view(ctx, func(tx *store.Tx) error {
		if err := backupFilterTargets(tx, f); err != nil {
			return err
		}
		var err error
		out, err = tx.ListBackups(store.BackupFilter{AccountID: f.AccountID, VMID: f.VMID, Kind: f.Kind})
		return err
	})
	if err != nil {
		return nil, categorised(err, "list backups")
	}
	return out, nil
}

// getBackup reads a backup with a helpful not-found error.
func getBackup(tx *store.Tx, id string) (model.Backup, error) {
	b, err := tx.Backup(id)
	return b, notFoundIs(err, "backup %s does not exist; `superjolt backup list VM` shows a VM's backups", id)
}

// DeleteBackup deletes an on-demand backup (SubmitDeleteBackup) and
// returns once it is gone.
func (a *Appliance) DeleteBackup(ctx context.Context, backupID string) error {
	o, err := a.submitDeleteBackup(ctx, backupID)
	_, err = await(ctx, o, err)
	return err
}

// SubmitDeleteBackup starts deleting an on-demand backup: its row, then its
// snapshot. Scheduled backups are refused: retention rolls them off.
func (a *Appliance) SubmitDeleteBackup(ctx context.Context, backupID string) (model.Operation, error) {
	return accepted(a.submitDeleteBackup(ctx, backupID))
}

func (a *Appliance) submitDeleteBackup(ctx context.Context, backupID string) (*op, error) {
	bk, err := a.Backup(ctx, backupID)
	if err != nil {
		return nil, err
	}
	check := func(tx *store.Tx) error {
		b, err := getBackup(tx, backupID)
		if err != nil {
			return err
		}
		if b.Kind == model.Scheduled {
			retention := 0
			if vm, err := tx.VM(b.VMID); err == nil {
				if acct, err := tx.Account(vm.AccountID); err == nil {
					retention = acct.Entitlements.BackupRetention
				}
			}
			return conflictf("%s is a scheduled backup: scheduled backups cannot be deleted by hand, the account's retention (the newest %d per VM) rolls them off; only on-demand backups can be deleted", backupID, retention)
		}
		return nil
	}
	if err := a.view(ctx, check); err != nil {
		return nil, categorised(err, "read the backup")
	}
	o, err := a.begin(ctx, model.OpDeleteBackup, bk.VMID, intent{}, func(tx *store.Tx, rec *model.Operation, _ *intent) error {
		if err := check(tx); err != nil {
			return err
		}
		rec.BackupID = backupID
		return nil
	})
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error {
		// The row goes first: a crash before the subvolume follows leaves
		// a snapshot no row knows, which recovery finishes deleting, never
		// a row without its disk.
		if err := o.step("row-deleted", 50, func(tx *store.Tx) error { return a.dropBackupRow(tx, bk) }); err != nil {
			return o.finish(err, nil)
		}
		return o.finish(a.deleteBackupSnapshot(ctx, bk), nil)
	}), nil
}

// recoverDeleteBackup finishes the deletion of a backup whose row is gone
// (its snapshot goes too); before that, it is rolled back: the backup is
// whole.
func (a *Appliance) recoverDeleteBackup(ctx context.Context, rec model.Operation, in intent) (recovery, error) {
	if !in.did("row-deleted") {
		return recovery{final: model.OpRolledBack}, nil
	}
	return recovery{final: model.OpDone}, a.deleteBackupSnapshot(ctx, model.Backup{ID: rec.BackupID, VMID: rec.VMID})
}

// dropBackupRow deletes a deleted backup's row, with an event.
func (a *Appliance) dropBackupRow(tx *store.Tx, bk model.Backup) error {
	if _, err := tx.Backup(bk.ID); errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err := tx.DeleteBackup(bk.ID); err != nil {
		return err
	}
	acct := ""
	if vm, err := tx.VM(bk.VMID); err == nil {
		acct = vm.AccountID
	}
	return event(tx, a.clock.Now(), "backup.deleted", bk.ID, acct, "on-demand backup %s of %s deleted", bk.ID, bk.VMID)
}

// deleteBackupSnapshot deletes the snapshot of a backup whose row is gone.
func (a *Appliance) deleteBackupSnapshot(ctx context.Context, bk model.Backup) error {
	if err := a.pool.DeleteBackup(context.WithoutCancel(ctx), bk.VMID, bk.ID); err != nil && !isPoolNotFound(err) {
		return fmt.Errorf("backup %s is deleted, but not its snapshot: %w; the next start deletes it", bk.ID, err)
	}
	a.log.Info("backup deleted", "vm", bk.VMID, "backup", bk.ID)
	return nil
}

// ResolveBackup picks the backup of vmID that from names (see
// model.PickBackup): "latest", "yesterday" or a date YYYY-MM-DD (calendar
// days in loc; nil is UTC), or a backup id of this VM.
func (a *Appliance) ResolveBackup(ctx context.Context, vmID, from string, loc *time.Location) (model.Backup, error) {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return model.Backup{}, err
	}
	if err := model.ValidateFrom(from); err != nil {
		return model.Backup{}, err
	}
	var bks []model.Backup
	if err := a.view(ctx, func(tx *store.Tx) error {
		if _, err := getVM(tx, vmID); err != nil {
			return err
		}
		var err error
		bks, err = tx.Backups(vmID)
		return err
	}); err != nil {
		return model.Backup{}, categorised(err, "list backups")
	}
	b, err := model.PickBackup(bks, from, a.clock.Now(), loc)
	if err != nil {
		return b, fmt.Errorf("%s: %w; `superjolt backup list %s` shows its backups", vmID, err, vmID)
	}
	return b, nil
}

// isPoolNotFound reports whether a pool error says the thing is not there.
func isPoolNotFound(err error) bool {
	return errors.Is(err, btrfs.ErrNotFound)
}
