package appliance

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// The money model: what the test itself knows about each account and VM,
// independently of the appliance's bookkeeping.

type moneyAcct struct {
	id string
	in model.Micro // opening balance, top-ups and adjustments: every credit that came in
}

type moneyVM struct {
	id, acct string
	rate     model.Micro
	gone     bool // reclaimed
	live     bool
	// spans holds the price of every billed span that ended; start is where
	// the open one began (live only).
	closed model.Micro
	start  time.Time
	// The recovery episode as the rules state it: the first deadline, and
	// when the VM last came back.
	deadline  time.Time
	resumedAt time.Time
}

// price is what rate costs over [from, to): floor(rate * whole seconds / 3600).
func price(rate model.Micro, from, to time.Time) model.Micro {
	return model.Micro(int64(rate) * int64(to.Sub(from)/time.Second) / 3600)
}

// TestMoneyProperties runs random sequences of top-ups, adjustments,
// charges (the manual clock moving), stops and starts, archives (accounts
// running out) and resumes over a few accounts and VMs. After every step,
// for every account: the balance is the sum of its ledger and never below
// zero; it is every credit that came in less what was taken; what was
// taken plus what was forgiven is, VM by VM, exactly the price of the time
// it billed, computed here from the test's own record; a forgiven
// remainder only ever comes with a balance of zero; and no resume extends a
// reclaim deadline: a VM archived again within the episode gets its first
// deadline back. A resume is accepted exactly when the balance covers an
// hour of the account's burn with the VM back, and a refusal says how much
// to top up.
func TestMoneyProperties(t *testing.T) {
	seeds := []uint64{1, 2, 3}
	steps := 120
	if testing.Short() {
		seeds, steps = seeds[:1], 60
	}
	for _, seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { moneyRun(t, seed, steps) })
	}
}

