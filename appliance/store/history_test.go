package store

import (
	"context"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

func TestPruneEventsBefore(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 10 {
			if _, err := tx.AppendEvent(model.Event{At: t0.Add(time.Duration(i) * time.Hour), Type: "vm.started"}); err != nil {
				return err
			}
		}
		return nil
	})
	prune := func(before time.Time, limit int) int {
		var n int
		update(t, s, func(tx *Tx) error {
			var err error
			n, err = tx.PruneEventsBefore(before, limit)
			return err
		})
		return n
	}
	if n := prune(t0, 0); n != 0 {
		t.Errorf("pruned %d events before the first, want 0", n)
	}
	if n := prune(t0.Add(4*time.Hour), 3); n != 3 {
		t.Errorf("pruned %d events with a limit of 3, want 3", n)
	}
	if n := prune(t0.Add(4*time.Hour), 0); n != 1 {
		t.Errorf("pruned %d more events before t0+4h, want 1", n)
	}
	view(t, s, func(tx *Tx) error {
		evs, err := tx.EventsAfter(0, 0)
		if err != nil {
			return err
		}
		if len(evs) != 6 || evs[0].Seq != 5 || !evs[0].At.Equal(t0.Add(4*time.Hour)) {
			t.Errorf("events left: %d, first %+v; want 6 from seq 5", len(evs), evs[0])
		}
		return nil
	})
	prune(t0.Add(100*time.Hour), 0)
	update(t, s, func(tx *Tx) error {
		e, err := tx.AppendEvent(model.Event{At: t0.Add(100 * time.Hour), Type: "vm.stopped"})
		if e.Seq != 11 {
			t.Errorf("event after pruning all got seq %d, want 11", e.Seq)
		}
		return err
	})
}

func TestPruneOperations(t *testing.T) {
	s := openMem(t)
	op := func(id string, state model.OpState, finished time.Time) model.Operation {
		return model.Operation{ID: id, Kind: model.OpBackup, State: state, StartedAt: t0, FinishedAt: finished}
	}
	old := op("op-aaaaaaaaa1", model.OpDone, t0.Add(time.Hour))
	failed := op("op-aaaaaaaaa2", model.OpFailed, t0.Add(2*time.Hour))
	recent := op("op-aaaaaaaaa3", model.OpDone, t0.Add(10*time.Hour))
	running := op("op-aaaaaaaaa4", model.OpRunning, time.Time{})
	moved := op("op-aaaaaaaaa5", model.OpRunning, time.Time{})
	update(t, s, func(tx *Tx) error {
		for _, o := range []model.Operation{old, failed, recent, running, moved} {
			if err := tx.PutOperation(o); err != nil {
				return err
			}
		}
		return nil
	})
	// moved finishes late, then is put again with an earlier finish time:
	// its index entry follows, and the one it had goes.
	moved.State, moved.FinishedAt = model.OpDone, t0.Add(20*time.Hour)
	update(t, s, func(tx *Tx) error { return tx.PutOperation(moved) })
	moved.FinishedAt = t0.Add(3 * time.Hour)
	update(t, s, func(tx *Tx) error { return tx.PutOperation(moved) })

	var n int
	update(t, s, func(tx *Tx) error {
		var err error
		n, err = tx.PruneOperations(t0.Add(5*time.Hour), 2)
		return err
	})
	if n != 2 {
		t.Errorf("PruneOperations with a limit of 2 deleted %d", n)
	}
	update(t, s, func(tx *Tx) error {
		var err error
		n, err = tx.PruneOperations(t0.Add(5*time.Hour), 0)
		return err
	})
	if n != 1 {
		t.Errorf("second PruneOperations deleted %d, want 1 (moved, indexed at its last finish time)", n)
	}
	view(t, s, func(tx *Tx) error {
		ops, err := tx.Operations()
		if err != nil {
			return err
		}
		got := map[string]bool{}
		for _, o := range ops {
			got[o.ID] = true
		}
		if len(ops) != 2 || !got[recent.ID] || !got[running.ID] {
			t.Errorf("operations left: %v, want %s and %s", got, recent.ID, running.ID)
		}
		idx, err := tx.suffixes([]byte(pOpFinished))
		if err != nil {
			return err
		}
		if len(idx) != 1 {
			t.Errorf("finished index holds %d entries, want 1 (%s): %q", len(idx), recent.ID, idx)
		}
		return nil
	})
	// Even a running operation started long ago stays.
	update(t, s, func(tx *Tx) error {
		var err error
		n, err = tx.PruneOperations(t0.Add(1000*time.Hour), 0)
		return err
	})
	if n != 1 {
		t.Errorf("PruneOperations of everything deleted %d, want 1 (the running one stays)", n)
	}
	view(t, s, func(tx *Tx) error {
		if _, err := tx.Operation(running.ID); err != nil {
			t.Errorf("running operation: %v", err)
		}
		return nil
	})
}

