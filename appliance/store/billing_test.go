package store

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// billingRows returns every billing row, in walk order.
func billingRows(t *testing.T, s *Store, acct string) []Billing {
	t.Helper()
	var out []Billing
	view(t, s, func(tx *Tx) error {
		return tx.ForEachBilling(acct, BillingCursor{}, func(b Billing) error {
			out = append(out, b)
			return nil
		})
	})
	return out
}

// TestBillingRowInStep: PutVM and DeleteVM keep a VM's billing row in step
// (account, tier, whether it bills, BilledUntil); SetBilledUntil moves
// the BilledUntil that VM, VMs and ForEachVM then return, without
// rewriting the VM; the v/ row never holds it.
func TestBillingRowInStep(t *testing.T) {
	s := openMem(t)
	running := testVM("vm-aaaaa1", "ac-alice1", model.StateRunning)
	archived := testVM("vm-aaaaa2", "ac-bob123", model.StateArchived)
	archived.Tier = "large"
	update(t, s, func(tx *Tx) error {
		if err := tx.PutVM(running); err != nil {
			return err
		}
		return tx.PutVM(archived)
	})
	rows := billingRows(t, s, "")
	want := []Billing{
		{VMID: "vm-aaaaa1", AccountID: "ac-alice1", Tier: "small", Bills: true, CreatedAt: t0, BilledUntil: t0.Add(2 * time.Hour)},
		{VMID: "vm-aaaaa2", AccountID: "ac-bob123", Tier: "large", Bills: false, CreatedAt: t0, BilledUntil: t0.Add(2 * time.Hour)},
	}
	if fmt.Sprint(rows) != fmt.Sprint(want) {
		t.Fatalf("billing rows:\n%v\nwant\n%v", rows, want)
	}
	if got := billingRows(t, s, "ac-bob123"); len(got) != 1 || got[0].VMID != "vm-aaaaa2" {
		t.Errorf("ac-bob123's billing rows: %v", got)
	}
	if got := billingRows(t, s, "ac-nobody"); len(got) != 0 {
		t.Errorf("rows of an account without VMs: %v", got)
	}

	later := t0.Add(2*time.Hour + 10*time.Minute + 123*time.Millisecond)
	var rawBefore, rawAfter []byte
	raw := func(tx *Tx) []byte {
		item, err := tx.txn.Get(vmKey("vm-aaaaa1"))
		if err != nil {
			t.Fatal(err)
		}
		v, _ := item.ValueCopy(nil)
		return v
	}
	update(t, s, func(tx *Tx) error {
		rawBefore = raw(tx)
		return tx.SetBilledUntil(rows[0], later)
	})
	view(t, s, func(tx *Tx) error {
		rawAfter = raw(tx)
		vm, err := tx.VM("vm-aaaaa1")
		if err != nil || !vm.BilledUntil.Equal(later) {
			t.Errorf("VM after SetBilledUntil: billed until %v, %v; want %v", vm.BilledUntil, err, later)
		}
		vms, err := tx.VMs(VMFilter{})
		if err != nil || len(vms) != 2 || !vms[0].BilledUntil.Equal(later) || !vms[1].BilledUntil.Equal(t0.Add(2*time.Hour)) {
			t.Errorf("VMs: %v, %v", vms, err)
		}
		vms, err = tx.VMs(VMFilter{AccountID: "ac-alice1"})
		if err != nil || len(vms) != 1 || !vms[0].BilledUntil.Equal(later) {
			t.Errorf("VMs of ac-alice1: %v, %v", vms, err)
		}
		n := 0
		return tx.ForEachVM(func(vm model.VM) error {
			if n++; vm.ID == "vm-aaaaa1" && !vm.BilledUntil.Equal(later) {
				t.Errorf("ForEachVM: %s billed until %v, want %v", vm.ID, vm.BilledUntil, later)
			}
			return nil
		})
	})
	if string(rawBefore) != string(rawAfter) {
		t.Errorf("SetBilledUntil rewrote the VM row")
	}
	var stored model.VM
	if err := json.Unmarshal(rawAfter, &stored); err != nil || !stored.BilledUntil.IsZero() {
		t.Errorf("the v/ row holds billed_until %v (%v): the billing row is the one truth", stored.BilledUntil, err)
	}

	// A stop (still bills), a move to another account, a destroy (bills
	// no more), each through PutVM; then DeleteVM.
	update(t, s, func(tx *Tx) error {
		vm, err := tx.VM("vm-aaaaa1")
		if err != nil {
			return err
		}
		vm.State, vm.AccountID, vm.Tier = model.StateStopped, "ac-carol1", "medium"
		return tx.PutVM(vm)
	})
	rows = billingRows(t, s, "")
	if len(rows) != 2 || rows[1].AccountID != "ac-carol1" || !rows[1].Bills || rows[1].Tier != "medium" || !rows[1].BilledUntil.Equal(later) {
		t.Fatalf("after a stop and a move: %v", rows)
	}
	update(t, s, func(tx *Tx) error {
		vm, err := tx.VM("vm-aaaaa1")
		if err != nil {
			return err
		}
		vm.State = model.StateGraveyard
		return tx.PutVM(vm)
	})
	if rows = billingRows(t, s, "ac-carol1"); len(rows) != 1 || rows[0].Bills {
		t.Fatalf("after a destroy: %v", rows)
	}
	update(t, s, func(tx *Tx) error { return tx.DeleteVM("vm-aaaaa1") })
	if rows = billingRows(t, s, ""); len(rows) != 1 || rows[0].VMID != "vm-aaaaa2" {
		t.Fatalf("after DeleteVM: %v", rows)
	}
}