func moneyRun(t *testing.T, seed uint64, steps int) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 8))
	rates := map[string]model.Micro{}
	var tiers []string
	for _, tr := range model.DefaultTiers() {
		rates[tr.Name] = tr.RatePerHour
		tiers = append(tiers, tr.Name)
	}

	var accts []*moneyAcct
	var vms []*moneyVM
	newVM := func(acct string) {
		t.Helper()
		tier := tiers[rng.IntN(len(tiers))]
		now := e.clk.Now()
		vm, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct, Tier: tier})
		if err != nil {
			t.Fatalf("CreateVM: %v", err)
		}
		vms = append(vms, &moneyVM{id: vm.ID, acct: acct, rate: rates[tier], live: true, start: now})
	}
	// What the run went through, so that it cannot pass by covering nothing.
	var stats struct{ forgiven, refusedResumes, resumes, keptDeadline, refusedAdjust, adjusts int }
	for i := range 3 {
		opening := model.Micro(50_000 + rng.Int64N(400_000)) // 0.05 to 0.45 credits: hours, not days
		a := e.account(fmt.Sprintf("money-%d", i), opening, 0)
		accts = append(accts, &moneyAcct{id: a.ID, in: opening})
		for range 1 + rng.IntN(2) {
			newVM(a.ID)
		}
	}
	balance := func(id string) model.Micro {
		t.Helper()
		a, err := e.a.Account(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return a.Balance
	}
	burn := func(acct string) model.Micro {
		var b model.Micro
		for _, v := range vms {
			if v.acct == acct && v.live {
				b += v.rate
			}
		}
		return b
	}

	// observe reads every VM back after a step: what was archived or
	// reclaimed, and whether its deadline keeps to the episode rule.
	observe := func(step string) {
		t.Helper()
		now := e.clk.Now()
		for _, v := range vms {
			if v.gone {
				continue
			}
			got, err := e.a.VM(ctx, v.id)
			if errors.Is(err, model.ErrNotFound) {
				if v.live {
					// Archived again within its episode after its first
					// deadline had passed: reclaimed in the same step.
					at := lastEvent(e, "vm.archived", v.id).At
					v.closed += price(v.rate, v.start, at)
					v.live = false
					if v.deadline.IsZero() || at.Sub(v.resumedAt) >= RecoveryWindow {
						v.deadline = at.Add(RecoveryWindow)
					} else {
						stats.keptDeadline++
					}
				}
				if now.Before(v.deadline) {
					t.Fatalf("%s: %s reclaimed at %v, before its deadline %v", step, v.id, now, v.deadline)
				}
				v.gone = true
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case v.live && got.State == model.StateArchived:
				at := got.ArchivedAt
				if at.Before(v.start) || at.After(now) {
					t.Fatalf("%s: %s archived at %v, outside [%v, %v]", step, v.id, at, v.start, now)
				}
				if b := balance(v.acct); b != 0 {
					t.Fatalf("%s: %s archived with %s credits left on %s", step, v.id, b, v.acct)
				}
				v.closed += price(v.rate, v.start, at)
				v.live = false
				want := at.Add(RecoveryWindow)
				if !v.deadline.IsZero() && at.Sub(v.resumedAt) < RecoveryWindow {
					want = v.deadline // the same episode: never extended
					stats.keptDeadline++
				}
				if !got.ReclaimAt.Equal(want) {
					t.Fatalf("%s: %s archived at %v (resumed %v, episode deadline %v): ReclaimAt %v, want %v",
						step, v.id, at, v.resumedAt, v.deadline, got.ReclaimAt, want)
				}
				v.deadline = want
			case v.live && !got.State.Live():
				t.Fatalf("%s: %s is %s; only archival takes VMs off the host here", step, v.id, got.State)
			case !v.live && got.State != model.StateArchived:
				t.Fatalf("%s: %s is %s, want archived", step, v.id, got.State)
			case !v.live && !got.ReclaimAt.Equal(v.deadline):
				t.Fatalf("%s: %s's ReclaimAt moved from %v to %v while archived", step, v.id, v.deadline, got.ReclaimAt)
			}
		}
	}

	// check holds the money invariants for every account.
	check := func(step string) {
		t.Helper()
		forgiven := 0
		defer func() { stats.forgiven = forgiven }()
		for _, a := range accts {
			var ledger []model.LedgerEntry
			var acct model.Account
			if err := e.st.View(ctx, func(tx *store.Tx) error {
				var err error
				if acct, err = tx.Account(a.id); err != nil {
					return err
				}
				ledger, err = tx.Ledger(a.id, 0)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			var sum, taken model.Micro
			perVM := map[string]model.Micro{}
			for _, l := range ledger {
				sum += l.Amount
				switch l.Kind {
				case model.Charge:
					if l.Amount > 0 || l.Forgiven < 0 {
						t.Fatalf("%s: %s: charge %+v credits money", step, a.id, l)
					}
					if l.Forgiven > 0 {
						forgiven++
					}
					if l.Forgiven > 0 && l.BalanceAfter != 0 {
						t.Fatalf("%s: %s: %s forgiven with %s left", step, a.id, l.Forgiven, l.BalanceAfter)
					}
					taken -= l.Amount
					perVM[l.VMID] += -l.Amount + l.Forgiven
				case model.Adjustment:
					if strings.TrimSpace(l.Reason) == "" {
						t.Fatalf("%s: %s: adjustment without a reason: %+v", step, a.id, l)
					}
				}
			}
			if acct.Balance != sum {
				t.Fatalf("%s: %s: balance %s, ledger sums to %s", step, a.id, acct.Balance, sum)
			}
			if acct.Balance < 0 {
				t.Fatalf("%s: %s: balance %s below zero", step, a.id, acct.Balance)
			}
			if acct.Balance != a.in-taken {
				t.Fatalf("%s: %s: balance %s, but %s came in and %s was charged: %s made or lost",
					step, a.id, acct.Balance, a.in, taken, acct.Balance-(a.in-taken))
			}
			for _, v := range vms {
				if v.acct != a.id {
					continue
				}
				want := v.closed
				if v.live {
					got := e.getVM(v.id)
					now := e.clk.Now()
					if got.BilledUntil.Before(v.start) || got.BilledUntil.After(now) ||
						now.Sub(got.BilledUntil) >= BillingPeriod+time.Duration(granule(v.rate))*time.Second {
						t.Fatalf("%s: %s billed until %v, span from %v, now %v", step, v.id, got.BilledUntil, v.start, now)
					}
					want += price(v.rate, v.start, got.BilledUntil)
				}
				if perVM[v.id] != want {
					t.Fatalf("%s: %s: charged and forgiven %s, its billed time costs %s", step, v.id, perVM[v.id], want)
				}
			}
		}
	}

	check("start")
	for i := range steps {
		a := accts[rng.IntN(len(accts))]
		var v *moneyVM
		if alive := liveOrArchived(vms); len(alive) > 0 {
			v = alive[rng.IntN(len(alive))]
		}
		var step string
		switch r := rng.IntN(100); {
		case r < 5 && len(liveOrArchived(vms)) < 6:
			if balance(a.id) <= 0 {
				continue
			}
			step = fmt.Sprintf("step %d: create a VM for %s", i, a.id)
			newVM(a.id)
		case r < 15:
			amt := model.Micro(1 + rng.Int64N(300_000))
			step = fmt.Sprintf("step %d: top up %s by %s", i, a.id, amt)
			if _, err := e.a.TopUp(ctx, a.id, amt); err != nil {
				t.Fatalf("%s: %v", step, err)
			}
			a.in += amt
		case r < 30:
			bal := balance(a.id)
			amt := model.Micro(rng.Int64N(2*int64(bal)+200_000) - int64(bal) - 100_000)
			if amt == 0 {
				amt = 1
			}
			step = fmt.Sprintf("step %d: adjust %s (%s) by %s", i, a.id, bal, amt)
			_, err := e.a.Adjust(ctx, a.id, amt, fmt.Sprintf("property step %d", i))
			switch {
			case bal+amt < 0:
				if !errors.Is(err, model.ErrInsufficientFunds) {
					t.Fatalf("%s: %v, want a refusal: no debt", step, err)
				}
				stats.refusedAdjust++
			case err != nil:
				t.Fatalf("%s: %v", step, err)
			default:
				a.in += amt
				stats.adjusts++
			}
		case r < 65:
			d := time.Duration(1+rng.Int64N(300)) * time.Minute
			if rng.IntN(4) == 0 {
				d = time.Duration(1+rng.Int64N(1200)) * time.Second // ragged, under a period
			}
			step = fmt.Sprintf("step %d: advance %s", i, d)
			e.advance(d)
		case r < 75 && v != nil && v.live:
			got := e.getVM(v.id)
			var err error
			if got.State == model.StateRunning {
				step = fmt.Sprintf("step %d: stop %s", i, v.id)
				_, err = e.a.StopVM(ctx, v.id)
			} else {
				step = fmt.Sprintf("step %d: start %s", i, v.id)
				_, err = e.a.StartVM(ctx, v.id)
			}
			if err != nil && !errors.Is(err, model.ErrInsufficientFunds) {
				t.Fatalf("%s: %v", step, err)
			}
		case v != nil && !v.live:
			if rng.IntN(2) == 0 { // often enough, give it something to resume with
				amt := model.Micro(rng.Int64N(int64(burn(v.acct)+v.rate) * 2))
				if amt > 0 {
					if _, err := e.a.TopUp(ctx, v.acct, amt); err != nil {
						t.Fatal(err)
					}
					accts[indexOf(accts, v.acct)].in += amt
				}
			}
			bal := balance(v.acct)
			need := max(burn(v.acct)+v.rate, 1) // an hour of it
			now := e.clk.Now()
			step = fmt.Sprintf("step %d: resume %s (balance %s, need %s)", i, v.id, bal, need)
			_, err := e.a.ResumeVM(ctx, v.id)
			switch {
			case !now.Before(v.deadline) && err != nil:
				// Its deadline passed: the reaper's next pass takes it.
			case bal >= need && err != nil:
				t.Fatalf("%s: %v", step, err)
			case bal < need && err == nil:
				t.Fatalf("%s: accepted with less than an hour of runway", step)
			case bal < need:
				wantMsg := fmt.Sprintf("top up at least %s credits", need-bal)
				if !errors.Is(err, model.ErrInsufficientFunds) || !strings.Contains(err.Error(), wantMsg) {
					t.Fatalf("%s: %v, want insufficient funds saying %q", step, err, wantMsg)
				}
				stats.refusedResumes++
			}
			if err == nil {
				stats.resumes++
				v.live, v.start, v.resumedAt = true, now, now
				if got := e.getVM(v.id); !got.ReclaimAt.IsZero() || !got.RecoveryDeadline.Equal(v.deadline) {
					t.Fatalf("%s: resumed with ReclaimAt %v, RecoveryDeadline %v; want none and %v", step, got.ReclaimAt, got.RecoveryDeadline, v.deadline)
				}
			}
		default:
			step = fmt.Sprintf("step %d: advance a period", i)
			e.advance(BillingPeriod)
		}
		observe(step)
		check(step)
	}
	t.Logf("seed %d: %d VMs; %d resumes (%d refused for runway), %d archived again within their episode, %d charges with money forgiven, %d adjustments (%d refused)",
		seed, len(vms), stats.resumes, stats.refusedResumes, stats.keptDeadline, stats.forgiven, stats.adjusts, stats.refusedAdjust)
	if stats.resumes == 0 || stats.refusedResumes == 0 || stats.keptDeadline == 0 || stats.forgiven == 0 || stats.adjusts == 0 || stats.refusedAdjust == 0 {
		t.Errorf("seed %d covered too little of the rules: %+v", seed, stats)
	}
}

// lastEvent returns the newest event of typ about object.
func lastEvent(e *env, typ, object string) model.Event {
	e.t.Helper()
	var last model.Event
	for _, ev := range e.eventsOfType(typ) {
		if ev.Object == object {
			last = ev
		}
	}
	if last.Seq == 0 {
		e.t.Fatalf("no %s event for %s", typ, object)
	}
	return last
}

func liveOrArchived(vms []*moneyVM) []*moneyVM {
	var out []*moneyVM
	for _, v := range vms {
		if !v.gone {
			out = append(out, v)
		}
	}
	return out
}

func indexOf(accts []*moneyAcct, id string) int {
	for i, a := range accts {
		if a.id == id {
			return i
		}
	}
	panic("no account " + id)
}

// TestMoneyStory walks through issue 8's story with a large VM: the
// balance runs out and stays at zero, the part of the last period it could
// not pay is forgiven in the ledger; a 0.01 top-up does not resume it and
// the refusal says how much would; a real top-up does; archived again, it
// keeps its first deadline, and once reclaimed the balance is still zero
// and the sum of the ledger. A mistaken top-up is taken back by an
// adjustment with its reason.
func TestMoneyStory(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	const rate = 160_000 // large: 0.16 credits an hour
	acct := e.account("story", 100_000, 0)
	vm, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "large"})
	if err != nil {
		t.Fatal(err)
	}
	e.advance(time.Hour) // 0.1 credits last 37.5 minutes
	got := e.getVM(vm.ID)
	if got.State != model.StateArchived {
		t.Fatalf("%s is %s after the balance ran out, want archived", vm.ID, got.State)
	}
	first := got.ReclaimAt
	a, _ := e.a.Account(ctx, acct.ID)
	if a.Balance != 0 {
		t.Fatalf("balance %s after archival, want 0: no debt", a.Balance)
	}
	ledger, _ := e.a.Ledger(ctx, acct.ID, 100)
	var charged, forgiven model.Micro
	for _, l := range ledger {
		if l.Kind == model.Charge {
			charged -= l.Amount
			forgiven += l.Forgiven
		}
	}
	if charged != 100_000 || forgiven <= 0 || charged+forgiven != price(rate, vm.CreatedAt, got.ArchivedAt) {
		t.Fatalf("charged %s and forgave %s for %s of large, want 0.1 and the rest of %s", charged, forgiven,
			got.ArchivedAt.Sub(vm.CreatedAt), price(rate, vm.CreatedAt, got.ArchivedAt))
	}

	if _, err := e.a.TopUp(ctx, acct.ID, 10_000); err != nil {
		t.Fatal(err)
	}
	_, err = e.a.ResumeVM(ctx, vm.ID)
	wantCode(t, err, "insufficient_funds")
	if !strings.Contains(err.Error(), "top up at least 0.15 credits") {
		t.Fatalf("refusal %q does not say to top up 0.15 (an hour of 0.16, less the 0.01 there)", err)
	}
	if _, err := e.a.TopUp(ctx, acct.ID, 150_000); err != nil {
		t.Fatal(err)
	}
	e.clk.Advance(5 * time.Minute)
	if _, err := e.a.ResumeVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	e.advance(2 * time.Hour)
	got = e.getVM(vm.ID)
	if got.State != model.StateArchived || !got.ReclaimAt.Equal(first) {
		t.Fatalf("archived again: state %s, reclaim at %v; want archived, at the first deadline %v", got.State, got.ReclaimAt, first)
	}
	if evs := e.eventsOfType("vm.archived"); len(evs) != 2 || !strings.Contains(evs[1].Message, "a resume does not extend it") {
		t.Fatalf("the second archival does not say its deadline was kept: %+v", evs)
	}

	// A top-up of 50 typed as 500: taken back, with the reason, history kept.
	if _, err := e.a.TopUp(ctx, acct.ID, 500*model.Credit); err != nil {
		t.Fatal(err)
	}
	a, err = e.a.Adjust(ctx, acct.ID, -450*model.Credit, "top-up of 50 typed as 500")
	if err != nil {
		t.Fatal(err)
	}
	if a.Balance != 50*model.Credit {
		t.Fatalf("balance %s after the correction, want 50", a.Balance)
	}
	ledger, _ = e.a.Ledger(ctx, acct.ID, 1)
	if l := ledger[0]; l.Kind != model.Adjustment || l.Amount != -450*model.Credit || l.Reason != "top-up of 50 typed as 500" || l.BalanceAfter != a.Balance {
		t.Fatalf("newest ledger entry %+v, want the adjustment with its reason", l)
	}
	if evs := e.eventsOfType("account.adjusted"); len(evs) != 1 || !strings.Contains(evs[0].Message, "top-up of 50 typed as 500") {
		t.Fatalf("account.adjusted events %+v", evs)
	}
	if _, err := e.a.Adjust(ctx, acct.ID, -50*model.Credit, "back to zero"); err != nil {
		t.Fatal(err)
	}

	e.advance(RecoveryWindow)
	_, err = e.a.VM(ctx, vm.ID)
	wantCode(t, err, "not_found")
	a, _ = e.a.Account(ctx, acct.ID)
	ledger, _ = e.a.Ledger(ctx, acct.ID, model.MaxListLimit)
	var sum model.Micro
	for _, l := range ledger {
		sum += l.Amount
	}
	if a.Balance != 0 || sum != 0 {
		t.Fatalf("after the reclaim: balance %s, ledger sum %s; want 0 and 0", a.Balance, sum)
	}
}

