package appliance

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestChargeTelescopes checks the arithmetic: however a span is cut into
// period bookings, the charges add up to floor(rate * whole seconds / 3600),
// and BilledUntil never passes the time booked to.
func TestChargeTelescopes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	rates := []model.Micro{0, 1, 7, 3599, 3600, 5_000, 10_000, 40_000, 160_000, 999_983, 123_456_789}
	for _, rate := range rates {
		for trial := range 200 {
			start := t0.Add(time.Duration(rng.Int64N(int64(time.Hour))))
			at, until := start, start
			var total model.Micro
			n := 1 + rng.IntN(50)
			for i := range n {
				at = at.Add(time.Duration(rng.Int64N(int64(20 * time.Minute))))
				final := i == n-1
				amt, next := charge(rate, until, at, final)
				if amt < 0 {
					t.Fatalf("rate %d: negative charge %d", rate, amt)
				}
				if next.After(at) || next.Before(until) {
					t.Fatalf("rate %d: BilledUntil moved from %v to %v, booking to %v", rate, until, next, at)
				}
				total += amt
				until = next
			}
			secs := int64(at.Sub(start) / time.Second)
			want := model.Micro(int64(rate) * secs / 3600)
			if total != want {
				t.Fatalf("rate %d trial %d: %d bookings over %ds charged %d, want exactly %d", rate, trial, n, secs, total, want)
			}
			if !until.Equal(at) {
				t.Fatalf("rate %d: a final booking must bill up to its end", rate)
			}
		}
	}
}

func TestGranule(t *testing.T) {
	tests := []struct {
		rate model.Micro
		want int64
	}{{5_000, 18}, {10_000, 9}, {40_000, 9}, {160_000, 9}, {3600, 1}, {7, 3600}, {0, 1}}
	for _, tt := range tests {
		g := granule(tt.rate)
		if g != tt.want {
			t.Errorf("granule(%d) = %d, want %d", tt.rate, g, tt.want)
		}
		if int64(tt.rate)*g%3600 != 0 {
			t.Errorf("granule(%d) = %d does not cost a whole number of micro-credits", tt.rate, g)
		}
	}
}

