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
// many there are, from their billing rows.
func burnRate(tx *store.Tx, acctID string) (model.Micro, int, error) {
	rates := map[string]model.Micro{}
	var burn model.Micro
	n := 0
	err := tx.ForEachBilling(acctID, store.BillingCursor{}, func(b store.Billing) error {
		if !b.Bills {
			return nil
		}
		rate, ok := rates[b.Tier]
		if !ok {
			t, err := tx.Tier(b.Tier)
			if err != nil {
				return err
			}
			rate, rates[b.Tier] = t.RatePerHour, t.RatePerHour
		}
		burn += rate
		n++
		return nil
	})
	return burn, n, err
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

// billingPass charges every billing VM up to now, then archives the VMs of
// every account whose balance is zero or less.
//
// It is one walk of the VMs' billing rows (store.Billing, vb/: ordered by
// account, some 40 bytes each, no JSON), in as few transactions as hold
// its writes: each Update goes on from where the last one stopped and
// stops when little room is left (store.Tx.Room). Per VM it rewrites that
// row (BilledUntil) and books a ledger entry; per account it puts the
// account once and warns of a low balance (warnLowBalance).
//
// Concurrent changes. The rows are read inside the Update, so each is in
// its conflict set, as is each account it reads. A stop, destroy or
// archive books the VM's final charge (chargeInTx) and puts the VM, which
// rewrites the same row: whichever of the two commits second conflicts and
// runs again on fresh data. If the final charge won, the period finds the
// row no longer billing, or billed until the final charge, and books
// nothing more for it; if the period won, the final charge starts from the
// BilledUntil the period booked. Either way nothing is charged twice and
// the final charge is never missed. A VM created during the walk (a row it
// did not see) is billed from its BilledUntil at the next period.
func (a *Appliance) billingPass(ctx context.Context, now time.Time) error {
	var errs []error
	var after store.BillingCursor
	for {
		var p *period
		err := a.update(ctx, func(tx *store.Tx) error {
			p = &period{tx: tx, now: now, reached: after}
			return p.run(after)
		})
		switch {
		case p == nil:
			errs = append(errs, err)
		case err != nil:
			errs = append(errs, err)
			if ctx.Err() == nil && p.failed != after {
				// The rows of this transaction up to the one that failed
				// are billed at the next period, from their BilledUntil
				// (the charges telescope): the rest must not wait.
				after = p.failed
				continue
			}
		case !p.done && p.reached != after:
			after = p.reached
			continue
		}
		break
	}
	if err := a.archiveBroke(ctx); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// period is one transaction of a billing pass.
type period struct {
	tx    *store.Tx
	now   time.Time
	tiers map[string]model.Micro

	// reached is the last row handled; failed the row being handled when
	// an error stopped the transaction; done: no row is left.
	reached, failed store.BillingCursor
	done, stopped   bool
	rows            int // handled in this transaction

	open    bool          // acct is loaded
	acct    model.Account // the account of the rows being handled
	before  model.Micro   // its balance before this transaction
	whole   bool          // its rows are all handled in this transaction
	burn    model.Micro   // what its billing rows seen here cost per hour
	n       int           // and how many
	charged bool
	pending []model.LedgerEntry
}

// billingRowsPerTx, when positive, bounds the rows a transaction of a
// billing pass handles: tests set it to cut a pass into many.
var billingRowsPerTx = 0

// Room a row may take: its billing row and its ledger entry (JSON, under
// 400 bytes); and what closing an account takes at most (its row, a
// low-balance event, the seq counters).
const (
	rowRoom   = 512
	closeRoom = 4 << 10
)

func (p *period) run(after store.BillingCursor) error {
	ts, err := p.tx.Tiers()
	if err != nil {
		return err
	}
	p.tiers = make(map[string]model.Micro, len(ts))
	for _, t := range ts {
		p.tiers[t.Name] = t.RatePerHour
	}
	p.failed = after
	err = p.tx.ForEachBilling("", after, func(b store.Billing) error {
		bytes, writes := p.tx.Room()
		if bytes < closeRoom+rowRoom*int64(len(p.pending)+1) || writes < int64(len(p.pending))+16 ||
			billingRowsPerTx > 0 && p.rows >= billingRowsPerTx {
			p.stopped = true
			return store.ErrStop
		}
		p.rows++
		p.failed = store.BillingCursor{AccountID: b.AccountID, VMID: b.VMID}
		if !p.open || b.AccountID != p.acct.ID {
			if err := p.closeAccount(); err != nil {
				return err
			}
			acct, err := p.tx.Account(b.AccountID)
			if err != nil {
				return err
			}
			// The cursor's account had rows before it, billed in the
			// transaction before this one.
			whole := b.AccountID != after.AccountID
			p.acct, p.before, p.whole, p.burn, p.n, p.charged, p.open = acct, acct.Balance, whole, 0, 0, false, true
		}
		if err := p.book(b); err != nil {
			return err
		}
		p.reached = p.failed
		return nil
	})
	if err != nil {
		return err
	}
	p.done = !p.stopped
	if p.stopped {
		// Stopped for room: the account's rows after this one are not
		// seen here.
		p.whole = false
	}
	return p.closeAccount()
}

// book charges b's VM up to now, if it bills.
func (p *period) book(b store.Billing) error {
	if !b.Bills {
		return nil
	}
	rate, ok := p.tiers[b.Tier]
	if !ok {
		t, err := p.tx.Tier(b.Tier)
		if err != nil {
			return fmt.Errorf("bill %s: %w", b.VMID, err)
		}
		rate = t.RatePerHour
	}
	p.burn += rate
	p.n++
	from := b.BilledUntil
	if from.IsZero() {
		from = b.CreatedAt
	}
	price, until := charge(rate, from, p.now, false)
	if price == 0 && until.Equal(b.BilledUntil) {
		return nil
	}
	if err := p.tx.SetBilledUntil(b, until); err != nil {
		return err
	}
	if price == 0 {
		return nil
	}
	amount := min(price, max(p.acct.Balance, 0))
	p.acct.Balance -= amount
	p.charged = true
	p.pending = append(p.pending, model.LedgerEntry{AccountID: p.acct.ID, At: p.now, Amount: -amount, Kind: model.Charge,
		VMID: b.VMID, PeriodStart: from, PeriodEnd: until, BalanceAfter: p.acct.Balance, Forgiven: price - amount})
	if len(p.pending) >= 256 {
		return p.flush()
	}
	return nil
}

func (p *period) flush() error {
	err := p.tx.AppendLedgers(p.pending)
	p.pending = p.pending[:0]
	return err
}

// closeAccount books what was charged to the account whose rows were
// being handled.
func (p *period) closeAccount() error {
	if err := p.flush(); err != nil || !p.charged {
		return err
	}
	p.charged = false
	if err := p.tx.PutAccount(p.acct); err != nil {
		return err
	}
	burn, n := p.burn, p.n
	if !p.whole && mayWarn(p.acct, p.before) {
		// Some of its rows are billed in another transaction: the warning
		// needs the rates of them all.
		var err error
		if burn, n, err = burnRate(p.tx, p.acct.ID); err != nil {
			return err
		}
	}
	// Each charge is in the ledger (`superjolt account ledger`); events
	// are for what an operator should notice.
	return warnLowBalance(p.tx, p.now, p.acct, p.before, burn, n)
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