// TestAdjustRefuses: an adjustment needs a non-zero amount, a reason of at
// most model.MaxReasonLen bytes on one line, an account that exists, and
// cannot take the balance below zero; a refused one changes nothing.
func TestAdjustRefuses(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("adjusted", 5*model.Credit, 0)
	tests := []struct {
		name, id string
		amount   model.Micro
		reason   string
		code     string
	}{
		{"zero", acct.ID, 0, "nothing", "invalid"},
		{"no reason", acct.ID, -model.Credit, "", "invalid"},
		{"blank reason", acct.ID, -model.Credit, " \t ", "invalid"},
		{"overlong reason", acct.ID, model.Credit, strings.Repeat("x", model.MaxReasonLen+1), "invalid"},
		{"two lines", acct.ID, model.Credit, "one\ntwo", "invalid"},
		{"absurd", acct.ID, model.MaxAmount + 1, "why not", "invalid"},
		{"below zero", acct.ID, -5*model.Credit - 1, "too much", "insufficient_funds"},
		{"unknown account", "ac-zzzzzz", model.Credit, "ghost", "not_found"},
		{"bad id", "alice", model.Credit, "by name", "invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.a.Adjust(ctx, tt.id, tt.amount, tt.reason)
			wantCode(t, err, tt.code)
		})
	}
	if _, err := e.a.Adjust(ctx, acct.ID, -5*model.Credit, strings.Repeat("y", model.MaxReasonLen)); err != nil {
		t.Fatalf("taking the whole balance back with a reason of the largest length: %v", err)
	}
	ledger, _ := e.a.Ledger(ctx, acct.ID, 10)
	if len(ledger) != 2 {
		t.Fatalf("ledger %+v, want the opening top-up and one adjustment", ledger)
	}
}