// TestIndexFinishedOperations: a store from before the finished index gets
// its finished operations indexed, in batches, once.
func TestIndexFinishedOperations(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 5 {
			o := model.Operation{ID: fmt.Sprintf("op-aaaaaaaab%d", i), Kind: model.OpStart, State: model.OpDone, StartedAt: t0, FinishedAt: t0.Add(time.Minute)}
			if err := tx.PutOperation(o); err != nil {
				return err
			}
			k, _ := opFinishedKeyOf(o)
			if err := tx.del(k, "index"); err != nil { // as an older superjolt left it
				return err
			}
		}
		return tx.PutOperation(model.Operation{ID: "op-aaaaaaaabr", Kind: model.OpStart, State: model.OpRunning, StartedAt: t0})
	})
	for i, want := range []bool{false, false, true, true} {
		update(t, s, func(tx *Tx) error {
			done, err := tx.IndexFinishedOperations(2)
			if done != want {
				t.Errorf("call %d: done = %v, want %v", i, done, want)
			}
			return err
		})
	}
	var n int
	update(t, s, func(tx *Tx) error {
		var err error
		n, err = tx.PruneOperations(t0.Add(time.Hour), 0)
		return err
	})
	if n != 5 {
		t.Errorf("pruned %d backfilled operations, want 5", n)
	}
}

// foldFixture books, for two VMs of one account, a charge every
// 20 minutes for four days from a UTC midnight, with a top-up and an
// adjustment on the way, and the last charges forgiven in part; it
// returns the day the charges start.
func foldFixture(t *testing.T, s *Store, acct string) time.Time {
	t.Helper()
	day0 := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	bal := model.Micro(0)
	update(t, s, func(tx *Tx) error {
		bal = 100 * model.Credit
		_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: day0, Amount: bal, Kind: model.TopUp, BalanceAfter: bal})
		return err
	})
	for i := range 4 * 72 {
		at := day0.Add(time.Duration(i+1) * 20 * time.Minute)
		update(t, s, func(tx *Tx) error {
			for _, vm := range []string{"vm-aaaaa1", "vm-aaaaa2"} {
				price := model.Micro(333_333 + i)
				amount := min(price, bal)
				bal -= amount
				_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: at, Amount: -amount, Kind: model.Charge, VMID: vm,
					PeriodStart: at.Add(-20 * time.Minute), PeriodEnd: at, BalanceAfter: bal, Forgiven: price - amount})
				if err != nil {
					return err
				}
			}
			switch i {
			case 30:
				bal += 5 * model.Credit
				_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: at, Amount: 5 * model.Credit, Kind: model.TopUp, BalanceAfter: bal})
				return err
			case 100:
				bal -= model.Credit
				_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: at, Amount: -model.Credit, Kind: model.Adjustment, BalanceAfter: bal, Reason: "typo"})
				return err
			}
			return nil
		})
	}
	return day0
}

type ledgerSums struct {
	rows                 int
	sum, forgiven        model.Micro
	perVM                map[string]model.Micro
	topUps, adjustments  int
	chargeRowsByVMAndDay map[string]int
	charges              int // charges stood for (folded ones count what they fold)
}

func sumLedger(t *testing.T, s *Store, acct string) (ledgerSums, []model.LedgerEntry) {
	t.Helper()
	var es []model.LedgerEntry
	view(t, s, func(tx *Tx) error {
		var err error
		es, err = tx.Ledger(acct, 0)
		return err
	})
	r := ledgerSums{rows: len(es), perVM: map[string]model.Micro{}, chargeRowsByVMAndDay: map[string]int{}}
	for _, e := range es {
		r.sum += e.Amount
		r.forgiven += e.Forgiven
		switch e.Kind {
		case model.TopUp:
			r.topUps++
		case model.Adjustment:
			r.adjustments++
		case model.Charge:
			r.perVM[e.VMID] += e.Amount
			r.chargeRowsByVMAndDay[e.VMID+" "+e.At.UTC().Format(time.DateOnly)]++
			r.charges += max(e.Charges, 1)
		}
	}
	return r, es
}