// TestBillingConflicts: a billing write and a PutVM of the same VM from
// the same snapshot cannot both commit: the second runs again and sees
// the first's BilledUntil, so a period and a final charge never both
// book the same time.
func TestBillingConflicts(t *testing.T) {
	s := openMem(t)
	ctx := context.Background()
	update(t, s, func(tx *Tx) error { return tx.PutVM(testVM("vm-aaaaa1", "ac-alice1", model.StateRunning)) })
	period := t0.Add(3 * time.Hour)
	stop := t0.Add(3*time.Hour + 5*time.Minute)
	runs := 0
	err := s.Update(ctx, func(tx *Tx) error {
		runs++
		var row Billing
		if err := tx.ForEachBilling("", BillingCursor{}, func(b Billing) error {
			row = b
			return nil
		}); err != nil {
			return err
		}
		if runs == 1 {
			// A stop books its final charge and commits meanwhile.
			if err := s.Update(ctx, func(tx *Tx) error {
				vm, err := tx.VM("vm-aaaaa1")
				if err != nil {
					return err
				}
				vm.State, vm.BilledUntil = model.StateStopped, stop
				return tx.PutVM(vm)
			}); err != nil {
				return err
			}
		}
		if runs == 2 && !row.BilledUntil.Equal(stop) {
			t.Errorf("the period's second run reads billed until %v, want the stop's %v", row.BilledUntil, stop)
		}
		if row.BilledUntil.Before(period) {
			return tx.SetBilledUntil(row, period)
		}
		return nil
	})
	if err != nil || runs != 2 {
		t.Fatalf("period: %v after %d runs; want a conflict and a second run", err, runs)
	}
	view(t, s, func(tx *Tx) error {
		vm, err := tx.VM("vm-aaaaa1")
		if err != nil || !vm.BilledUntil.Equal(stop) || vm.State != model.StateStopped {
			t.Errorf("VM after both: %s billed until %v, %v", vm.State, vm.BilledUntil, err)
		}
		return nil
	})
}

// TestMigrateBillingRows: a store at schema 1 (BilledUntil in the v/ rows,
// no billing rows) opens at schema 2 with a billing row per VM, in more
// than one transaction when they do not fit in one.
func TestMigrateBillingRows(t *testing.T) {
	dir := t.TempDir()
	const n = 20_000 // some 1.5 MiB of billing rows: two transactions at least
	db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
	if err != nil {
		t.Fatal(err)
	}
	wb := db.NewWriteBatch()
	if err := wb.Set([]byte(keySchema), binary.BigEndian.AppendUint32(nil, 1)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		vm := testVM(fmt.Sprintf("vm-%06d", i), fmt.Sprintf("ac-%06d", i%7), model.StateRunning)
		vm.BilledUntil = t0.Add(time.Duration(i) * time.Second)
		b, _ := json.Marshal(vm)
		if err := wb.Set(vmKey(vm.ID), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	s := openDir(t, dir)
	defer s.Close()
	rows := billingRows(t, s, "")
	if len(rows) != n {
		t.Fatalf("%d billing rows after the migration, want %d", len(rows), n)
	}
	view(t, s, func(tx *Tx) error {
		for _, i := range []int{0, 7_777, n - 1} {
			vm, err := tx.VM(fmt.Sprintf("vm-%06d", i))
			if err != nil || !vm.BilledUntil.Equal(t0.Add(time.Duration(i)*time.Second)) {
				t.Errorf("vm %d after the migration: billed until %v, %v", i, vm.BilledUntil, err)
			}
		}
		item, err := tx.txn.Get([]byte(keySchema))
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if got := binary.BigEndian.Uint32(v); got != SchemaVersion {
				t.Errorf("schema %d after the migration, want %d", got, SchemaVersion)
			}
			return nil
		})
	})
}

// TestBillingRowDamaged: a billing row that does not decode is an error
// that says the state directory is damaged, not a zero BilledUntil.
func TestBillingRowDamaged(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error { return tx.PutVM(testVM("vm-aaaaa1", "ac-alice1", model.StateRunning)) })
	update(t, s, func(tx *Tx) error { return tx.set(billingKey("ac-alice1", "vm-aaaaa1"), []byte{1, 1, 200}, "damage") })
	err := s.View(context.Background(), func(tx *Tx) error {
		_, err := tx.VM("vm-aaaaa1")
		return err
	})
	if err == nil || errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("VM with a damaged billing row: %v", err)
	}
}
