package appliance

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/btrfs"
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

// TestBackupSizes: a backup's size is what deleting it would free. Just
// taken it is 0 (it shares everything with its VM); once the guest rewrites
// what the backup holds, the backup holds that alone. A VM's own list reads
// sizes live; the list across VMs shows them as of the VM's last daily
// backup.
func TestBackupSizes(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("sized", 100*model.Credit, 5)
	vm := e.vm(acct.ID)
	dir, err := e.pool.VMPath(vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	const MiB = 1 << 20
	write := func(seed byte) { // the guest writes 1 MiB at the start of its disk
		t.Helper()
		f, err := os.OpenFile(filepath.Join(dir, btrfs.RootfsFile), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if _, err := f.WriteAt(bytes.Repeat([]byte{seed}, MiB), 0); err != nil {
			t.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			t.Fatal(err)
		}
	}
	sizes := func(list []model.Backup) map[string]int64 {
		out := map[string]int64{}
		for _, b := range list {
			out[b.ID] = b.SizeBytes
		}
		return out
	}
	live := func() map[string]int64 {
		t.Helper()
		list, err := e.a.Backups(ctx, vm.ID)
		if err != nil {
			t.Fatal(err)
		}
		return sizes(list)
	}

	write(1)
	bk, err := e.a.CreateBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := live()[bk.ID]; got != 0 || bk.SizeBytes != 0 {
		t.Errorf("a backup just taken holds %d bytes alone (%d when taken); want 0", got, bk.SizeBytes)
	}
	write(2) // the guest rewrites what the backup holds
	if got := live()[bk.ID]; got != MiB {
		t.Errorf("after the guest rewrote 1 MiB the backup holds, it holds %d bytes alone; want %d", got, MiB)
	}
	stored, err := e.a.ListBackups(ctx, BackupFilter{VMID: vm.ID})
	if err != nil {
		t.Fatal(err)
	}
	if got := sizes(stored)[bk.ID]; got != 0 {
		t.Errorf("the list across VMs shows %d before the daily pass; want the size as taken, 0", got)
	}

	// The daily backup reads the sizes of the backups the VM keeps again.
	e.advance(25 * time.Hour)
	stored, err = e.a.ListBackups(ctx, BackupFilter{VMID: vm.ID})
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 2 {
		t.Fatalf("backups after a day: %+v; want the on-demand one and a daily one", stored)
	}
	for _, b := range stored {
		want := int64(0) // the daily one, just taken
		if b.ID == bk.ID {
			want = MiB
		}
		if b.SizeBytes != want {
			t.Errorf("%s %s in the list across VMs: %d bytes; want %d", b.Kind, b.ID, b.SizeBytes, want)
		}
	}
	if got := live(); !maps.Equal(got, sizes(stored)) {
		t.Errorf("live sizes %v, stored %v; want the same right after the daily pass", got, sizes(stored))
	}
}