func TestFoldCharges(t *testing.T) {
	s := openMem(t)
	const acct = "ac-alice1"
	day0 := foldFixture(t, s, acct)
	before, esBefore := sumLedger(t, s, acct)
	if before.forgiven == 0 || before.rows != 1+4*72*2+2 {
		t.Fatalf("fixture: %d rows, forgiven %s; want 579 rows and some forgiven", before.rows, before.forgiven)
	}
	cut := day0.Add(3 * 24 * time.Hour) // days 0-2 fold; day 3 stays as it is

	// A small batch makes the fold take several transactions and stop
	// inside a day.
	calls := 0
	for b := cut; !b.IsZero(); calls++ {
		update(t, s, func(tx *Tx) error {
			var err error
			_, b, err = tx.FoldCharges(acct, time.Time{}, b, 50)
			return err
		})
	}
	if calls < 3 {
		t.Errorf("fold took %d transactions with batches of 50 rows, want several", calls)
	}
	after, esAfter := sumLedger(t, s, acct)
	if after.sum != before.sum || after.forgiven != before.forgiven || after.charges != before.charges {
		t.Errorf("fold changed the sums: amount %s→%s, forgiven %s→%s, charges %d→%d",
			before.sum, after.sum, before.forgiven, after.forgiven, before.charges, after.charges)
	}
	for vm, v := range before.perVM {
		if after.perVM[vm] != v {
			t.Errorf("%s charged %s before the fold, %s after", vm, v, after.perVM[vm])
		}
	}
	if after.topUps != 2 || after.adjustments != 1 {
		t.Errorf("after the fold: %d top-ups, %d adjustments; want 2 and 1 (never folded)", after.topUps, after.adjustments)
	}
	for d := range 4 {
		day := day0.Add(time.Duration(d) * 24 * time.Hour).Format(time.DateOnly)
		for _, vm := range []string{"vm-aaaaa1", "vm-aaaaa2"} {
			want := 1
			if d == 3 {
				want = 72
			}
			if got := after.chargeRowsByVMAndDay[vm+" "+day]; got != want {
				t.Errorf("%s on %s: %d charge rows, want %d", vm, day, got, want)
			}
		}
	}
	// Rows within the window are untouched, and the newest entry (whose
	// BalanceAfter is the balance) is the same.
	newer := func(es []model.LedgerEntry) []model.LedgerEntry {
		var out []model.LedgerEntry
		for _, e := range es {
			if !e.At.Before(cut) {
				out = append(out, e)
			}
		}
		return out
	}
	if a, b := newer(esAfter), newer(esBefore); fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("fold changed entries at or after the cut: %d rows before, %d after", len(b), len(a))
	}
	// Every folded entry keeps the latest charge's place and balance, and
	// the whole day's period.
	for i, e := range esAfter {
		if e.Charges == 0 {
			continue
		}
		if e.Kind != model.Charge {
			t.Errorf("folded entry %d is a %s", e.Seq, e.Kind)
		}
		var last model.LedgerEntry
		var first time.Time
		n := 0
		for _, o := range esBefore {
			if o.VMID == e.VMID && o.Kind == model.Charge && o.At.UTC().Truncate(24*time.Hour).Equal(e.At.UTC().Truncate(24*time.Hour)) {
				if last.Seq == 0 {
					last = o // newest first
				}
				first = o.PeriodStart
				n++
			}
		}
		if e.Seq != last.Seq || !e.At.Equal(last.At) || e.BalanceAfter != last.BalanceAfter || !e.PeriodEnd.Equal(last.PeriodEnd) || !e.PeriodStart.Equal(first) || e.Charges != n {
			t.Errorf("folded entry %d: %+v; want seq %d at %s, balance after %s, period from %s, %d charges", i, e, last.Seq, last.At, last.BalanceAfter, first, n)
		}
	}
	// Folding again changes nothing.
	d1, _ := s.Digest(context.Background())
	update(t, s, func(tx *Tx) error {
		st, next, err := tx.FoldCharges(acct, time.Time{}, cut, 0)
		if st.Entries != 0 || st.Removed != 0 || !next.IsZero() {
			t.Errorf("second fold: %+v, next %s; want nothing", st, next)
		}
		return err
	})
	if d2, _ := s.Digest(context.Background()); d1 != d2 {
		t.Errorf("second fold changed the store: %s → %s", d1, d2)
	}
	// Bounds must be midnights.
	err := s.Update(context.Background(), func(tx *Tx) error {
		_, _, err := tx.FoldCharges(acct, time.Time{}, cut.Add(time.Hour), 0)
		return err
	})
	if err == nil {
		t.Errorf("fold up to a time that is not a UTC midnight: no error")
	}
}

