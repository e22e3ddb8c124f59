package appliance

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// What money means here
//
// An account is prepaid: its balance is what it has left, never below zero,
// and always exactly the sum of its ledger (opening top-up, top-ups,
// adjustments, charges). Nothing else moves it.
//
// No debt. Every booking charges min(price, balance): when the balance runs
// out, the last period is charged only what was left, and the rest is
// forgiven. The charge entry says so (Amount is what was taken, Forgiven
// what the period cost beyond it), so the ledger still explains the
// balance, and -Amount + Forgiven of a VM's charges adds up to the exact
// price of the time it billed. We chose this over debt that a top-up pays
// first because a prepaid box has nobody to collect a debt from: an archived
// account that never comes back would carry a negative balance forever
// (after its VMs are reclaimed, for nothing that still exists), and a
// top-up that silently went to an old debt would resume less than the
// operator paid for. What can be forgiven is small: archival follows within
// one BillingPeriod of the balance reaching zero, so at most a period of
// the account's VMs, and only once per run-out, since a resume needs runway.
//
// Runway to resume. A VM comes back from the archive or the graveyard only
// when the balance covers MinResumeRunway (one hour) of what the account
// then burns: the rates of its billing VMs plus this one (resumeRunway). A
// smaller top-up would buy minutes, not a working VM: it would be archived
// again at the next billing pass. The refusal says how much to top up.
//
// Corrections. A mistaken top-up is corrected by an adjustment (Adjust): a
// ledger entry of its own kind, positive or negative, with the operator's
// reason, and an event. History is never edited. An adjustment cannot take
// the balance below zero (no debt) nor above MaxBalance.
//
// The recovery window (retire.go) does not slide: see RecoveryWindow.

// How charges stay exact
//
// A VM is billed over spans: from its creation (or resume) until it stops
// billing (destroy, archive). Over a span of S whole seconds at rate R
// micro-credits per hour it must be charged exactly floor(R*S/3600), however
// many periods the span was booked in, so that nothing is lost or invented.
//
// A period booking (every BillingPeriod, and at stop/start) charges only a
// whole number of "granules": g = 3600/gcd(R, 3600) seconds, the shortest
// stretch whose price R*g/3600 is an integer. It advances BilledUntil by
// exactly the seconds it charged, so the unbilled remainder (less than g
// seconds, plus any fraction of a second) simply stays ahead of BilledUntil
// and is charged by a later booking. The final booking of a span charges
// floor(R*s/3600) for the s whole seconds left and sets BilledUntil to the
// end: the span is rounded down once, at its end. Since R*k*g/3600 is exact,
// the sum over the span telescopes to floor(R*S/3600). For the default tiers
// g is 9 to 18 seconds.

// granule returns g for rate, in seconds.
func granule(rate model.Micro) int64 {
	if rate <= 0 {
		return 1
	}
	a, b := int64(rate), int64(3600)
	for b != 0 {
		a, b = b, a%b
	}
	return 3600 / a
}

