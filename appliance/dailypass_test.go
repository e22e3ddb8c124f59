package appliance

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// TestDailyPassBatch: running and stopped VMs all due at once are backed
// up by one pass in one batch; each running guest is frozen only around
// its own snapshot (no other guest is frozen then, none while the batch
// is saved), its backup is recorded frozen with how long it was, stopped
// ones are offline, every VM's next backup moves to its next day, and each
// backup went through its steps as an operation of its own.
func TestDailyPassBatch(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("batch", 1000*model.Credit, 2)
	var vms []model.VM
	for i := range 5 {
		vm := e.vm(acct.ID)
		if i >= 3 {
			if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
		}
		vms = append(vms, vm)
	}
	due := e.clk.Now().Add(time.Hour)
	if err := e.st.Update(ctx, func(tx *store.Tx) error {
		for _, vm := range vms {
			cur, err := tx.VM(vm.ID)
			if err != nil {
				return err
			}
			cur.NextBackupAt = due
			if err := tx.PutVM(cur); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	hv := e.hv.(*stubHypervisor)
	frozenNow := func() int {
		hv.mu.Lock()
		defer hv.mu.Unlock()
		n := 0
		for _, m := range hv.running {
			m.mu.Lock()
			if m.frozen {
				n++
			}
			m.mu.Unlock()
		}
		return n
	}
	var atSnapshot []int
	savedFrozen := -1
	e.a.testHook = func(_ context.Context, p string) {
		switch p {
		case "backup:snapshot":
			atSnapshot = append(atSnapshot, frozenNow())
		case "backup:saved":
			savedFrozen = max(savedFrozen, frozenNow())
		}
	}
	defer func() { e.a.testHook = nil }()
	e.clk.Advance(time.Hour)
	if err := e.a.runDue(ctx, due); err != nil {
		t.Fatal(err)
	}
	// Snapshots of the 3 running guests see their own guest frozen, of the
	// 2 stopped ones none.
	if len(atSnapshot) != 5 {
		t.Fatalf("snapshots taken: %d, want 5", len(atSnapshot))
	}
	ones := 0
	for _, n := range atSnapshot {
		if n > 1 {
			t.Errorf("%d guests frozen at one snapshot, want only its own", n)
		}
		ones += n
	}
	if ones != 3 {
		t.Errorf("guests frozen at each snapshot: %v, want three 1s and two 0s", atSnapshot)
	}
	if savedFrozen != 0 {
		t.Errorf("%d guests still frozen while the batch was saved, want none", savedFrozen)
	}
	for i, vm := range vms {
		bks, err := e.a.Backups(ctx, vm.ID)
		if err != nil || len(bks) != 1 {
			t.Fatalf("%s: backups %+v (%v), want 1", vm.ID, bks, err)
		}
		b := bks[0]
		want := model.Offline
		if i < 3 {
			want = model.Frozen
		}
		if b.Kind != model.Scheduled || b.Consistency != want || (want == model.Frozen) != (b.FrozenMS > 0) {
			t.Errorf("%s: backup %s %s frozen %d ms, want scheduled %s", vm.ID, b.Kind, b.Consistency, b.FrozenMS, want)
		}
		if next := e.getVM(vm.ID).NextBackupAt; !next.Equal(nextBackupAt(vm.ID, due)) {
			t.Errorf("%s: next backup at %v, want %v", vm.ID, next, nextBackupAt(vm.ID, due))
		}
		ops, err := e.a.Operations(ctx, OpFilter{VMID: vm.ID})
		if err != nil {
			t.Fatal(err)
		}
		ops = slices.DeleteFunc(ops, func(o model.Operation) bool { return o.Kind != model.OpBackup })
		if len(ops) != 1 || ops[0].State != model.OpDone || ops[0].BackupID != b.ID {
			t.Fatalf("%s: backup operations %+v, want one, done, of %s", vm.ID, ops, b.ID)
		}
		steps := "recorded,snapshot,saved"
		if i < 3 {
			steps = "recorded,frozen,snapshot,thawed,saved"
		}
		var in intent
		if err := json.Unmarshal(ops[0].Intent, &in); err != nil {
			t.Fatal(err)
		}
		if got := strings.Join(in.Steps, ","); got != steps {
			t.Errorf("%s: steps %s, want %s", vm.ID, got, steps)
		}
	}
	if n := frozenNow(); n != 0 {
		t.Errorf("%d guests left frozen", n)
	}
	e.checkConsistent()
}