func TestLedgerFoldedBefore(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		if got, err := tx.LedgerFoldedBefore(); err != nil || !got.IsZero() {
			t.Errorf("fresh store: fold mark %s, %v; want none", got, err)
		}
		if err := tx.SetLedgerFoldedBefore(t0); err != nil {
			return err
		}
		if err := tx.SetLedgerFoldedBefore(t0.Add(-time.Hour)); err != nil {
			return err
		}
		got, err := tx.LedgerFoldedBefore()
		if !got.Equal(t0) {
			t.Errorf("fold mark %s after setting %s then an earlier one; want %s", got, t0, t0)
		}
		return err
	})
}

// dirBytes is what dir takes on disk (allocated blocks, not apparent
// sizes: Badger preallocates sparse files).
func dirBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestMaintainGivesSpaceBack writes and deletes rounds of 50,000 events and
// checks that, with Maintain after each, the state directory does not grow
// with what was ever written, and ends well under its peak.
func TestMaintainGivesSpaceBack(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 200,000 events")
	}
	dir := t.TempDir()
	s := openDir(t, dir)
	defer func() { s.Close() }()
	ctx := context.Background()
	msg := fmt.Sprintf("%0200d", 0) // an event of some 300 bytes
	write := func(round int) {
		for b := range 50 {
			update(t, s, func(tx *Tx) error {
				for i := range 1000 {
					at := t0.Add(time.Duration(round*50_000+b*1000+i) * time.Second)
					if _, err := tx.AppendEvent(model.Event{At: at, Type: "vm.started", Object: "vm-aaaaa1", Message: msg}); err != nil {
						return err
					}
				}
				return nil
			})
		}
	}
	acct := testAccount("ac-alice1")
	update(t, s, func(tx *Tx) error { return tx.PutAccount(acct) })
	base := dirBytes(t, dir)
	var sizes []int64
	var peak int64
	for round := range 4 {
		write(round)
		peak = max(peak, dirBytes(t, dir))
		for n := defaultBatch; n == defaultBatch; {
			update(t, s, func(tx *Tx) error {
				var err error
				n, err = tx.PruneEventsBefore(t0.Add(time.Duration(round+1)*50_000*time.Second), 0)
				return err
			})
		}
		start := time.Now()
		if err := s.Maintain(ctx); err != nil {
			t.Fatalf("Maintain: %v", err)
		}
		sizes = append(sizes, dirBytes(t, dir))
		t.Logf("round %d: peak %d KiB, after pruning and Maintain (%s) %d KiB", round, peak>>10, time.Since(start).Round(time.Millisecond), sizes[round]>>10)
	}
	t.Logf("empty store: %d KiB", base>>10)
	view(t, s, func(tx *Tx) error {
		if a, err := tx.Account(acct.ID); err != nil || a.Balance != acct.Balance {
			t.Errorf("account after Maintain: %+v, %v", a, err)
		}
		if seq, err := tx.LastEventSeq(); err != nil || seq != 200_000 {
			t.Errorf("last event seq after Maintain: %d, %v; want 200000", seq, err)
		}
		if evs, err := tx.EventsAfter(0, 0); err != nil || len(evs) != 0 {
			t.Errorf("events after pruning them all: %d, %v", len(evs), err)
		}
		return nil
	})
	// What Maintain kept is there after a restart too.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openDir(t, dir)
	view(t, s, func(tx *Tx) error {
		if a, err := tx.Account(acct.ID); err != nil || a.Balance != acct.Balance {
			t.Errorf("account after Maintain and a restart: %+v, %v", a, err)
		}
		if seq, err := tx.LastEventSeq(); err != nil || seq != 200_000 {
			t.Errorf("last event seq after Maintain and a restart: %d, %v; want 200000", seq, err)
		}
		return nil
	})
	if last := sizes[len(sizes)-1]; last > sizes[0]+(1<<20) || last > peak/2 {
		t.Errorf("state directory after 4 rounds of 50,000 events written and pruned: %d KiB (first round %d KiB, peak %d KiB); want no growth", last>>10, sizes[0]>>10, peak>>10)
	}
}

