package appliance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// dayTotals is what an account's charges of one VM in one UTC day add up
// to: what folding must keep.
type dayTotals struct {
	amount, forgiven model.Micro
	charges, rows    int
}

// ledgerOf returns the account's whole ledger, newest first, from the store
// (the API caps a list at model.MaxListLimit).
func (e *env) ledgerOf(acct string) []model.LedgerEntry {
	e.t.Helper()
	var es []model.LedgerEntry
	err := e.st.View(context.Background(), func(tx *store.Tx) error {
		var err error
		es, err = tx.Ledger(acct, 0)
		return err
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return es
}

// byVMDay sums an account's charges by "VM day" (UTC) and returns them
// with the sum of every entry.
func byVMDay(es []model.LedgerEntry) (map[string]dayTotals, model.Micro) {
	out := map[string]dayTotals{}
	var sum model.Micro
	for _, l := range es {
		sum += l.Amount
		if l.Kind != model.Charge {
			continue
		}
		k := l.VMID + " " + l.At.UTC().Format(time.DateOnly)
		d := out[k]
		d.amount += l.Amount
		d.forgiven += l.Forgiven
		d.charges += max(l.Charges, 1)
		d.rows++
		out[k] = d
	}
	return out, sum
}

// checkBalances fails unless every account's balance is the sum of its
// ledger.
func (e *env) checkBalances(accts ...string) {
	e.t.Helper()
	for _, id := range accts {
		a, err := e.a.Account(context.Background(), id)
		if err != nil {
			e.t.Fatal(err)
		}
		if _, sum := byVMDay(e.ledgerOf(id)); sum != a.Balance {
			e.t.Fatalf("%s at %s: balance %s, ledger sum %s", id, e.clk.Now().Format(time.RFC3339), a.Balance, sum)
		}
	}
}

// lastHistoryPass returns when the history pass last ran.
func (e *env) lastHistoryPass() time.Time {
	e.a.bgMu.Lock()
	defer e.a.bgMu.Unlock()
	return e.a.nextHistory.Add(-historyEvery)
}

// TestHistoryWindow runs two accounts for 40 days with the default 30-day
// window: one with three VMs and plenty of credit, one that runs out of
// money on day 2 (its last charge partly forgiven) and whose VM is
// reclaimed. Events and finished operations older than the window go, the
// running operation stays, and every charge older than the window is folded
// into one entry per VM and day with the same sums.
func TestHistoryWindow(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	rich := e.account("rich", 100*model.Credit, 0)
	// 40 hours of nano and a bit: its last charge takes the bit and
	// forgives the rest.
	poor := e.account("poor", 200_010, 0)
	vms := []model.VM{e.vm(rich.ID), e.vm(rich.ID), e.vm(rich.ID)}
	poorVM := e.vm(poor.ID)
	// A running operation, as one that takes long would be: never pruned.
	stuck := model.Operation{ID: "op-stuck00001", Kind: model.OpBackup, VMID: vms[0].ID, State: model.OpRunning, StartedAt: t0}
	if err := e.st.Update(ctx, func(tx *store.Tx) error { return tx.PutOperation(stuck) }); err != nil {
		t.Fatal(err)
	}
	defer e.st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteOperation(stuck.ID) })

	// 30 days: nothing is older than the window yet.
	for day := range 30 {
		if day == 3 {
			// A stop and a start book charges of their own.
			if _, err := e.a.StopVM(ctx, vms[1].ID); err != nil {
				t.Fatal(err)
			}
			e.advance(5 * time.Hour)
			if _, err := e.a.StartVM(ctx, vms[1].ID); err != nil {
				t.Fatal(err)
			}
			e.advance(19 * time.Hour)
		} else {
			e.advance(24 * time.Hour)
		}
		e.checkBalances(rich.ID, poor.ID)
	}
	if evs := e.eventsWhere(func(ev model.Event) bool { return ev.Type == "vm.archived" && ev.Object == poorVM.ID }); len(evs) != 1 {
		t.Fatalf("poor's VM archived %d times after its balance ran out, want once", len(evs))
	}
	snapAt := e.clk.Now()
	richBefore, _ := byVMDay(e.ledgerOf(rich.ID))
	poorLedger := e.ledgerOf(poor.ID)
	poorBefore, poorSum := byVMDay(poorLedger)
	var forgiven model.Micro
	for _, d := range poorBefore {
		forgiven += d.forgiven
	}
	if forgiven == 0 || poorSum != 0 {
		t.Fatalf("poor: forgiven %s, ledger sum %s; want some forgiven and nothing left", forgiven, poorSum)
	}
	// poor's VM is archived: nothing is booked to it any more, so what its
	// whole ledger adds up to must not move when its days are folded.
	poorTotals, err := e.a.LedgerTotals(ctx, poor.ID)
	if err != nil {
		t.Fatal(err)
	}
	if poorTotals.Sum != 0 || poorTotals.Forgiven != forgiven || poorTotals.Charges != poorTotals.Entries-1 {
		t.Fatalf("poor's ledger totals %+v; want sum 0, forgiven %s, one entry per charge besides the opening top-up", poorTotals, forgiven)
	}
	richRows := e.ledgerOf(rich.ID)
	if len(e.eventsOfType("history.pruned")) != 0 {
		t.Fatalf("history pruned within the first 30 days")
	}
	var seqBefore uint64
	e.st.View(ctx, func(tx *store.Tx) error { seqBefore, _ = tx.LastEventSeq(); return nil })

	// 10 more days, a day at a time.
	for range 10 {
		e.advance(24 * time.Hour)
		e.checkBalances(rich.ID, poor.ID)
	}
	now := e.clk.Now()
	cut := e.lastHistoryPass().Add(-model.DefaultHistoryWindow)
	foldCut := cut.UTC().Truncate(24 * time.Hour)
	after, err := e.a.LedgerTotals(ctx, poor.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Entries >= poorTotals.Entries {
		t.Errorf("poor's ledger holds %d entries after the history passes, %d before: nothing was folded", after.Entries, poorTotals.Entries)
	}
	after.Entries = poorTotals.Entries
	if after != poorTotals {
		t.Errorf("poor's whole-life ledger totals %+v after folding, %+v before; want them unchanged", after, poorTotals)
	}

	// Charges: every day before the fold cut is one row per VM with the
	// same sums; days from the cut on are as they were, row for row.
	for id, before := range map[string]map[string]dayTotals{rich.ID: richBefore, poor.ID: poorBefore} {
		after, _ := byVMDay(e.ledgerOf(id))
		for k, b := range before {
			day, _ := time.Parse(time.DateOnly, k[strings.IndexByte(k, ' ')+1:])
			if !day.Add(24 * time.Hour).Before(snapAt) {
				continue // the snapshot's own day went on after it
			}
			a := after[k]
			if a.amount != b.amount || a.forgiven != b.forgiven || a.charges != b.charges {
				t.Errorf("%s %s: %+v before folding, %+v after; want the same sums", id, k, b, a)
			}
			switch {
			case day.Before(foldCut) && a.rows != 1:
				t.Errorf("%s %s (before the window): %d rows, want 1", id, k, a.rows)
			case !day.Before(foldCut) && a.rows != b.rows:
				t.Errorf("%s %s (in the window): %d rows, was %d", id, k, a.rows, b.rows)
			}
		}
	}
	// The rows in the window are the very rows there were.
	kept := map[uint64]model.LedgerEntry{}
	for _, l := range e.ledgerOf(rich.ID) {
		kept[l.Seq] = l
	}
	for _, l := range richRows {
		if l.At.Before(foldCut) {
			continue
		}
		if got, ok := kept[l.Seq]; !ok || fmt.Sprint(got) != fmt.Sprint(l) {
			t.Errorf("ledger entry %d in the window changed: %+v → %+v", l.Seq, l, got)
		}
	}
	var folds int
	for _, l := range e.ledgerOf(poor.ID) {
		if l.Kind == model.TopUp && l.Charges != 0 {
			t.Errorf("a top-up was folded: %+v", l)
		}
		if l.Charges > 1 {
			folds++
		}
	}
	if folds == 0 {
		t.Errorf("poor's charges (all older than the window) were not folded")
	}

	// Events: none older than the window; seqs go on.
	evs := e.eventsWhere(func(model.Event) bool { return true })
	if len(evs) == 0 {
		t.Fatal("no events left")
	}
	for _, ev := range evs {
		if ev.At.Before(cut) {
			t.Fatalf("event %d of %s is older than the window (%s)", ev.Seq, ev.At, cut)
		}
	}
	if evs[0].Seq == 1 || evs[0].At.After(cut.Add(24*time.Hour)) {
		t.Errorf("oldest event left is seq %d at %s; want those before %s gone, and the day after kept", evs[0].Seq, evs[0].At, cut)
	}
	pruned := e.eventsOfType("history.pruned")
	if len(pruned) == 0 || !strings.Contains(pruned[len(pruned)-1].Message, "charges folded") {
		t.Errorf("history.pruned events: %+v", pruned)
	}
	// Operations: the finished ones older than the window are gone, the
	// newer ones and the running one stay.
	var ops []model.Operation
	e.st.View(ctx, func(tx *store.Tx) error { ops, _ = tx.Operations(); return nil })
	recent, running := 0, false
	for _, op := range ops {
		switch {
		case op.ID == stuck.ID:
			running = true
		case op.FinishedAt.Before(cut):
			t.Errorf("operation %s finished at %s, before the window (%s)", op.ID, op.FinishedAt, cut)
		default:
			recent++
		}
	}
	if !running || recent == 0 {
		t.Errorf("operations left: running one kept %v, %d recent ones; want it kept and some", running, recent)
	}

	// A second pass at the same time changes nothing.
	e.a.bgMu.Lock()
	start := time.Now()
	if _, err := e.a.historyPass(ctx, now); err != nil {
		t.Fatal(err)
	}
	t.Logf("a history pass over 4 VMs' 40 days took %s", time.Since(start).Round(time.Millisecond))
	e.a.bgMu.Unlock()
	d1, err := e.st.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	e.a.bgMu.Lock()
	res, err := e.a.historyPass(ctx, now)
	e.a.bgMu.Unlock()
	if err != nil || res != (HistoryResult{}) {
		t.Errorf("second history pass: %+v, %v; want nothing done", res, err)
	}
	if d2, _ := e.st.Digest(ctx); d1 != d2 {
		t.Errorf("second history pass changed the store: %s → %s", d1, d2)
	}
	var seqAfter uint64
	e.st.View(ctx, func(tx *store.Tx) error { seqAfter, _ = tx.LastEventSeq(); return nil })
	if seqAfter <= seqBefore {
		t.Errorf("event seq %d after pruning, %d before: seqs must keep growing", seqAfter, seqBefore)
	}
}

// TestHistoryWindowConfigurable: a window of two days keeps two days of
// events and charges one by one; New refuses a window under a day.
func TestHistoryWindowConfigurable(t *testing.T) {
	e := newEnv(t, envOptions{historyWindow: 48 * time.Hour})
	acct := e.account("short", 10*model.Credit, 0)
	vm := e.vm(acct.ID)
	// In 10-minute steps: one advance books the periods where billing
	// decides nothing as one charge, and the days in the window are to
	// hold a charge per period.
	for range (5*24 + 1) * time.Hour / BillingPeriod {
		e.advance(BillingPeriod)
	}
	now := e.clk.Now()
	cut := e.lastHistoryPass().Add(-48 * time.Hour)
	evs := e.eventsWhere(func(model.Event) bool { return true })
	for _, ev := range evs {
		if ev.At.Before(cut) {
			t.Fatalf("event %d at %s is older than a 2-day window at the last pass (%s)", ev.Seq, ev.At, cut)
		}
	}
	if evs[0].At.After(cut.Add(time.Hour)) {
		t.Errorf("oldest event kept is at %s; a 2-day window at the last pass keeps from %s", evs[0].At, cut)
	}
	days, _ := byVMDay(e.ledgerOf(acct.ID))
	foldCut := cut.UTC().Truncate(24 * time.Hour)
	for d := t0; !d.Add(24 * time.Hour).After(now); d = d.Add(24 * time.Hour) {
		got := days[vm.ID+" "+d.Format(time.DateOnly)].rows
		if d.Before(foldCut) && got != 1 || !d.Before(foldCut) && got < 100 {
			t.Errorf("%s: %d charge rows with a 2-day window at %s", d.Format(time.DateOnly), got, now.Format(time.RFC3339))
		}
	}
	e.checkBalances(acct.ID)

	_, err := New(context.Background(), Options{Store: e.st, Pool: e.pool, HistoryWindow: time.Hour})
	wantCode(t, err, "invalid")
	if err == nil || !strings.Contains(err.Error(), "at least 24h") {
		t.Errorf("New with a 1h window: %v; want a refusal saying at least a day", err)
	}
}
