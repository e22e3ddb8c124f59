package appliance

import (
	"context"
	"math/rand/v2"
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

	ledger, err := e.a.Ledger(ctx, acct.ID, MaxLedgerLimit)
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