// ledgerBytes counts the ledger's rows and the bytes of their keys and
// values.
func ledgerBytes(tb testing.TB, s *Store) (rows, bytes int) {
	tb.Helper()
	err := s.View(context.Background(), func(tx *Tx) error {
		return tx.scan([]byte(pLedger), nil, true, func(item *badger.Item) error {
			rows++
			bytes += len(item.Key()) + int(item.ValueSize())
			return nil
		})
	})
	if err != nil {
		tb.Fatal(err)
	}
	return rows, bytes
}

// foldAll folds every account's charges before cut from since, as the
// appliance's history pass does, and returns the rows it removed.
func foldAll(tb testing.TB, s *Store, accts []string, since, cut time.Time) int {
	tb.Helper()
	removed := 0
	for _, a := range accts {
		for b := cut; !b.IsZero(); {
			update(tb, s, func(tx *Tx) error {
				st, next, err := tx.FoldCharges(a, since, b, defaultBatch)
				removed += st.Removed // no retry in a benchmark: nothing runs concurrently
				b = next
				return err
			})
		}
	}
	return removed
}

// BenchmarkHistoryFold books 50 VMs (5 accounts of 10) × 60 days of
// 10-minute charges (432,000 rows), then measures the first fold with a
// 30-day window (30 days of charges), and the daily fold that follows (one
// more day). It reports the ledger's rows and bytes before and after, and
// the state directory once Maintain has run. Run with -benchtime 1x.
func BenchmarkHistoryFold(b *testing.B) { benchmarkHistoryFold(b, false) }

// BenchmarkHistoryFoldPages is BenchmarkHistoryFold with the charges booked
// as the billing pass books them: each account's charges of a period in one
// AppendLedgers call, so one page of 10 entries (rows-before counts values,
// entries-before the entries in them).
func BenchmarkHistoryFoldPages(b *testing.B) { benchmarkHistoryFold(b, true) }

// ledgerEntries counts the entries of accts' ledgers.
func ledgerEntries(tb testing.TB, s *Store, accts []string) int {
	tb.Helper()
	n := 0
	view(tb, s, func(tx *Tx) error {
		for _, a := range accts {
			es, err := tx.Ledger(a, 0)
			if err != nil {
				return err
			}
			n += len(es)
		}
		return nil
	})
	return n
}

func benchmarkHistoryFold(b *testing.B, pages bool) {
	const vms, days, accounts = 50, 60, 5
	day0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for range b.N {
		b.StopTimer()
		dir := b.TempDir()
		s := openDir(b, dir)
		accts := make([]string, accounts)
		for a := range accounts {
			accts[a] = fmt.Sprintf("ac-%06d", a)
		}
		bal := model.Micro(1_000_000 * model.Credit)
		for p := range days * 144 {
			at := day0.Add(time.Duration(p+1) * 10 * time.Minute)
			update(b, s, func(tx *Tx) error {
				var es []model.LedgerEntry
				for a := range accounts {
					for v := a; v < vms; v += accounts {
						bal -= 833
						e := model.LedgerEntry{AccountID: accts[a], At: at, Amount: -833, Kind: model.Charge,
							VMID: fmt.Sprintf("vm-%06d", v), PeriodStart: at.Add(-10 * time.Minute), PeriodEnd: at, BalanceAfter: bal}
						if !pages {
							if _, err := tx.AppendLedger(e); err != nil {
								return err
							}
							continue
						}
						es = append(es, e)
					}
				}
				return tx.AppendLedgers(es)
			})
		}
		if err := s.Maintain(context.Background()); err != nil {
			b.Fatal(err)
		}
		rows0, bytes0 := ledgerBytes(b, s)
		entries0 := ledgerEntries(b, s, accts)
		disk0 := dirBytes(b, dir)
		cut := day0.Add(30 * 24 * time.Hour)
		b.StartTimer()
		start := time.Now()
		removed := foldAll(b, s, accts, time.Time{}, cut)
		first := time.Since(start)
		start = time.Now()
		if err := s.flushMemtable(); err != nil { // what Maintain does with the store locked
			b.Fatal(err)
		}
		locked := time.Since(start)
		start = time.Now()
		if err := s.Maintain(context.Background()); err != nil {
			b.Fatal(err)
		}
		maint := time.Since(start)
		start = time.Now()
		removed += foldAll(b, s, accts, cut, cut.Add(24*time.Hour))
		daily := time.Since(start)
		b.StopTimer()
		rows1, bytes1 := ledgerBytes(b, s)
		entries1 := ledgerEntries(b, s, accts)
		disk1 := dirBytes(b, dir)
		// Per VM: 31 folded days, 29 days of 144 charges in the window,
		// and the charge at the last midnight.
		if entries0-entries1 != removed || entries1 != (31+29*144+1)*vms || (!pages && rows1 != entries1) {
			b.Fatalf("entries %d → %d (rows %d → %d), removed %d; want %d left", entries0, entries1, rows0, rows1, removed, (31+29*144+1)*vms)
		}
		b.ReportMetric(float64(rows0), "rows-before")
		b.ReportMetric(float64(rows1), "rows-after")
		if pages {
			b.ReportMetric(float64(entries0), "entries-before")
			b.ReportMetric(float64(entries1), "entries-after")
		}
		b.ReportMetric(float64(bytes0)/(1<<20), "MiB-before")
		b.ReportMetric(float64(bytes1)/(1<<20), "MiB-after")
		b.ReportMetric(float64(disk0)/(1<<20), "disk-MiB-before")
		b.ReportMetric(float64(disk1)/(1<<20), "disk-MiB-after")
		b.ReportMetric(first.Seconds(), "s-first-fold")
		b.ReportMetric(maint.Seconds(), "s-maintain")
		b.ReportMetric(locked.Seconds()*1000, "ms-store-locked")
		b.ReportMetric(daily.Seconds()*1000, "ms-daily-fold")
		s.Close()
	}
}