// charge returns what a VM at rate owes for [from, to) and the new
// BilledUntil: whole granules only, unless final (the end of a span).
func charge(rate model.Micro, from, to time.Time, final bool) (model.Micro, time.Time) {
	if !to.After(from) {
		if final {
			return 0, maxTime(from, to)
		}
		return 0, from
	}
	secs := int64(to.Sub(from) / time.Second)
	if !final {
		secs -= secs % granule(rate)
	}
	if rate <= 0 || secs <= 0 {
		if final {
			return 0, to
		}
		return 0, from.Add(time.Duration(secs) * time.Second)
	}
	hi, lo := bits.Mul64(uint64(rate), uint64(secs))
	if hi >= 3600 { // more than 2^64 hours of credit: cannot happen with bounded rates
		hi = 3599
	}
	q, _ := bits.Div64(hi, lo, 3600)
	if q > uint64(model.MaxAmount)*1000 {
		q = uint64(model.MaxAmount) * 1000
	}
	if final {
		return model.Micro(q), to
	}
	return model.Micro(q), from.Add(time.Duration(secs) * time.Second)
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// chargeInTx books what vm owes up to now (final: the end of its billed
// span) to its account and ledger, and advances vm.BilledUntil; the caller
// puts vm. A VM that does not bill in its state owes nothing.
func (a *Appliance) chargeInTx(tx *store.Tx, vm *model.VM, now time.Time, final bool) (model.Micro, error) {
	if !vm.State.Bills() {
		return 0, nil
	}
	tier, err := tx.Tier(vm.Tier)
	if err != nil {
		return 0, err
	}
	acct, err := tx.Account(vm.AccountID)
	if err != nil {
		return 0, err
	}
	before := acct.Balance
	amount, err := bookCharge(tx, vm, &acct, tier.RatePerHour, now, final)
	if err != nil || amount == 0 {
		return amount, err
	}
	if err := tx.PutAccount(acct); err != nil {
		return amount, err
	}
	if final {
		// The VM stops billing: the account's burn rate is about to drop,
		// so a warning now could be a false one.
		return amount, nil
	}
	if !mayWarn(acct, before) {
		return amount, nil
	}
	burn, n, err := burnRate(tx, acct.ID)
	if err != nil {
		return amount, err
	}
	return amount, warnLowBalance(tx, now, acct, before, burn, n)
}

// LowBalanceWindow: an account is warned, once, when a charge takes its
// balance below what its billing VMs cost in this long at their rates.
const LowBalanceWindow = 24 * time.Hour

// mayWarn reports whether a charge that took acct's balance from before
// can be one that warnLowBalance warns about: it went down, not to zero.
func mayWarn(acct model.Account, before model.Micro) bool {
	return acct.Balance < before && acct.Balance > 0
}

// warnLowBalance appends an account.low_balance event when a charge took
// acct's balance from before, at or above LowBalanceWindow of its burn
// rate (n billing VMs), to below it. Only the crossing warns: the next
// charges find the balance below already and stay quiet, until a top-up
// lifts it and it drops again. A balance at zero or below warns nothing:
// the archival of the account's VMs says that.
func warnLowBalance(tx *store.Tx, now time.Time, acct model.Account, before, burn model.Micro, n int) error {
	if !mayWarn(acct, before) || burn <= 0 {
		return nil
	}
	threshold := burn * model.Micro(LowBalanceWindow/time.Hour)
	if before < threshold || acct.Balance >= threshold {
		return nil
	}
	// acct.Balance < threshold: no overflow.
	mins := int64(acct.Balance) * 60 / int64(burn)
	return event(tx, now, "account.low_balance", acct.ID, acct.ID,
		"%s has %s credits left, about %dh%02dm at the %s credits/hour of its %d billing VMs; top up with `superjolt account topup %s CREDITS` before they are archived",
		acct.ID, acct.Balance, mins/60, mins%60, burn, n, acct.ID)
}

// burnRate returns what the account's billing VMs cost per hour, and how
// many there are.
func burnRate(tx *store.Tx, acctID string) (model.Micro, int, error) {
	vms, err := tx.VMs(store.VMFilter{AccountID: acctID})
	if err != nil {
		return 0, 0, err
	}
	rates := map[string]model.Micro{}
	var burn model.Micro
	n := 0
	for _, vm := range vms {
		if !vm.State.Bills() {
			continue
		}
		rate, ok := rates[vm.Tier]
		if !ok {
			t, err := tx.Tier(vm.Tier)
			if err != nil {
				return 0, 0, err
			}
			rate, rates[vm.Tier] = t.RatePerHour, t.RatePerHour
		}
		burn += rate
		n++
	}
	return burn, n, nil
}

// bookCharge charges vm to acct (not put) and appends the ledger entry. It
// takes at most the balance: what the period cost beyond it is forgiven,
// and recorded as such in the entry (no debt). It returns what it took.
func bookCharge(tx *store.Tx, vm *model.VM, acct *model.Account, rate model.Micro, now time.Time, final bool) (model.Micro, error) {
	from := vm.BilledUntil
	if from.IsZero() {
		from = vm.CreatedAt
	}
	price, until := charge(rate, from, now, final)
	vm.BilledUntil = until
	if price == 0 {
		return 0, nil
	}
	amount := min(price, max(acct.Balance, 0))
	acct.Balance -= amount
	_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct.ID, At: now, Amount: -amount, Kind: model.Charge,
		VMID: vm.ID, PeriodStart: from, PeriodEnd: until, BalanceAfter: acct.Balance, Forgiven: price - amount})
	return amount, err
}

// MinResumeRunway is how long the balance must last, at the rate the
// account burns once the VM is back, for a resume to be accepted.
const MinResumeRunway = time.Hour