// TestBillingExact runs VMs through periods, stops, starts and a destroy
// on the manual clock and checks the ledger against the exact figure, and
// the balance against the ledger. VM processes are the stub's: this test
// is about money (TestRealLifecycle bills a stopped real VM).
func TestBillingExact(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	const opening = 1_000 * model.Credit
	acct := e.account("billing", opening, 0)
	vm := e.vm(acct.ID)
	created := e.clk.Now()
	e.clk.Advance(1234567 * time.Microsecond) // a ragged start, off the second
	vm2 := e.vm(acct.ID)
	created2 := e.clk.Now()

	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 40 {
		e.advance(time.Duration(rng.Int64N(int64(47 * time.Minute))))
		switch i % 10 {
		case 3:
			if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
		case 7:
			if _, err := e.a.StartVM(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
		}
	}
	e.clk.Advance(777 * time.Millisecond)
	if _, err := e.a.DestroyVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	end := e.clk.Now()
	// The destroyed VM bills nothing more.
	e.advance(5 * time.Hour)
	if _, err := e.a.DestroyVM(ctx, vm2.ID); err != nil {
		t.Fatal(err)
	}
	end2 := e.clk.Now()

	ledger, err := e.a.Ledger(ctx, acct.ID, model.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	charged := map[string]model.Micro{}
	var sum model.Micro
	for _, l := range ledger {
		sum += l.Amount
		if l.Kind == model.Charge {
			charged[l.VMID] -= l.Amount
			if l.PeriodEnd.After(end2) {
				t.Errorf("charge for a period ending %v, after the last destroy", l.PeriodEnd)
			}
		}
	}
	rate := model.DefaultTiers()[0].RatePerHour // nano
	for _, c := range []struct {
		id         string
		start, end time.Time
	}{{vm.ID, created, end}, {vm2.ID, created2, end2}} {
		want := model.Micro(int64(rate) * int64(c.end.Sub(c.start)/time.Second) / 3600)
		if charged[c.id] != want {
			t.Errorf("%s charged %d, want exactly %d (%s at %d/h)", c.id, charged[c.id], want, c.end.Sub(c.start), rate)
		}
	}
	got, err := e.a.Account(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Balance != sum {
		t.Errorf("balance %d, ledger sums to %d", got.Balance, sum)
	}
	if got.Balance != opening-charged[vm.ID]-charged[vm2.ID] {
		t.Errorf("balance %d, want %d", got.Balance, opening-charged[vm.ID]-charged[vm2.ID])
	}
}

// TestBillingEvents: charges go to the ledger only, not to the event
// stream; an account is warned once when its balance drops below a day of
// its VMs' cost, again only after a top-up lifted it and it dropped again,
// and not when it runs out (the archival says that).
func TestBillingEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	rate := model.DefaultTiers()[0].RatePerHour // nano: 0.005 credits/hour
	day := 24 * rate
	// 30 hours of credit: the warning is due after 6 hours.
	acct := e.account("thrifty", 30*rate, 0)
	vm := e.vm(acct.ID)
	other := e.account("rich", 1000*model.Credit, 0)
	e.vm(other.ID)

	e.advance(5*time.Hour + 50*time.Minute)
	if w := e.eventsOfType("account.low_balance"); len(w) != 0 {
		t.Fatalf("warned with a day and more left: %+v", w)
	}
	e.advance(20 * time.Minute)
	w := e.eventsOfType("account.low_balance")
	if len(w) != 1 || w[0].Object != acct.ID || !strings.Contains(w[0].Message, "superjolt account topup "+acct.ID) {
		t.Fatalf("after crossing a day of credit: warnings %+v, want one for %s", w, acct.ID)
	}
	got, _ := e.a.Account(ctx, acct.ID)
	if got.Balance >= day || got.Balance < day-rate {
		t.Fatalf("balance %s at the warning, want just under a day's %s", got.Balance, day)
	}
	e.advance(10 * time.Hour)
	if w := e.eventsOfType("account.low_balance"); len(w) != 1 {
		t.Fatalf("warned again while the balance stayed low: %+v", w)
	}

	// A top-up lifts it above a day; dropping below again warns again.
	if _, err := e.a.TopUp(ctx, acct.ID, day); err != nil {
		t.Fatal(err)
	}
	e.advance(11 * time.Hour) // 26h50m left
	if w := e.eventsOfType("account.low_balance"); len(w) != 1 {
		t.Fatalf("warned again after a top-up, with more than a day left: %+v", w)
	}
	e.advance(4 * time.Hour) // 22h50m left
	if w := e.eventsOfType("account.low_balance"); len(w) != 2 || w[1].Object != acct.ID {
		t.Fatalf("after a top-up and a new drop: warnings %+v, want a second one", w)
	}
	// Running out archives the VM and warns nothing more.
	e.advance(30 * time.Hour)
	if got := e.getVM(vm.ID); got.State != model.StateArchived {
		t.Fatalf("%s is %s after the credit ran out, want archived", vm.ID, got.State)
	}
	if w := e.eventsOfType("account.low_balance"); len(w) != 2 {
		t.Fatalf("running out warned again: %+v", w)
	}
	if a := e.eventsOfType("vm.archived"); len(a) != 1 || a[0].Object != vm.ID {
		t.Fatalf("vm.archived events %+v, want one for %s", a, vm.ID)
	}

	// Every charge is in the ledger, and none in the events. AdvanceClock
	// books the periods where billing decides nothing in one entry: the
	// rich account's entries chain without a gap over the 61 hours.
	for _, typ := range []string{"billing.charged", "billing.charge"} {
		if evs := e.eventsOfType(typ); len(evs) != 0 {
			t.Errorf("%d %s events: charges belong in the ledger", len(evs), typ)
		}
	}
	for _, a := range []model.Account{acct, other} {
		ledger, err := e.a.Ledger(ctx, a.ID, model.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		var sum model.Micro
		var until time.Time // where the charges after this one start (newest first)
		for _, l := range ledger {
			sum += l.Amount
			if l.Kind != model.Charge || a.ID != other.ID {
				continue
			}
			if !until.IsZero() && !l.PeriodEnd.Equal(until) {
				t.Errorf("%s: a charge ends at %v, the next starts at %v", a.ID, l.PeriodEnd, until)
			}
			until = l.PeriodStart
		}
		cur, _ := e.a.Account(ctx, a.ID)
		if cur.Balance != sum {
			t.Errorf("%s: balance %s, ledger sums to %s", a.ID, cur.Balance, sum)
		}
		if a.ID == other.ID {
			if !until.Equal(t0) || ledger[0].PeriodEnd.Before(e.clk.Now().Add(-time.Minute)) {
				t.Errorf("%s: charges span %v to %v, want the 61 hours from %v", a.ID, until, ledger[0].PeriodEnd, t0)
			}
			if want := -price(rate, t0, ledger[0].PeriodEnd); sum-1000*model.Credit != want {
				t.Errorf("%s: charged %s, want %s", a.ID, sum-1000*model.Credit, want)
			}
		}
	}
	if w := e.eventsOfType("account.low_balance"); len(w) != 2 {
		t.Errorf("the rich account was warned: %+v", w)
	}
}

// TestLowBalanceOnStop: the charge booked when a VM stops warns too when
// it is the one that crosses a day of credit.
func TestLowBalanceOnStop(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	rate := model.DefaultTiers()[0].RatePerHour
	acct := e.account("stopper", 24*rate+100, 0) // 72 s more than a day
	vm := e.vm(acct.ID)
	e.clk.Advance(5 * time.Minute) // no billing pass: only the stop charges
	if w := e.eventsOfType("account.low_balance"); len(w) != 0 {
		t.Fatalf("warned before any charge: %+v", w)
	}
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if w := e.eventsOfType("account.low_balance"); len(w) != 1 || w[0].Object != acct.ID {
		t.Fatalf("after a stop crossed a day of credit: warnings %+v, want one for %s", w, acct.ID)
	}
	ledger, _ := e.a.Ledger(ctx, acct.ID, 10)
	if len(ledger) == 0 || ledger[0].Kind != model.Charge || ledger[0].VMID != vm.ID {
		t.Fatalf("the stop booked no charge: %+v", ledger)
	}
}
