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

// ledgerOf reads an account's whole ledger from the store.
func ledgerOf(t *testing.T, e *env, acct string) []model.LedgerEntry {
	t.Helper()
	var out []model.LedgerEntry
	if err := e.st.View(context.Background(), func(tx *store.Tx) error {
		var err error
		out, err = tx.Ledger(acct, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// billed sums, per VM, what the account's charges took and forgave.
func billed(ledger []model.LedgerEntry) (taken, forgiven map[string]model.Micro) {
	taken, forgiven = map[string]model.Micro{}, map[string]model.Micro{}
	for _, l := range ledger {
		if l.Kind == model.Charge {
			taken[l.VMID] -= l.Amount
			forgiven[l.VMID] += l.Forgiven
		}
	}
	return taken, forgiven
}

// TestBillingPassTelescopes: a span booked by a billing pass every period,
// in transactions of three rows (accounts cut across them), charges each
// VM to the micro-credit what one pass over the whole span charges in one
// transaction, and both charge exactly the whole granules of the span;
// VMs that do not bill are charged nothing.
func TestBillingPassTelescopes(t *testing.T) {
	ctx := context.Background()
	end := t0.Add(6*time.Hour + 40*time.Minute + 17*time.Second + 300*time.Millisecond)
	tiers := append(model.DefaultTiers(), model.Tier{Name: "odd", VCPUs: 1, MemoryMiB: 256, DiskGiB: 2, RatePerHour: 7})
	states := []model.VMState{model.StateRunning, model.StateRunning, model.StateStopped, model.StateGraveyard}
	type fixture struct {
		e     *env
		accts []string
	}
	setup := func() fixture {
		e := newEnv(t, envOptions{})
		f := fixture{e: e}
		for i := range 3 {
			f.accts = append(f.accts, e.account(fmt.Sprintf("span-%d", i), 1000*model.Credit, 0).ID)
		}
		err := e.st.Update(ctx, func(tx *store.Tx) error {
			if err := tx.PutTier(tiers[len(tiers)-1]); err != nil {
				return err
			}
			for i := range 21 {
				created := t0.Add(time.Duration(i) * 1234567 * time.Microsecond) // ragged, off the second
				vm := model.VM{ID: fmt.Sprintf("vm-%06d", i), AccountID: f.accts[i%3], Name: fmt.Sprintf("span%d", i),
					Tier: tiers[i%len(tiers)].Name, Image: DefaultImage, State: states[i%len(states)], CreatedAt: created,
					BilledUntil: created, NextBackupAt: end.Add(time.Hour), Ports: []model.Port{}, Domains: []string{}}
				if err := tx.PutVM(vm); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	periodic, once := setup(), setup()

	billingRowsPerTx = 3
	for at := t0.Add(BillingPeriod); at.Before(end); at = at.Add(BillingPeriod) {
		if err := periodic.e.a.billingPass(ctx, at); err != nil {
			t.Fatal(err)
		}
	}
	if err := periodic.e.a.billingPass(ctx, end); err != nil {
		t.Fatal(err)
	}
	billingRowsPerTx = 0
	if err := once.e.a.billingPass(ctx, end); err != nil {
		t.Fatal(err)
	}

	rates := map[string]model.Micro{}
	for _, tr := range tiers {
		rates[tr.Name] = tr.RatePerHour
	}
	for i, acct := range periodic.accts {
		pl, ol := ledgerOf(t, periodic.e, acct), ledgerOf(t, once.e, once.accts[i])
		pTaken, pForgiven := billed(pl)
		oTaken, oForgiven := billed(ol)
		var sum model.Micro
		for _, l := range pl {
			sum += l.Amount
		}
		pa, _ := periodic.e.a.Account(ctx, acct)
		oa, _ := once.e.a.Account(ctx, once.accts[i])
		if pa.Balance != oa.Balance || pa.Balance != sum {
			t.Errorf("account %d: balance %s booked every period, %s booked once; its ledger sums to %s", i, pa.Balance, oa.Balance, sum)
		}
		if len(pl) <= len(ol) {
			t.Errorf("account %d: %d ledger entries booked every period, %d once: the periods were not booked", i, len(pl), len(ol))
		}
		var vms []model.VM
		if err := periodic.e.st.View(ctx, func(tx *store.Tx) error {
			var err error
			vms, err = tx.VMs(store.VMFilter{AccountID: acct})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		if len(vms) != 7 {
			t.Fatalf("account %d has %d VMs, want 7", i, len(vms))
		}
		for _, vm := range vms {
			ovm := once.e.getVM(vm.ID)
			if !vm.BilledUntil.Equal(ovm.BilledUntil) {
				t.Errorf("%s: billed until %v booked every period, %v once", vm.ID, vm.BilledUntil, ovm.BilledUntil)
			}
			if pTaken[vm.ID] != oTaken[vm.ID] || pForgiven[vm.ID] != 0 || oForgiven[vm.ID] != 0 {
				t.Errorf("%s: took %s (forgave %s) booked every period, %s (forgave %s) once",
					vm.ID, pTaken[vm.ID], pForgiven[vm.ID], oTaken[vm.ID], oForgiven[vm.ID])
			}
			// Whole granules of the span, exactly.
			rate := rates[vm.Tier]
			var want model.Micro
			wantUntil := vm.CreatedAt
			if vm.State.Bills() {
				g := granule(rate)
				secs := int64(end.Sub(vm.CreatedAt) / time.Second)
				secs -= secs % g
				want = model.Micro(int64(rate) * secs / 3600)
				wantUntil = vm.CreatedAt.Add(time.Duration(secs) * time.Second)
			}
			if pTaken[vm.ID] != want || !vm.BilledUntil.Equal(wantUntil) {
				t.Errorf("%s (%s, %s): took %s billed until %v, want %s until %v", vm.ID, vm.Tier, vm.State,
					pTaken[vm.ID], vm.BilledUntil, want, wantUntil)
			}
		}
	}
}

// TestAdvanceClockSkipsExactly: the same history advanced by one
// AdvanceClock(4 days) and by 576 of 10 minutes ends the same: per account
// the balance and the low-balance warnings (time and text), per VM the
// state, archive time and BilledUntil, and what its charges took plus what
// they forgave; per account what was forgiven. One account crosses its
// low-balance threshold and runs out (its VMs archived, then reclaimed a
// day later), one only crosses, one does neither. The one advance books
// fewer, longer charges.
func TestAdvanceClockSkipsExactly(t *testing.T) {
	ctx := context.Background()
	type account struct {
		name    string
		balance model.Micro
		tiers   []string
	}
	accounts := []account{
		// burn 15,000/h: threshold 0.36 crossed at 36h, zero at 60h.
		{"poor", 900_000, []string{"nano", "small"}},
		// burn 40,000/h: threshold 0.96 crossed at 63.5h, zero at 87.5h.
		{"mid", 3_500_000, []string{"medium"}},
		{"rich", 1000 * model.Credit, []string{"nano", "large", "small"}},
	}
	type fixture struct {
		e     *env
		accts []model.Account
		vms   [][]string // per account, in creation order
	}
	setup := func() fixture {
		e := newEnv(t, envOptions{})
		f := fixture{e: e}
		for _, a := range accounts {
			acct := e.account(a.name, a.balance, 1)
			f.accts = append(f.accts, acct)
			var ids []string
			for _, tier := range a.tiers {
				vm, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: tier})
				if err != nil {
					t.Fatal(err)
				}
				ids = append(ids, vm.ID)
				e.clk.Advance(77*time.Second + 123*time.Millisecond) // ragged, and no billing pass
			}
			f.vms = append(f.vms, ids)
		}
		// Onto the billing grid (New set the first pass at t0 + a
		// period): each 10-minute step then ends on a billing pass, as
		// the periodic passes of the real clock do.
		e.clk.Advance(t0.Add(BillingPeriod).Sub(e.clk.Now()))
		return f
	}
	jumped, stepped := setup(), setup()
	const span = 4 * 24 * time.Hour
	jumped.e.advance(span)
	for range span / BillingPeriod {
		stepped.e.advance(BillingPeriod)
	}
	if !jumped.e.clk.Now().Equal(stepped.e.clk.Now()) {
		t.Fatalf("clocks at %v and %v", jumped.e.clk.Now(), stepped.e.clk.Now())
	}

	warnings := func(f fixture, i int) []string {
		var out []string
		for _, ev := range f.e.eventsOfType("account.low_balance") {
			if ev.Object == f.accts[i].ID {
				out = append(out, ev.At.UTC().Format(time.RFC3339Nano)+" "+strings.ReplaceAll(ev.Message, f.accts[i].ID, "ACCT"))
			}
		}
		return out
	}
	archived := 0
	for i, a := range accounts {
		ja, _ := jumped.e.a.Account(ctx, jumped.accts[i].ID)
		sa, _ := stepped.e.a.Account(ctx, stepped.accts[i].ID)
		if ja.Balance != sa.Balance {
			t.Errorf("%s: balance %s after one advance, %s after steps", a.name, ja.Balance, sa.Balance)
		}
		jw, sw := warnings(jumped, i), warnings(stepped, i)
		if strings.Join(jw, "\n") != strings.Join(sw, "\n") {
			t.Errorf("%s: low-balance warnings after one advance:\n%s\nafter steps:\n%s", a.name, strings.Join(jw, "\n"), strings.Join(sw, "\n"))
		}
		if a.name != "rich" && len(jw) != 1 {
			t.Errorf("%s: %d low-balance warnings, want 1", a.name, len(jw))
		}
		jl, sl := ledgerOf(t, jumped.e, ja.ID), ledgerOf(t, stepped.e, sa.ID)
		if len(jl) >= len(sl) {
			t.Errorf("%s: %d ledger entries after one advance, %d after steps: want fewer, longer charges", a.name, len(jl), len(sl))
		}
		jTaken, jForgiven := billed(jl)
		sTaken, sForgiven := billed(sl)
		var jf, sf model.Micro
		for j := range a.tiers {
			jid, sid := jumped.vms[i][j], stepped.vms[i][j]
			if jTaken[jid]+jForgiven[jid] != sTaken[sid]+sForgiven[sid] || jTaken[jid] == 0 {
				t.Errorf("%s VM %d: took %s and forgave %s after one advance, took %s and forgave %s after steps",
					a.name, j, jTaken[jid], jForgiven[jid], sTaken[sid], sForgiven[sid])
			}
			jf, sf = jf+jForgiven[jid], sf+sForgiven[sid]
			jvm, jerr := jumped.e.a.VM(ctx, jid)
			svm, serr := stepped.e.a.VM(ctx, sid)
			if (jerr == nil) != (serr == nil) {
				t.Errorf("%s VM %d: %v after one advance, %v after steps", a.name, j, jerr, serr)
				continue
			}
			if jerr != nil {
				archived++ // reclaimed in both: see the events below
				continue
			}
			if jvm.State != svm.State || !jvm.ArchivedAt.Equal(svm.ArchivedAt) || !jvm.BilledUntil.Equal(svm.BilledUntil) {
				t.Errorf("%s VM %d: %s archived %v billed until %v after one advance, %s archived %v billed until %v after steps",
					a.name, j, jvm.State, jvm.ArchivedAt, jvm.BilledUntil, svm.State, svm.ArchivedAt, svm.BilledUntil)
			}
		}
		if jf != sf {
			t.Errorf("%s: forgave %s after one advance, %s after steps", a.name, jf, sf)
		}
	}
	if archived != len(accounts[0].tiers) {
		t.Errorf("%d VMs reclaimed, want the poor account's %d", archived, len(accounts[0].tiers))
	}
	// The archive times of the reclaimed VMs.
	when := func(f fixture, typ string) []string {
		var out []string
		for _, id := range f.vms[0] {
			for _, ev := range f.e.eventsAbout(id) {
				if ev.Type == typ {
					out = append(out, ev.At.UTC().Format(time.RFC3339Nano))
				}
			}
		}
		return out
	}
	for _, typ := range []string{"vm.archived", "vm.reclaimed"} {
		j, s := when(jumped, typ), when(stepped, typ)
		if len(j) != len(accounts[0].tiers) || strings.Join(j, " ") != strings.Join(s, " ") {
			t.Errorf("%s events at %v after one advance, %v after steps", typ, j, s)
		}
	}
}
