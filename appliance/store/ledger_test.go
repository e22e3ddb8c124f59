package store

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestLedgerEncodingRoundTrip: every field of a LedgerEntry, zero or not,
// reads back as it was written, in a row and in a page.
func TestLedgerEncodingRoundTrip(t *testing.T) {
	at := time.Date(2026, 11, 1, 10, 20, 30, 123456789, time.UTC)
	full := model.LedgerEntry{AccountID: "ac-alice1", Seq: 1 << 40, At: at, Amount: -123_456_789_012, Kind: model.Charge,
		VMID: "vm-aaaaa1", PeriodStart: time.Date(1, 1, 1, 0, 0, 0, 1, time.UTC), PeriodEnd: at.Add(time.Hour),
		BalanceAfter: -5, Forgiven: 7, Reason: "a reason, with ünïcode", Charges: 144}
	cases := [][]model.LedgerEntry{
		{full},
		{{AccountID: "ac-alice1", Seq: 1, At: at, Kind: model.TopUp}}, // every optional field zero
		{{AccountID: "ac-alice1", Seq: 2, At: at, Amount: 5, Kind: model.Adjustment, BalanceAfter: 5, Reason: "typo"}},
	}
	var page []model.LedgerEntry
	for i := range 5 {
		e := full
		e.Seq = uint64(10 + i)
		e.VMID = fmt.Sprintf("vm-aaaaa%d", i)
		e.Amount = model.Micro(-i)
		page = append(page, e)
	}
	cases = append(cases, page)
	for _, es := range cases {
		b, err := encodeLedger(nil, es)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] == '{' {
			t.Fatalf("binary value starts with '{': it would read as JSON")
		}
		got, err := decodeLedger(b, nil)
		if err != nil {
			t.Fatal(err)
		}
		for i := range es {
			if want := es[len(es)-1-i]; !reflect.DeepEqual(got[i], want) {
				t.Errorf("entry %d read back as\n%+v\nwant\n%+v", i, got[i], want)
			}
		}
		// Every truncation is an error, never a wrong entry.
		for n := range len(b) {
			if _, err := decodeLedger(b[:n], nil); err == nil {
				t.Errorf("%d of %d bytes decoded without an error", n, len(b))
			}
		}
	}
	if _, err := encodeLedger(nil, []model.LedgerEntry{{AccountID: "ac-alice1", At: at, Kind: "gift"}}); err == nil {
		t.Error("an unknown kind encoded")
	}
}

// TestLedgerReadsJSONRows: rows an older superjolt wrote as JSON read, fold
// and sum with the binary ones; no migration is needed.
func TestLedgerReadsJSONRows(t *testing.T) {
	s := openMem(t)
	const acct = "ac-alice1"
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	update(t, s, func(tx *Tx) error {
		for i := range 3 {
			e := model.LedgerEntry{AccountID: acct, Seq: uint64(i + 1), At: day.Add(time.Duration(i+1) * time.Hour), Amount: -100, Kind: model.Charge,
				VMID: "vm-aaaaa1", PeriodStart: day, PeriodEnd: day.Add(time.Duration(i+1) * time.Hour), BalanceAfter: model.Micro(1000 - 100*(i+1))}
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			if err := tx.set(ledgerKey(acct, e.At, e.Seq), b, "old row"); err != nil {
				return err
			}
		}
		return tx.set([]byte(keyLedgerSq), be64(3), "counter")
	})
	update(t, s, func(tx *Tx) error {
		return tx.AppendLedgers([]model.LedgerEntry{
			{AccountID: acct, At: day.Add(4 * time.Hour), Amount: -100, Kind: model.Charge, VMID: "vm-aaaaa1", BalanceAfter: 600},
			{AccountID: acct, At: day.Add(4 * time.Hour), Amount: -50, Kind: model.Charge, VMID: "vm-aaaaa2", BalanceAfter: 550},
		})
	})
	sums, es := sumLedger(t, s, acct)
	if sums.rows != 5 || sums.sum != -450 {
		t.Fatalf("old JSON rows and a new page: %d entries, sum %s; want 5, -450", sums.rows, sums.sum)
	}
	if es[0].Seq != 5 || es[1].Seq != 4 || es[2].Seq != 3 || es[4].Seq != 1 || !es[4].At.Equal(day.Add(time.Hour)) {
		t.Errorf("order: %+v", es)
	}
	update(t, s, func(tx *Tx) error {
		_, _, err := tx.FoldCharges(acct, time.Time{}, day.Add(24*time.Hour), 0)
		return err
	})
	after, es := sumLedger(t, s, acct)
	if after.rows != 2 || after.sum != -450 || after.perVM["vm-aaaaa1"] != -400 || after.charges != 5 {
		t.Errorf("after folding: %d entries, sum %s, %+v; want 2 entries (one per VM), the same sum", after.rows, after.sum, es)
	}
}

