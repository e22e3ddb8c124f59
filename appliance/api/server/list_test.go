package server

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

var listEpoch = time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)

// putVMs stores n stopped VMs of acct straight into the store (as
// BenchmarkVMList does), the i-th created at created(i), and returns their
// ids in the order they were put.
func putVMs(tb testing.TB, st *store.Store, acct string, n int, created func(i int) time.Time) []string {
	tb.Helper()
	var ids []string
	for i := 0; i < n; i += 100 {
		err := st.Update(context.Background(), func(tx *store.Tx) error {
			for j := i; j < min(i+100, n); j++ {
				id, err := tx.NewID(model.KindVM)
				if err != nil {
					return err
				}
				state := model.StateStopped
				if j%10 == 3 {
					state = model.StateGraveyard
				}
				vm := model.VM{
					ID: id, AccountID: acct, Name: fmt.Sprintf("vm-%04d", j), Tier: "small", Image: appliance.DefaultImage,
					State: state, LastIP: netip.AddrFrom4([4]byte{10, 77, byte(j >> 8), byte(j)}),
					Ports: []model.Port{{Proto: "tcp", Number: 443}}, Domains: []string{fmt.Sprintf("app%d.example.com", j)},
					CreatedAt: created(j), StoppedAt: created(j), BilledUntil: created(j),
				}
				if err := tx.PutVM(vm); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
	return ids
}

func vmIDs(vms []model.VM) []string {
	out := make([]string, len(vms))
	for i, vm := range vms {
		out[i] = vm.ID
	}
	return out
}

// TestVMListPages walks 1,000 VMs in pages of 7 through the socket: each
// VM once, in the order of the whole list (oldest first, ties by id); then
// again while VMs are created and destroyed between pages: no VM twice,
// none missing that existed throughout, still in order.
func TestVMListPages(t *testing.T) {
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, _ := serve(t, app)
	ctx := context.Background()
	acct, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bench", Balance: model.MaxAmount})
	if err != nil {
		t.Fatal(err)
	}
	// 40 creation times for 1,000 VMs: most of the order is the ties'.
	putVMs(t, st, acct.ID, 1000, func(i int) time.Time { return listEpoch.Add(time.Duration(i*7919%40) * time.Minute) })

	whole, err := c.VMs(ctx, api.VMFilter{})
	if err != nil || len(whole) != 1000 {
		t.Fatalf("VMs = %d, %v; want 1000", len(whole), err)
	}
	for i := 1; i < len(whole); i++ {
		a, b := whole[i-1], whole[i]
		if a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID >= b.ID {
			t.Fatalf("whole list out of order at %d: %s %v, then %s %v", i, a.ID, a.CreatedAt, b.ID, b.CreatedAt)
		}
	}

	var paged []model.VM
	cursor, pages := "", 0
	for {
		page, next, err := c.VMPage(ctx, api.VMFilter{}, api.Page{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if len(page) > 7 || len(page) < 7 && next != "" {
			t.Fatalf("page %d has %d VMs and next cursor %q", pages, len(page), next)
		}
		paged = append(paged, page...)
		if next == "" {
			break
		}
		cursor = next
	}
	if pages != 143 || !slices.Equal(vmIDs(paged), vmIDs(whole)) {
		t.Fatalf("%d pages of 7 gave %d VMs, not the whole list of %d in its order", pages, len(paged), len(whole))
	}
	if all, err := c.VMsByPage(ctx, api.VMFilter{}, 7); err != nil || !slices.Equal(vmIDs(all), vmIDs(whole)) {
		t.Fatalf("VMsByPage = %d VMs, %v; want the whole list", len(all), err)
	}

	// Churn: between pages, destroy a VM already listed and one not yet
	// listed, and create two: one newer than all, one among the oldest.
	seen := map[string]int{}
	gone := map[string]bool{}
	var walked []model.VM
	cursor = ""
	for round := 0; ; round++ {
		page, next, err := c.VMPage(ctx, api.VMFilter{}, api.Page{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatalf("churn page %d: %v", round, err)
		}
		for _, vm := range page {
			seen[vm.ID]++
		}
		walked = append(walked, page...)
		if next == "" {
			break
		}
		cursor = next
		err = st.Update(ctx, func(tx *store.Tx) error {
			for _, id := range []string{walked[len(walked)/2].ID, whole[(round*13+500)%1000].ID} {
				if gone[id] {
					continue
				}
				gone[id] = true
				if err := tx.DeleteVM(id); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		putVMs(t, st, acct.ID, 1, func(int) time.Time { return listEpoch.Add(time.Hour + time.Duration(round)*time.Second) })
		putVMs(t, st, acct.ID, 1, func(int) time.Time { return listEpoch })
	}
	for i := 1; i < len(walked); i++ {
		if a, b := walked[i-1], walked[i]; a.CreatedAt.After(b.CreatedAt) || a.CreatedAt.Equal(b.CreatedAt) && a.ID >= b.ID {
			t.Fatalf("walk out of order at %d: %s %v, then %s %v", i, a.ID, a.CreatedAt, b.ID, b.CreatedAt)
		}
	}
	missing := 0
	for _, vm := range whole {
		if !gone[vm.ID] && seen[vm.ID] != 1 {
			missing++
			t.Errorf("%s existed throughout and was listed %d times", vm.ID, seen[vm.ID])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s listed %d times", id, n)
		}
	}
	if len(gone) < 100 || missing > 0 {
		t.Fatalf("%d VMs destroyed during the walk, %d missed", len(gone), missing)
	}
	// The newest VMs made during the walk come at its end.
	if last := walked[len(walked)-1]; !last.CreatedAt.After(listEpoch.Add(time.Hour)) {
		t.Errorf("the walk ends with %s created %v; want one created during it", last.ID, last.CreatedAt)
	}
}

// TestVMListFilters filters in the daemon, alone and with pages.
func TestVMListFilters(t *testing.T) {
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, _ := serve(t, app)
	ctx := context.Background()
	alice, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bob", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	at := func(i int) time.Time { return listEpoch.Add(time.Duration(i) * time.Hour) }
	putVMs(t, st, alice.ID, 30, at)
	putVMs(t, st, bob.ID, 20, at)
	whole, err := c.VMs(ctx, api.VMFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    api.VMFilter
		keep func(model.VM) bool
	}{
		{api.VMFilter{AccountID: alice.ID}, func(vm model.VM) bool { return vm.AccountID == alice.ID }},
		{api.VMFilter{State: model.StateGraveyard}, func(vm model.VM) bool { return vm.State == model.StateGraveyard }},
		{api.VMFilter{AccountID: bob.ID, State: model.StateStopped}, func(vm model.VM) bool {
			return vm.AccountID == bob.ID && vm.State == model.StateStopped
		}},
		{api.VMFilter{NamePrefix: "vm-001"}, func(vm model.VM) bool { return strings.HasPrefix(vm.Name, "vm-001") }},
		{api.VMFilter{AccountID: alice.ID, NamePrefix: "vm-002", Image: appliance.DefaultImage}, func(vm model.VM) bool {
			return vm.AccountID == alice.ID && strings.HasPrefix(vm.Name, "vm-002")
		}},
		{api.VMFilter{Image: "alpine-3"}, func(model.VM) bool { return false }},
	} {
		var want []string
		for _, vm := range whole {
			if tc.keep(vm) {
				want = append(want, vm.ID)
			}
		}
		got, err := c.VMs(ctx, tc.f)
		if err != nil || !slices.Equal(vmIDs(got), want) {
			t.Errorf("VMs(%+v) = %v, %v\nwant %v", tc.f, vmIDs(got), err, want)
		}
		if paged, err := c.VMsByPage(ctx, tc.f, 3); err != nil || !slices.Equal(vmIDs(paged), want) {
			t.Errorf("VMsByPage(%+v, 3) = %v, %v\nwant %v", tc.f, vmIDs(paged), err, want)
		}
	}
	if _, err := c.VMs(ctx, api.VMFilter{AccountID: "ac-zzzzzz"}); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("VMs of an account that does not exist = %v, want not found", err)
	}
}

// TestListBadPages: a limit out of range, a cursor that no list gave out,
// another list's cursor: 400, saying what to do; a cursor of the right
// form is a place in the order, whoever made it.
func TestListBadPages(t *testing.T) {
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, sock := serve(t, app)
	ctx := context.Background()
	acct, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	ids := putVMs(t, st, acct.ID, 5, func(i int) time.Time { return listEpoch.Add(time.Duration(i) * time.Hour) })
	err = st.Update(ctx, func(tx *store.Tx) error {
		return tx.PutBackup(model.Backup{ID: "bk-0000000001", VMID: ids[0], Kind: model.OnDemand, TakenAt: listEpoch, Consistency: model.Offline})
	})
	if err != nil {
		t.Fatal(err)
	}
	_, vmCursor, err := c.VMPage(ctx, api.VMFilter{}, api.Page{Limit: 1})
	if err != nil || vmCursor == "" {
		t.Fatalf("VMPage = %q, %v", vmCursor, err)
	}
	b64 := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct{ path, says string }{
		{"/v1/vms?limit=0", "1 to 1000"},
		{"/v1/vms?limit=1001", "1 to 1000"},
		{"/v1/vms?limit=ten", "1 to 1000"},
		{"/v1/backups?limit=-5", "1 to 1000"},
		{"/v1/vms?limit=5&cursor=%25%25%25", "without a cursor to start from the first page"},
		{"/v1/vms?limit=5&cursor=" + b64("vm1 2026-10-01T00:00:00Z vm-x"), "without a cursor"},
		{"/v1/vms?limit=5&cursor=" + b64("vm1 noon "+ids[0]), "without a cursor"},
		{"/v1/vms?limit=5&cursor=" + b64("vm1 2026-10-01T00:00:00Z "+ids[0]+" more"), "without a cursor"},
		{"/v1/vms?limit=5&cursor=" + b64("bk1 "+ids[0]+" 2026-10-01T00:00:00Z bk-0000000001"), "not one that `vm list` gave out"},
		{"/v1/backups?limit=5&cursor=" + vmCursor, "not one that `backup list` gave out"},
		{"/v1/backups?limit=5&cursor=" + b64("bk1 "+ids[0]+" 2026-10-01T00:00:00Z vm-abcdef"), "without a cursor"},
		{"/v1/vms?name_prefix=-x", "name prefix"},
		{"/v1/backups?kind=daily", "scheduled or on_demand"},
	} {
		status, body := rawDo(t, sock, "GET", tc.path, "", nil)
		if status != http.StatusBadRequest || !strings.Contains(string(body), tc.says) {
			t.Errorf("GET %s = %d %s; want 400 saying %q", tc.path, status, body, tc.says)
		}
	}
	// A cursor of the right form that names no VM is still a place.
	from := b64("vm1 " + listEpoch.Add(90*time.Minute).Format(time.RFC3339Nano) + " vm-zzzzzz")
	got, next, err := c.VMPage(ctx, api.VMFilter{}, api.Page{Limit: 2, Cursor: from})
	if err != nil || !slices.Equal(vmIDs(got), ids[2:4]) || next == "" {
		t.Errorf("VMPage after 1.5 h = %v, %q, %v; want %v and a next page", vmIDs(got), next, err, ids[2:4])
	}
	// Times out of Unix nanoseconds' range page like any other.
	odd := append(putVMs(t, st, acct.ID, 1, func(int) time.Time { return time.Time{} }),
		putVMs(t, st, acct.ID, 1, func(int) time.Time { return time.Date(2400, 1, 1, 0, 0, 0, 0, time.UTC) })...)
	if all, err := c.VMsByPage(ctx, api.VMFilter{}, 1); err != nil || !slices.Equal(vmIDs(all), append(append([]string{odd[0]}, ids...), odd[1])) {
		t.Errorf("VMsByPage(1) with VMs made in year 1 and 2400 = %v, %v", vmIDs(all), err)
	}
	// A cursor without a limit: the rest of the list.
	if got, next, err := c.VMPage(ctx, api.VMFilter{}, api.Page{Cursor: from}); err != nil || !slices.Equal(vmIDs(got), append(ids[2:], odd[1])) || next != "" {
		t.Errorf("VMPage after 1.5 h without limit = %v, %q, %v; want %v", vmIDs(got), next, err, append(ids[2:], odd[1]))
	}
}

// TestBackupListPages walks the backups of 60 VMs (5 each) in pages of 7,
// whole and filtered, and gets the whole list's order, each backup once,
// also while backups are taken and deleted between pages.
func TestBackupListPages(t *testing.T) {
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, _ := serve(t, app)
	ctx := context.Background()
	alice, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bob", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	at := func(i int) time.Time { return listEpoch.Add(time.Duration(i) * time.Hour) }
	vms := append(putVMs(t, st, alice.ID, 40, at), putVMs(t, st, bob.ID, 20, at)...)
	putBackups(t, st, vms, 5)

	for _, f := range []api.BackupFilter{{}, {AccountID: bob.ID}, {Kind: model.OnDemand}, {AccountID: alice.ID, Kind: model.Scheduled}, {VMID: vms[3]}} {
		whole, err := c.ListBackups(ctx, f)
		if err != nil || len(whole) < 5 {
			t.Fatalf("ListBackups(%+v) = %d, %v", f, len(whole), err)
		}
		paged, err := c.BackupsByPage(ctx, f, 7)
		if err != nil || !slices.Equal(backupIDs(paged), backupIDs(whole)) {
			t.Errorf("BackupsByPage(%+v, 7) = %d backups, %v; want the %d of the whole list in its order", f, len(paged), err, len(whole))
		}
		for _, b := range whole {
			if f.Kind != "" && b.Kind != f.Kind {
				t.Errorf("ListBackups(%+v) has %s of kind %s", f, b.ID, b.Kind)
			}
		}
	}

	whole, err := c.ListBackups(ctx, api.BackupFilter{})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	gone := map[string]bool{}
	cursor := ""
	for round := 0; ; round++ {
		page, next, err := c.BackupPage(ctx, api.BackupFilter{}, api.Page{Limit: 7, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range page {
			seen[b.ID]++
		}
		if next == "" {
			break
		}
		cursor = next
		victim := whole[(round*37+150)%len(whole)].ID
		err = st.Update(ctx, func(tx *store.Tx) error {
			if !gone[victim] {
				gone[victim] = true
				if err := tx.DeleteBackup(victim); err != nil {
					return err
				}
			}
			id, err := tx.NewID(model.KindBackup)
			if err != nil {
				return err
			}
			return tx.PutBackup(model.Backup{ID: id, VMID: vms[round%len(vms)], Kind: model.OnDemand, TakenAt: listEpoch.Add(time.Duration(round) * time.Minute), Consistency: model.Offline})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range whole {
		if !gone[b.ID] && seen[b.ID] != 1 {
			t.Errorf("%s existed throughout and was listed %d times", b.ID, seen[b.ID])
		}
	}
	for id, n := range seen {
		if n > 1 {
			t.Errorf("%s listed %d times", id, n)
		}
	}
	if len(gone) < 20 {
		t.Fatalf("only %d backups deleted during the walk", len(gone))
	}
}

func backupIDs(bs []model.Backup) []string {
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = b.ID
	}
	return out
}

// putBackups stores n backups of each VM, every third on demand.
func putBackups(tb testing.TB, st *store.Store, vms []string, n int) {
	tb.Helper()
	for i := 0; i < len(vms); i += 100 {
		err := st.Update(context.Background(), func(tx *store.Tx) error {
			for _, vm := range vms[i:min(i+100, len(vms))] {
				for j := range n {
					id, err := tx.NewID(model.KindBackup)
					if err != nil {
						return err
					}
					kind := model.Scheduled
					if j%3 == 2 {
						kind = model.OnDemand
					}
					b := model.Backup{ID: id, VMID: vm, Kind: kind, TakenAt: listEpoch.Add(time.Duration(j) * 24 * time.Hour), SizeBytes: 1 << 20, Consistency: model.Frozen, FrozenMS: 12}
					if err := tx.PutBackup(b); err != nil {
						return err
					}
				}
			}
			return nil
		})
		if err != nil {
			tb.Fatal(err)
		}
	}
}

// BenchmarkBackupList measures `backup list` of every backup through the
// API: 1,000 VMs with 5 backups each.
func BenchmarkBackupList(b *testing.B) {
	app, st := newAppliance(b, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, _ := serve(b, app)
	ctx := context.Background()
	acct, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bench", Balance: model.MaxAmount})
	if err != nil {
		b.Fatal(err)
	}
	vms := putVMs(b, st, acct.ID, 1000, func(int) time.Time { return listEpoch })
	putBackups(b, st, vms, 5)
	b.ResetTimer()
	for b.Loop() {
		bs, err := c.ListBackups(ctx, api.BackupFilter{})
		if err != nil || len(bs) != 5000 {
			b.Fatalf("ListBackups = %d, %v; want 5000", len(bs), err)
		}
	}
}
