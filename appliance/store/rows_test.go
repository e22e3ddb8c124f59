package store

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestTopField reads top-level members only, whatever comes before them.
func TestTopField(t *testing.T) {
	row := []byte(`{"a":{"name":"inner","x":[1,{"name":"deeper"}]},"s":"has \"name\":\"fake\" in it","name":"outer","n":-1.5e3,"b":true,"z":null}`)
	for _, tc := range []struct {
		key, want string
		ok        bool
	}{
		{"name", `"outer"`, true},
		{"n", `-1.5e3`, true},
		{"b", `true`, true},
		{"z", `null`, true},
		{"a", `{"name":"inner","x":[1,{"name":"deeper"}]}`, true},
		{"x", "", false},
	} {
		got, ok := topField(row, tc.key)
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("topField(%s) = %s, %v; want %s, %v", tc.key, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []string{``, `[]`, `{"name"`, `{"name":"x`, `{"a":[1,2}`, `{"a":1 "name":"x"}`} {
		if v, ok := topField([]byte(bad), "name"); ok {
			t.Errorf("topField(%s) = %s, want no value", bad, v)
		}
	}
	if s, ok := topString([]byte(`{"name":"a\u0062"}`), "name", true); ok {
		t.Errorf("topString of an escaped string = %q; want it left to the decoder", s)
	}
}

// TestParseUTC agrees with time.Time's JSON decoding, and leaves what it
// does not parse to it.
func TestParseUTC(t *testing.T) {
	for _, tm := range []time.Time{
		time.Date(2026, 12, 1, 12, 4, 5, 0, time.UTC),
		time.Date(2026, 12, 1, 12, 4, 5, 120_000_000, time.UTC),
		time.Date(1999, 2, 28, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(2026, 3, 1, 0, 0, 0, 1, time.UTC),
	} {
		b, _ := json.Marshal(tm)
		got, ok := parseUTC(b[1 : len(b)-1])
		if !ok || !got.Equal(tm) {
			t.Errorf("parseUTC(%s) = %v, %v; want %v", b, got, ok, tm)
		}
	}
	for _, s := range []string{"2026-12-01T12:04:05+01:00", "2026-02-30T00:00:00Z", "2026-12-01T24:00:00Z", "2026-12-01T12:04:05.Z", "2026-12-01 12:04:05Z", "2026-12-01T12:04:05.1234567890Z"} {
		if got, ok := parseUTC([]byte(s)); ok {
			t.Errorf("parseUTC(%s) = %v; want it refused", s, got)
		}
	}
	// Another zone still orders right, through time.Parse.
	row := []byte(`{"created_at":"2026-12-01T13:04:05+01:00"}`)
	if got, ok := topTime(row, "created_at"); !ok || !got.Equal(time.Date(2026, 12, 1, 12, 4, 5, 0, time.UTC)) {
		t.Errorf("topTime(%s) = %v, %v", row, got, ok)
	}
}

// TestVMRows checks that rows are the stored JSON, each VM once, with the
// filters the list offers, and that VMs decodes them to what was put.
func TestVMRows(t *testing.T) {
	s := openMem(t)
	var put []model.VM
	update(t, s, func(tx *Tx) error {
		for i := range 30 {
			acct := []string{"ac-alice1", "ac-bob123"}[i%2]
			state := []model.VMState{model.StateRunning, model.StateStopped, model.StateGraveyard}[i%3]
			vm := testVM(fmt.Sprintf("vm-abc%03d", i), acct, state)
			vm.Name = []string{"web-", "db-"}[i%2] + fmt.Sprint(i)
			vm.Image = []string{"debian-12", "alpine-3"}[i%5/4]
			vm.CreatedAt = t0.Add(time.Duration(30-i) * time.Minute)
			if state != model.StateRunning {
				vm.IP = netip.Addr{}
			}
			if err := tx.PutVM(vm); err != nil {
				return err
			}
			got, err := tx.VM(vm.ID)
			if err != nil {
				return err
			}
			put = append(put, got)
		}
		return nil
	})
	match := func(keep func(model.VM) bool) []string {
		var out []string
		for _, vm := range put {
			if keep(vm) {
				out = append(out, vm.ID)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    VMFilter
		want []string
	}{
		{"all", VMFilter{}, match(func(model.VM) bool { return true })},
		{"account", VMFilter{AccountID: "ac-alice1"}, match(func(vm model.VM) bool { return vm.AccountID == "ac-alice1" })},
		{"state", VMFilter{State: model.StateStopped}, match(func(vm model.VM) bool { return vm.State == model.StateStopped })},
		{"account and state", VMFilter{AccountID: "ac-bob123", State: model.StateGraveyard}, match(func(vm model.VM) bool {
			return vm.AccountID == "ac-bob123" && vm.State == model.StateGraveyard
		})},
		{"name prefix", VMFilter{NamePrefix: "db-1"}, match(func(vm model.VM) bool { return len(vm.Name) >= 4 && vm.Name[:4] == "db-1" })},
		{"image and account", VMFilter{AccountID: "ac-alice1", Image: "alpine-3"}, match(func(vm model.VM) bool {
			return vm.AccountID == "ac-alice1" && vm.Image == "alpine-3"
		})},
		{"no such image", VMFilter{Image: "arch"}, nil},
		{"account without VMs", VMFilter{AccountID: "ac-carol1"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.want) == 0 && tc.name != "no such image" && tc.name != "account without VMs" {
				t.Fatal("the case selects nothing: it tests nothing")
			}
			view(t, s, func(tx *Tx) error {
				rows, err := tx.VMRows(tc.f)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, r := range rows {
					got = append(got, r.ID)
					var vm model.VM
					if err := json.Unmarshal(r.JSON, &vm); err != nil {
						t.Fatalf("row %s: %v", r.ID, err)
					}
					want := put[slices.IndexFunc(put, func(v model.VM) bool { return v.ID == r.ID })]
					want.BilledUntil = time.Time{} // kept in the billing row, not the v/ row
					if b1, b2 := mustJSON(t, vm), mustJSON(t, want); b1 != b2 || !r.CreatedAt.Equal(want.CreatedAt) {
						t.Errorf("row %s = %s (created %v)\nwant %s (created %v)", r.ID, b1, r.CreatedAt, b2, want.CreatedAt)
					}
				}
				if !slices.Equal(got, tc.want) {
					t.Errorf("VMRows(%+v):\n got %v\nwant %v", tc.f, got, tc.want)
				}
				vms, err := tx.VMs(tc.f)
				if err != nil || len(vms) != len(tc.want) {
					t.Errorf("VMs(%+v) = %d VMs, %v; want %d", tc.f, len(vms), err, len(tc.want))
				}
				return nil
			})
		})
	}
}

func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestBackupRowsPages walks every backup list a page at a time, from after
// each page's last backup, and gets the whole list once, in order, with the
// kind filter counted before the limit.
func TestBackupRowsPages(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 6 {
			vm := fmt.Sprintf("vm-abc%03d", i)
			if err := tx.PutVM(testVM(vm, []string{"ac-alice1", "ac-bob123"}[i%2], model.StateStopped)); err != nil {
				return err
			}
			for j := range i % 4 * 2 {
				b := testBackup(fmt.Sprintf("bk-%02d%02d000000", i, j), vm, t0.Add(time.Duration(j%3)*time.Hour))
				if j%3 == 1 {
					b.Kind = model.OnDemand
				}
				if err := tx.PutBackup(b); err != nil {
					return err
				}
			}
		}
		return nil
	})
	for _, f := range []BackupFilter{{}, {AccountID: "ac-alice1"}, {VMID: "vm-abc003"}, {Kind: model.OnDemand}, {AccountID: "ac-bob123", Kind: model.Scheduled}} {
		view(t, s, func(tx *Tx) error {
			all, err := tx.BackupRows(f)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) < 3 {
				t.Fatalf("BackupRows(%+v) has %d rows: too few to page", f, len(all))
			}
			for _, r := range all {
				var b model.Backup
				if err := json.Unmarshal(r.JSON, &b); err != nil || b.ID != r.ID || b.VMID != r.VMID || !b.TakenAt.Equal(r.TakenAt) {
					t.Errorf("row %s/%s/%v holds %s (%v)", r.VMID, r.TakenAt, r.ID, r.JSON, err)
				}
				if f.Kind != "" && b.Kind != f.Kind {
					t.Errorf("BackupRows(%+v) has a %s backup", f, b.Kind)
				}
			}
			for _, limit := range []int{1, 2, 3} {
				var got []BackupRow
				g := f
				g.Limit = limit
				for range len(all) + 1 {
					page, err := tx.BackupRows(g)
					if err != nil {
						t.Fatal(err)
					}
					if len(page) > limit {
						t.Fatalf("page of %d rows with limit %d", len(page), limit)
					}
					got = append(got, page...)
					if len(page) < limit {
						break
					}
					last := page[len(page)-1]
					g.After = BackupPos{VMID: last.VMID, TakenAt: last.TakenAt, ID: last.ID}
				}
				if !slices.EqualFunc(got, all, func(a, b BackupRow) bool { return a.ID == b.ID }) {
					t.Errorf("BackupRows(%+v) by pages of %d:\n got %v\nwant %v", f, limit, backupRowIDs(got), backupRowIDs(all))
				}
			}
			return nil
		})
	}
}

func backupRowIDs(rows []BackupRow) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.ID)
	}
	return out
}
