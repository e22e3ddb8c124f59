package appliance

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestListBackups: the backups of every stored VM, live or not, ordered by
// VM id then newest first, filtered by account, VM or both; an unknown
// account or VM is not found and says what to do.
func TestListBackups(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	alice := e.account("alice", 100*model.Credit, 5)
	bob := e.account("bob", 100*model.Credit, 5)
	carol := e.account("carol", 100*model.Credit, 5)
	a1, a2, b1 := e.vm(alice.ID), e.vm(alice.ID), e.vm(bob.ID)
	taken := map[string][]string{} // VM id -> backup ids, newest first
	for range 2 {
		for _, vm := range []model.VM{a1, a2, b1} {
			e.clk.Advance(time.Minute)
			bk, err := e.a.CreateBackup(ctx, vm.ID)
			if err != nil {
				t.Fatal(err)
			}
			taken[vm.ID] = slices.Insert(taken[vm.ID], 0, bk.ID)
		}
	}
	// A VM in the graveyard keeps its backups, and they are listed.
	e.clk.Advance(2 * time.Hour)
	if _, err := e.a.DestroyVM(ctx, a2.ID); err != nil {
		t.Fatal(err)
	}
	if st := e.getVM(a2.ID).State; st != model.StateGraveyard {
		t.Fatalf("%s is %s after its destroy, want graveyard", a2.ID, st)
	}
	want := func(vms ...model.VM) []string {
		slices.SortFunc(vms, func(x, y model.VM) int { return strings.Compare(x.ID, y.ID) })
		var out []string
		for _, vm := range vms {
			out = append(out, taken[vm.ID]...)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    BackupFilter
		want []string
	}{
		{"all", BackupFilter{}, want(a1, a2, b1)},
		{"account", BackupFilter{AccountID: alice.ID}, want(a1, a2)},
		{"account without VMs", BackupFilter{AccountID: carol.ID}, nil},
		{"vm in the graveyard", BackupFilter{VMID: a2.ID}, want(a2)},
		{"vm and its account", BackupFilter{AccountID: bob.ID, VMID: b1.ID}, want(b1)},
		{"vm of another account", BackupFilter{AccountID: bob.ID, VMID: a1.ID}, nil},
	} {
		got, err := e.a.ListBackups(ctx, tc.f)
		if err != nil {
			t.Fatalf("%s: ListBackups(%+v): %v", tc.name, tc.f, err)
		}
		var ids []string
		for _, b := range got {
			ids = append(ids, b.ID)
			if !slices.Contains(taken[b.VMID], b.ID) {
				t.Errorf("%s: backup %s listed under %s, which did not take it", tc.name, b.ID, b.VMID)
			}
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("%s: ListBackups(%+v)\n got %v\nwant %v", tc.name, tc.f, ids, tc.want)
		}
	}

	_, err := e.a.ListBackups(ctx, BackupFilter{AccountID: "ac-nobody"})
	if !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "superjolt account list") {
		t.Errorf("ListBackups of an unknown account = %v, want not found with a hint", err)
	}
	_, err = e.a.ListBackups(ctx, BackupFilter{VMID: "vm-zzzzzz"})
	if !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), "superjolt vm list") {
		t.Errorf("ListBackups of an unknown VM = %v, want not found with a hint", err)
	}
	for _, f := range []BackupFilter{{AccountID: "alice"}, {VMID: "vm-1"}, {AccountID: a1.ID}} {
		if _, err := e.a.ListBackups(ctx, f); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("ListBackups(%+v) = %v, want invalid", f, err)
		}
	}
}
