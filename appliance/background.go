package appliance

import (
	"context"
	"errors"
	"hash/fnv"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

// runTick is how often Run looks for due work on a real clock.
const runTick = time.Minute

// Run does the background work until ctx ends (or Close): billing every
// BillingPeriod, reclaiming graveyard and archived VMs whose time is up, and
// taking each live VM's daily scheduled backup. Missed work (the box was
// off) is done at the first pass: one backup per VM, not one per missed day.
func (a *Appliance) Run(ctx context.Context) error {
	for {
		if err := a.runDue(ctx, a.clock.Now()); err != nil && ctx.Err() == nil {
			a.log.Warn("background pass failed; retrying at the next tick", "err", err)
		}
		t := a.clock.NewTimer(runTick)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-a.life.Done():
			t.Stop()
			return nil
		case <-t.C():
		}
	}
}

// runDue does the work due at now: billing, then the reaper, then the
// scheduler. One pass at a time.
func (a *Appliance) runDue(ctx context.Context, now time.Time) error {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	var errs []error
	if !now.Before(a.nextBilling) {
		if err := a.billingPass(ctx, now); err != nil {
			errs = append(errs, err)
		}
		for !now.Before(a.nextBilling) {
			a.nextBilling = a.nextBilling.Add(BillingPeriod)
		}
	}
	if err := a.reaperPass(ctx, now); err != nil {
		errs = append(errs, err)
	}
	if !now.Before(a.nextPurge) {
		// Hourly is plenty for a grace of days, and spares a listing of
		// every backups directory at each pass.
		if err := a.purgeOrphans(ctx, now); err != nil {
			errs = append(errs, err)
		}
		a.nextPurge = now.Add(time.Hour)
	}
	if err := a.schedulerPass(ctx, now); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// AdvanceClock moves a manual clock forward by d and, step by step, runs
// the background work that falls due on the way (billing periods, backups,
// reclaims), each at its own time, before returning the new time. It is
// refused (ErrConflict) unless the appliance runs on a *clock.Manual
// (`superjoltd --clock=manual`).
func (a *Appliance) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	m, ok := a.clock.(*clock.Manual)
	if !ok {
		return time.Time{}, conflictf("the clock is the real one; start the daemon with `superjoltd --clock=manual` to move time by hand")
	}
	if d <= 0 || d > model.MaxClockAdvance {
		return time.Time{}, invalidf("cannot advance the clock by %s: give a positive duration of at most %s, like 24h", d, model.MaxClockAdvance)
	}
	start := m.Now()
	target := start.Add(d)
	for {
		now := m.Now()
		if !now.Before(target) {
			break
		}
		next, err := a.nextDue(ctx, now)
		if err != nil {
			return now, categorised(err, "plan the background work")
		}
		if next.After(target) || !next.After(now) {
			next = target
		}
		m.Advance(next.Sub(now))
		if err := a.runDue(ctx, next); err != nil {
			a.log.Warn("background work failed while advancing the clock", "at", next, "err", err)
		}
		if err := ctx.Err(); err != nil {
			return m.Now(), categorised(err, "advance the clock")
		}
	}
	now := m.Now()
	_ = a.update(ctx, func(tx *store.Tx) error {
		return event(tx, now, "clock.advanced", "", "", "clock advanced by %s to %s", d, now.UTC().Format(time.RFC3339))
	})
	return now, nil
}

// nextDue returns the earliest time after now at which background work is
// due.
func (a *Appliance) nextDue(ctx context.Context, now time.Time) (time.Time, error) {
	a.bgMu.Lock()
	next := a.nextBilling
	a.bgMu.Unlock()
	err := a.view(ctx, func(tx *store.Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			var t time.Time
			switch vm.State {
			case model.StateRunning, model.StateStopped:
				t = vm.NextBackupAt
			case model.StateGraveyard, model.StateArchived:
				t = vm.ReclaimAt
			}
			if t.After(now) && t.Before(next) {
				next = t
			}
			return nil
		})
	})
	return next, err
}

// backupOffset is where in the UTC day a VM's scheduled backup falls: a
// hash of its id, so that backups spread across the day.
func backupOffset(id string) time.Duration {
	h := fnv.New32a()
	h.Write([]byte(id))
	return time.Duration(h.Sum32()%86400) * time.Second
}

// nextBackupAt is the first time strictly after t at the VM's daily offset.
func nextBackupAt(id string, t time.Time) time.Time {
	day := t.UTC().Truncate(24 * time.Hour)
	next := day.Add(backupOffset(id))
	for !next.After(t) {
		next = next.Add(24 * time.Hour)
	}
	return next
}

// schedulerPass takes the scheduled backup of every live VM whose
// NextBackupAt has come, in batches (see scheduledBackups). A VM busy with
// another operation is tried at the next pass; a failed backup an hour
// later.
func (a *Appliance) schedulerPass(ctx context.Context, now time.Time) error {
	due, err := a.vmIDsWhere(ctx, func(vm model.VM) bool {
		return (vm.State == model.StateRunning || vm.State == model.StateStopped) && !vm.NextBackupAt.After(now)
	})
	if err != nil {
		return err
	}
	return a.scheduledBackups(ctx, now, due)
}

// vmIDsWhere returns the ids of the VMs for which match is true, read in one
// pass over the store.
func (a *Appliance) vmIDsWhere(ctx context.Context, match func(model.VM) bool) ([]string, error) {
	var ids []string
	err := a.view(ctx, func(tx *store.Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			if match(vm) {
				ids = append(ids, vm.ID)
			}
			return nil
		})
	})
	return ids, err
}