// TestMaintainWhileWriting: transactions that commit while Maintain writes
// the memtable out and compacts wait for it; none fails.
func TestMaintainWhileWriting(t *testing.T) {
	dir := t.TempDir()
	s := openDir(t, dir)
	defer s.Close()
	ctx := context.Background()
	msg := fmt.Sprintf("%0200d", 0)
	done := make(chan struct{})
	errs := make(chan error, 4)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-done:
					return
				default:
				}
				err := s.Update(ctx, func(tx *Tx) error {
					for range 20 {
						if _, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.started", Message: msg}); err != nil {
							return err
						}
					}
					_, err := tx.PruneEventsBefore(t0.Add(time.Hour), 10)
					return err
				})
				if err != nil {
					errs <- fmt.Errorf("writer %d, transaction %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	for range 10 {
		if err := s.Maintain(ctx); err != nil {
			t.Errorf("Maintain: %v", err)
		}
	}
	close(done)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestFoldManyVMs: an account with more VMs than a fold transaction takes
// rows still folds, in steps that each delete at most the batch, to one row
// per VM with the same sums.
func TestFoldManyVMs(t *testing.T) {
	s := openMem(t)
	const acct, vms, per, batch = "ac-bigone", 300, 6, 100
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	bal := model.Micro(1000 * model.Credit)
	for p := range per {
		at := day.Add(time.Duration(p+1) * 3 * time.Hour)
		update(t, s, func(tx *Tx) error {
			for v := range vms {
				bal -= model.Micro(100 + v)
				if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: at, Amount: -model.Micro(100 + v), Kind: model.Charge,
					VMID: fmt.Sprintf("vm-%06d", v), PeriodStart: at.Add(-3 * time.Hour), PeriodEnd: at, BalanceAfter: bal}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	before, _ := sumLedger(t, s, acct)
	calls := 0
	for b := day.Add(24 * time.Hour); !b.IsZero(); calls++ {
		if calls > vms*per/batch+5 {
			t.Fatalf("fold still going after %d calls", calls)
		}
		update(t, s, func(tx *Tx) error {
			st, next, err := tx.FoldCharges(acct, time.Time{}, b, batch)
			if st.Removed > batch {
				t.Errorf("one fold transaction deleted %d rows, over the batch of %d", st.Removed, batch)
			}
			b = next
			return err
		})
	}
	after, _ := sumLedger(t, s, acct)
	if after.rows != vms || after.sum != before.sum || after.charges != before.charges {
		t.Errorf("after folding %d VMs' day in %d calls: %d rows, sum %s (was %s), %d charges (was %d); want %d rows, the same sums",
			vms, calls, after.rows, after.sum, before.sum, after.charges, before.charges, vms)
	}
	for vm, v := range before.perVM {
		if after.perVM[vm] != v {
			t.Errorf("%s: %s before, %s after", vm, v, after.perVM[vm])
		}
	}
}
