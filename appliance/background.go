package appliance

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

// runTick is how often Run looks for due work on a real clock.
const runTick = time.Minute

// Run does the background work until ctx ends (or Close): billing every
// BillingPeriod, reclaiming graveyard and archived VMs whose time is up,
// taking each live VM's daily scheduled backup, and the daily history pass
// (history.go). Missed work (the box was
// off) is done at the first pass: one backup per VM, not one per missed day.
func (a *Appliance) Run(ctx context.Context) error {
	for {
		// While AdvanceClock moves a manual clock, it does the work due on
		// the way, each at its own time; a pass here would do it at
		// whatever time the clock shows.
		if a.advancing.Load() == 0 {
			if err := a.runDue(ctx, a.clock.Now()); err != nil && ctx.Err() == nil {
				a.log.Warn("background pass failed; retrying at the next tick", "err", err)
			}
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
// scheduler, then (daily) the history pass. One pass at a time.
func (a *Appliance) runDue(ctx context.Context, now time.Time) error {
	return a.runDueBilling(ctx, now, now)
}

// runDueBilling is runDue, with the billing pass (if one is due by now)
// booked at billAt, at or before now: AdvanceClock books at the last
// billing period's start, as the periodic pass there would have.
func (a *Appliance) runDueBilling(ctx context.Context, now, billAt time.Time) error {
	a.bgMu.Lock()
	defer a.bgMu.Unlock()
	var errs []error
	if !billAt.Before(a.nextBilling) {
		if err := a.billingPass(ctx, billAt); err != nil {
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
	if !now.Before(a.nextHistory) {
		a.nextHistory = now.Add(historyEvery)
		if _, err := a.historyPass(ctx, now); err != nil {
			errs = append(errs, err)
			a.nextHistory = now.Add(time.Hour)
		}
	}
	return errors.Join(errs...)
}

// AdvanceClock moves a manual clock forward by d and, step by step, runs
// the background work that falls due on the way (billing periods, backups,
// reclaims), each at its own time, before returning the new time. It is
// refused (ErrConflict) unless the appliance runs on a *clock.Manual
// (`superjoltd --clock=manual`).
//
// It does not stop at every billing period, only where billing decides
// something (see nextStep): the periods in between are booked in one go.
// Charges telescope (see "How charges stay exact" in billing.go), so each
// account ends with the balance, each VM with the BilledUntil, the archive
// time (to the billing period), the low-balance events and the sum of
// charged and forgiven that 10-minute steps give; the ledger has fewer,
// longer charge entries. `debug clock advance 30d` with 10 VMs takes
// seconds, not the two minutes of 4,320 steps (BenchmarkAdvance30d).
func (a *Appliance) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	m, ok := a.clock.(*clock.Manual)
	if !ok {
		return time.Time{}, conflictf("the clock is the real one; start the daemon with `superjoltd --clock=manual` to move time by hand")
	}
	if d <= 0 || d > model.MaxClockAdvance {
		return time.Time{}, invalidf("cannot advance the clock by %s: give a positive duration of at most %s, like 24h", d, model.MaxClockAdvance)
	}
	a.advancing.Add(1)
	defer a.advancing.Add(-1)
	start := m.Now()
	target := start.Add(d)
	for {
		now := m.Now()
		if !now.Before(target) {
			break
		}
		next, err := a.nextStep(ctx, now, target)
		if err != nil {
			return now, categorised(err, "plan the background work")
		}
		if next.After(target) || !next.After(now) {
			next = target
		}
		m.Advance(next.Sub(now))
		if err := a.runDueBilling(ctx, next, a.lastBillingAt(next)); err != nil {
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

// lastBillingAt returns the start of the last billing period due by t
// (when none is, t: nothing is billed).
func (a *Appliance) lastBillingAt(t time.Time) time.Time {
	a.bgMu.Lock()
	next := a.nextBilling
	a.bgMu.Unlock()
	if t.Before(next) {
		return t
	}
	return next.Add(t.Sub(next) / BillingPeriod * BillingPeriod)
}

// nextStep returns where AdvanceClock, at now, stops next on its way to
// target: the earliest of the next backup or reclaim due, target, and the
// first billing period start at which billing may decide something. Only
// there does billing need a step of its own; the periods before are booked
// at the step after them, at their last period start (lastBillingAt),
// which charges what the periods would have (the charges telescope).
//
// Billing decides something when an account's balance reaches zero (its
// VMs are archived) or falls below LowBalanceWindow of its burn rate (a
// warning). Both are predicted from each billing VM's rate and
// BilledUntil: the predicted charge by t, floor(rate × whole seconds
// since BilledUntil / 3600), is never less than what the periods will
// charge by t, so the predicted period is never later than the true one.
// When it is earlier, the step there books and predicts again.
func (a *Appliance) nextStep(ctx context.Context, now, target time.Time) (time.Time, error) {
	a.bgMu.Lock()
	grid := a.nextBilling
	a.bgMu.Unlock()
	if !grid.After(now) {
		// Overdue (the clock was moved by other means): the next step
		// books it, at the last period start it reaches.
		grid = grid.Add((now.Sub(grid)/BillingPeriod + 1) * BillingPeriod)
	}
	next := target
	err := a.view(ctx, func(tx *store.Tx) error {
		err := tx.ForEachVM(func(vm model.VM) error {
			var t time.Time
			switch vm.State {
			case model.StateRunning, model.StateStopped:
				t = vm.NextBackupAt
				if !t.After(now) {
					// Still due: busy at the last pass. The periodic
					// passes would try again at the next one.
					t = grid
				}
			case model.StateGraveyard, model.StateArchived:
				t = vm.ReclaimAt
			}
			if t.After(now) && t.Before(next) {
				next = t
			}
			return nil
		})
		if err != nil || next.Before(grid) {
			return err
		}
		bill, ok, err := billingDecides(tx, grid, next)
		if err == nil && ok {
			next = bill
		}
		return err
	})
	return next, err
}

// billingDecides returns the first billing period start in [first, until]
// (first is one, the others follow every BillingPeriod) at which a
// billing pass may take an account's balance to zero or below its
// low-balance threshold, or archive the VMs of one already at zero; ok is
// false when there is none.
func billingDecides(tx *store.Tx, first, until time.Time) (time.Time, bool, error) {
	type vmRate struct {
		rate model.Micro
		from time.Time
	}
	tiers := map[string]model.Micro{}
	ts, err := tx.Tiers()
	if err != nil {
		return time.Time{}, false, err
	}
	for _, t := range ts {
		tiers[t.Name] = t.RatePerHour
	}
	periods := int64(until.Sub(first) / BillingPeriod) // the last one's index
	best := periods + 1
	var vms []vmRate
	var burn model.Micro
	decide := func(acctID string) error {
		defer func() { vms, burn = vms[:0], 0 }()
		if len(vms) == 0 || best == 0 {
			return nil
		}
		acct, err := tx.Account(acctID)
		if err != nil {
			return err
		}
		// A pass at period k decides something if the balance left then
		// is under floor: zero or less, or (from at or above it) below
		// the low-balance threshold.
		floor := model.Micro(1)
		if threshold := burn * model.Micro(LowBalanceWindow/time.Hour); acct.Balance >= threshold && threshold > 0 {
			floor = threshold
		}
		charged := func(k int64) model.Micro {
			at := first.Add(time.Duration(k) * BillingPeriod)
			var sum model.Micro
			for _, v := range vms {
				c, _ := charge(v.rate, v.from, at, true)
				sum += c
			}
			return sum
		}
		if acct.Balance-charged(min(best-1, periods)) >= floor {
			return nil // not before the best found so far
		}
		lo, hi := int64(0), min(best-1, periods) // the first k in [lo, hi] that decides
		for lo < hi {
			mid := lo + (hi-lo)/2
			if acct.Balance-charged(mid) < floor {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		best = lo
		return nil
	}
	cur := ""
	err = tx.ForEachBilling("", store.BillingCursor{}, func(b store.Billing) error {
		if b.AccountID != cur {
			if err := decide(cur); err != nil {
				return err
			}
			cur = b.AccountID
		}
		if !b.Bills {
			return nil
		}
		rate, ok := tiers[b.Tier]
		if !ok {
			return fmt.Errorf("VM %s has tier %q, which does not exist", b.VMID, b.Tier)
		}
		from := b.BilledUntil
		if from.IsZero() {
			from = b.CreatedAt
		}
		vms = append(vms, vmRate{rate, from})
		burn += rate
		return nil
	})
	if err == nil {
		err = decide(cur)
	}
	if err != nil || best > periods {
		return time.Time{}, false, err
	}
	return first.Add(time.Duration(best) * BillingPeriod), true, nil
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