// resumeRunway refuses, with model.ErrInsufficientFunds and the amount to
// top up, to bring vm back unless acct's balance covers MinResumeRunway of
// the rates of its billing VMs plus vm's own.
func resumeRunway(tx *store.Tx, acct model.Account, vm model.VM) error {
	tier, err := tx.Tier(vm.Tier)
	if err != nil {
		return err
	}
	burn, n, err := burnRate(tx, acct.ID)
	if err != nil {
		return err
	}
	burn += tier.RatePerHour
	need := max(burn*model.Micro(MinResumeRunway/time.Hour), 1)
	if acct.Balance >= need {
		return nil
	}
	short := need - max(acct.Balance, 0)
	what := vm.ID + " costs"
	switch {
	case n == 1:
		what = vm.ID + " and the account's other billing VM cost"
	case n > 1:
		what = fmt.Sprintf("%s and the account's %d other billing VMs cost", vm.ID, n)
	}
	return fundsf("account %s has %s credits; resuming %s needs at least an hour of what %s, %s credits (%s credits/hour): top up at least %s credits with `superjolt account topup %s %s`, then `superjolt vm resume %s`",
		acct.ID, acct.Balance, vm.ID, what, need, burn, short, acct.ID, short, vm.ID)
}

// billingChunk bounds the VMs charged in one transaction.
const billingChunk = 200

// billingPass charges every billing VM up to now, then archives the VMs of
// every account whose balance is zero or less.
func (a *Appliance) billingPass(ctx context.Context, now time.Time) error {
	byAcct := map[string][]string{}
	var order []string
	tiers := map[string]model.Micro{}
	burns := map[string]model.Micro{} // what each account's billing VMs cost per hour
	if err := a.view(ctx, func(tx *store.Tx) error {
		ts, err := tx.Tiers()
		if err != nil {
			return err
		}
		for _, t := range ts {
			tiers[t.Name] = t.RatePerHour
		}
		return tx.ForEachVM(func(vm model.VM) error {
			if vm.State.Bills() {
				if _, ok := byAcct[vm.AccountID]; !ok {
					order = append(order, vm.AccountID)
				}
				byAcct[vm.AccountID] = append(byAcct[vm.AccountID], vm.ID)
				burns[vm.AccountID] += tiers[vm.Tier]
			}
			return nil
		})
	}); err != nil {
		return err
	}
	var errs []error
	for _, acctID := range order {
		ids := byAcct[acctID]
		for start := 0; start < len(ids); start += billingChunk {
			chunk := ids[start:min(start+billingChunk, len(ids))]
			err := a.update(ctx, func(tx *store.Tx) error {
				acct, err := tx.Account(acctID)
				if err != nil {
					return err
				}
				before := acct.Balance
				var total model.Micro
				for _, id := range chunk {
					vm, err := tx.VM(id)
					if errors.Is(err, model.ErrNotFound) {
						continue
					}
					if err != nil {
						return err
					}
					if !vm.State.Bills() {
						continue
					}
					rate, ok := tiers[vm.Tier]
					if !ok {
						t, err := tx.Tier(vm.Tier)
						if err != nil {
							return err
						}
						rate = t.RatePerHour
					}
					before := vm.BilledUntil
					amt, err := bookCharge(tx, &vm, &acct, rate, now, false)
					if err != nil {
						return err
					}
					if amt == 0 && vm.BilledUntil.Equal(before) {
						continue
					}
					total += amt
					if err := tx.PutVM(vm); err != nil {
						return err
					}
				}
				if total == 0 {
					return nil
				}
				if err := tx.PutAccount(acct); err != nil {
					return err
				}
				// Each charge is in the ledger (`superjolt account ledger`);
				// events are for what an operator should notice.
				return warnLowBalance(tx, now, acct, before, burns[acctID], len(ids))
			})
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := a.archiveBroke(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// archiveBroke archives every live VM of every account whose balance is
// zero or less.
func (a *Appliance) archiveBroke(ctx context.Context) error {
	var ids []string
	if err := a.view(ctx, func(tx *store.Tx) error {
		accts, err := tx.Accounts()
		if err != nil {
			return err
		}
		for _, acct := range accts {
			if acct.Balance > 0 {
				continue
			}
			vms, err := tx.VMs(store.VMFilter{AccountID: acct.ID})
			if err != nil {
				return err
			}
			for _, vm := range vms {
				if vm.State == model.StateRunning || vm.State == model.StateStopped {
					ids = append(ids, vm.ID)
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		if err := a.archive(ctx, id); err != nil && !errors.Is(err, model.ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