// TestLedgerPages: AppendLedgers writes one value per account and instant,
// and every reader still sees one entry per charge, newest first, with
// limit counting entries.
func TestLedgerPages(t *testing.T) {
	s := openMem(t)
	at := time.Date(2026, 11, 1, 9, 0, 0, 0, time.UTC)
	var batch []model.LedgerEntry
	for _, a := range []string{"ac-alice1", "ac-bobby1"} {
		for v := range 300 { // more than a page holds
			batch = append(batch, model.LedgerEntry{AccountID: a, At: at, Amount: -1, Kind: model.Charge, VMID: fmt.Sprintf("vm-%06d", v), BalanceAfter: model.Micro(-v)})
		}
	}
	update(t, s, func(tx *Tx) error {
		if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", At: at, Amount: 1000, Kind: model.TopUp, BalanceAfter: 1000}); err != nil {
			return err
		}
		return tx.AppendLedgers(batch)
	})
	if rows, _ := ledgerBytes(t, s); rows != 5 {
		t.Errorf("601 entries stored as %d values; want 5 (a top-up, and two pages of 256+44 for each account)", rows)
	}
	view(t, s, func(tx *Tx) error {
		es, err := tx.Ledger("ac-alice1", 0)
		if err != nil {
			return err
		}
		if len(es) != 301 {
			t.Fatalf("%d entries; want 301", len(es))
		}
		for i, e := range es {
			if want := uint64(301 - i); e.Seq != want || e.AccountID != "ac-alice1" {
				t.Fatalf("entry %d: seq %d of %s; want seq %d (newest first)", i, e.Seq, e.AccountID, want)
			}
		}
		if es[0].VMID != "vm-000299" || es[299].VMID != "vm-000000" || es[300].Kind != model.TopUp {
			t.Errorf("first %+v, last two %+v %+v", es[0], es[299], es[300])
		}
		for _, limit := range []int{1, 44, 45, 100, 301, 400} {
			got, err := tx.Ledger("ac-alice1", limit)
			if err != nil {
				return err
			}
			if want := min(limit, 301); len(got) != want || !reflect.DeepEqual(got, es[:want]) {
				t.Errorf("limit %d: %d entries; want the newest %d", limit, len(got), want)
			}
		}
		return nil
	})
}

// TestFoldPages: folding pages (billing periods' charges) keeps every sum,
// deletes the pages, is idempotent, and a transaction takes at most the
// batch of entries (a page whole or not at all).
func TestFoldPages(t *testing.T) {
	s := openMem(t)
	const acct, vms = "ac-alice1", 40
	day := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	bal := model.Micro(1000 * model.Credit)
	update(t, s, func(tx *Tx) error {
		_, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: day, Amount: bal, Kind: model.TopUp, BalanceAfter: bal})
		return err
	})
	for p := range 2 * 24 { // two days of hourly periods
		at := day.Add(time.Duration(p)*time.Hour + 30*time.Minute)
		var es []model.LedgerEntry
		for v := range vms {
			bal -= model.Micro(100 + v + p)
			es = append(es, model.LedgerEntry{AccountID: acct, At: at, Amount: -model.Micro(100 + v + p), Kind: model.Charge, VMID: fmt.Sprintf("vm-%06d", v),
				PeriodStart: at.Add(-time.Hour), PeriodEnd: at, BalanceAfter: bal, Forgiven: model.Micro(v % 3)})
		}
		if p == 5 {
			es = append(es, model.LedgerEntry{AccountID: acct, At: at, Amount: -5, Kind: model.Adjustment, BalanceAfter: bal - 5, Reason: "in a page"})
			bal -= 5
		}
		update(t, s, func(tx *Tx) error { return tx.AppendLedgers(es) })
	}
	before, _ := sumLedger(t, s, acct)
	totals := func() model.LedgerTotals {
		var lt model.LedgerTotals
		view(t, s, func(tx *Tx) error {
			var err error
			lt, err = tx.LedgerTotals(acct)
			return err
		})
		return lt
	}
	totalsBefore := totals()
	const batch = 100
	fold := func() (calls int) {
		for b := day.Add(48 * time.Hour); !b.IsZero(); calls++ {
			if calls > 2*24*vms/batch+10 {
				t.Fatalf("fold still going after %d calls", calls)
			}
			update(t, s, func(tx *Tx) error {
				st, next, err := tx.FoldCharges(acct, time.Time{}, b, batch)
				if st.Removed > batch {
					t.Errorf("one fold transaction folded away %d entries, over the batch of %d", st.Removed, batch)
				}
				b = next
				return err
			})
		}
		return calls
	}
	calls := fold()
	if got := totals(); got.Entries >= totalsBefore.Entries || got.Sum != totalsBefore.Sum || got.Charged != totalsBefore.Charged ||
		got.Forgiven != totalsBefore.Forgiven || got.Charges != totalsBefore.Charges || got.Adjusted != totalsBefore.Adjusted {
		t.Errorf("LedgerTotals after folding %+v, before %+v: want fewer entries and the same sums", got, totalsBefore)
	}
	after, es := sumLedger(t, s, acct)
	if want := 2*vms + 2; after.rows != want || after.sum != before.sum || after.forgiven != before.forgiven || after.charges != before.charges {
		t.Errorf("after folding in %d calls: %d entries, sum %s (was %s), forgiven %s (was %s), %d charges (was %d); want %d entries, the same sums",
			calls, after.rows, after.sum, before.sum, after.forgiven, before.forgiven, after.charges, before.charges, want)
	}
	for k, n := range after.chargeRowsByVMAndDay {
		if n != 1 {
			t.Errorf("%s: %d charge entries after folding; want 1", k, n)
		}
	}
	for vm, v := range before.perVM {
		if after.perVM[vm] != v {
			t.Errorf("%s: %s before, %s after", vm, v, after.perVM[vm])
		}
	}
	if es[0].BalanceAfter != bal {
		t.Errorf("newest entry's balance after: %s; want %s", es[0].BalanceAfter, bal)
	}
	if rows, _ := ledgerBytes(t, s); rows != after.rows {
		t.Errorf("%d values for %d entries: pages left after folding", rows, after.rows)
	}
	d1, err := s.Digest(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	fold()
	if d2, err := s.Digest(t.Context()); err != nil || d2 != d1 {
		t.Errorf("folding again changed the store (%v)", err)
	}
}
