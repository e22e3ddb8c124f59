package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestPutVMDropsStaleStop: a VM written running loses the time and
// reason of its last stop, whichever verb wrote it.
func TestPutVMDropsStaleStop(t *testing.T) {
	s := openMem(t)
	vm := testVM("vm-abc123", "ac-alice1", model.StateRunning)
	vm.StopReason = model.StopOperator
	if err := s.Update(context.Background(), func(tx *Tx) error { return tx.PutVM(vm) }); err != nil {
		t.Fatal(err)
	}
	var got model.VM
	if err := s.View(context.Background(), func(tx *Tx) error {
		var err error
		got, err = tx.VM(vm.ID)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !got.StoppedAt.IsZero() || got.StopReason != "" {
		t.Errorf("running VM stored with stop %v (%q)", got.StoppedAt, got.StopReason)
	}
}

func TestRoundTrip(t *testing.T) {
	// Stopped: a running VM keeps no stop time or reason (TestPutVMDropsStaleStop).
	vm := testVM("vm-abc123", "ac-alice1", model.StateStopped)
	vm.StopReason = model.StopGuestPowerOff
	vm.DestroyedAt = t0.Add(3 * time.Hour)
	vm.ArchivedAt = t0.Add(4 * time.Hour)
	vm.ReclaimAt = t0.Add(27 * time.Hour)
	tests := []struct {
		name string
		put  func(tx *Tx) error
		get  func(tx *Tx) (any, error)
		want any
	}{
		{
			name: "account",
			put:  func(tx *Tx) error { return tx.PutAccount(testAccount("ac-alice1")) },
			get:  func(tx *Tx) (any, error) { return tx.Account("ac-alice1") },
			want: testAccount("ac-alice1"),
		},
		{
			name: "account with negative balance",
			put: func(tx *Tx) error {
				a := testAccount("ac-bob222")
				a.Balance = -3
				a.Entitlements = model.Entitlements{BackupRetention: 30, VMLimit: 0}
				return tx.PutAccount(a)
			},
			get: func(tx *Tx) (any, error) { return tx.Account("ac-bob222") },
			want: func() model.Account {
				a := testAccount("ac-bob222")
				a.Balance = -3
				a.Entitlements = model.Entitlements{BackupRetention: 30, VMLimit: 0}
				return a
			}(),
		},
		{
			name: "tier",
			put:  func(tx *Tx) error { return tx.PutTier(model.DefaultTiers()[2]) },
			get:  func(tx *Tx) (any, error) { return tx.Tier(model.DefaultTiers()[2].Name) },
			want: model.DefaultTiers()[2],
		},
		{
			name: "image",
			put: func(tx *Tx) error {
				return tx.PutImage(model.Image{Name: "debian-12.7_x86", Builtin: true, SizeBytes: 1 << 30, CreatedAt: t0})
			},
			get:  func(tx *Tx) (any, error) { return tx.Image("debian-12.7_x86") },
			want: model.Image{Name: "debian-12.7_x86", Builtin: true, SizeBytes: 1 << 30, CreatedAt: t0},
		},
		{
			name: "vm with every field",
			put:  func(tx *Tx) error { return tx.PutVM(vm) },
			get:  func(tx *Tx) (any, error) { return tx.VM(vm.ID) },
			want: vm,
		},
		{
			name: "vm in the graveyard with no IP",
			put: func(tx *Tx) error {
				v := testVM("vm-zz9zz9", "ac-alice1", model.StateGraveyard)
				v.IP = netip.Addr{}
				v.Ports, v.Domains = nil, nil
				return tx.PutVM(v)
			},
			get: func(tx *Tx) (any, error) { return tx.VM("vm-zz9zz9") },
			want: func() model.VM {
				v := testVM("vm-zz9zz9", "ac-alice1", model.StateGraveyard)
				v.IP = netip.Addr{}
				v.Ports, v.Domains = nil, nil
				return v
			}(),
		},
		{
			name: "vm with an IPv6 address",
			put: func(tx *Tx) error {
				v := testVM("vm-ipv6ab", "ac-alice1", model.StateStopped)
				v.IP = netip.MustParseAddr("fd00::7")
				return tx.PutVM(v)
			},
			get: func(tx *Tx) (any, error) { return tx.VM("vm-ipv6ab") },
			want: func() model.VM {
				v := testVM("vm-ipv6ab", "ac-alice1", model.StateStopped)
				v.IP = netip.MustParseAddr("fd00::7")
				return v
			}(),
		},
		{
			name: "backup",
			put: func(tx *Tx) error {
				return errors.Join(tx.PutVM(vm), tx.PutBackup(testBackup("bk-0123456789", "vm-abc123", t0)))
			},
			get:  func(tx *Tx) (any, error) { return tx.Backup("bk-0123456789") },
			want: testBackup("bk-0123456789", "vm-abc123", t0),
		},
		{
			name: "backup taken before 1970",
			put: func(tx *Tx) error {
				return errors.Join(tx.PutVM(vm), tx.PutBackup(testBackup("bk-old0000000", "vm-abc123", time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC))))
			},
			get:  func(tx *Tx) (any, error) { return tx.Backup("bk-old0000000") },
			want: testBackup("bk-old0000000", "vm-abc123", time.Date(1969, 7, 20, 20, 17, 0, 0, time.UTC)),
		},
		{
			name: "operation with intent",
			put: func(tx *Tx) error {
				return tx.PutOperation(model.Operation{ID: "op-restore001", Kind: model.OpRestore, VMID: "vm-abc123",
					BackupID: "bk-0123456789", State: model.OpRunning, Step: "copy", Progress: 40, StartedAt: t0,
					Intent: json.RawMessage(`{"old":"trash/vm-abc123-1","done":["stop"]}`)})
			},
			get: func(tx *Tx) (any, error) { return tx.Operation("op-restore001") },
			want: model.Operation{ID: "op-restore001", Kind: model.OpRestore, VMID: "vm-abc123",
				BackupID: "bk-0123456789", State: model.OpRunning, Step: "copy", Progress: 40, StartedAt: t0,
				Intent: json.RawMessage(`{"old":"trash/vm-abc123-1","done":["stop"]}`)},
		},
		{
			name: "failed operation",
			put: func(tx *Tx) error {
				return tx.PutOperation(model.Operation{ID: "op-failed0001", Kind: model.OpBackup, VMID: "vm-abc123",
					State: model.OpFailed, Error: "agent did not answer", ErrorCode: "unavailable", StartedAt: t0, FinishedAt: t0.Add(time.Minute)})
			},
			get: func(tx *Tx) (any, error) { return tx.Operation("op-failed0001") },
			want: model.Operation{ID: "op-failed0001", Kind: model.OpBackup, VMID: "vm-abc123",
				State: model.OpFailed, Error: "agent did not answer", ErrorCode: "unavailable", StartedAt: t0, FinishedAt: t0.Add(time.Minute)},
		},
		{
			name: "ledger charge",
			put: func(tx *Tx) error {
				_, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-ledger", At: t0, Amount: -10_000, Kind: model.Charge,
					VMID: "vm-abc123", PeriodStart: t0.Add(-time.Hour), PeriodEnd: t0, BalanceAfter: 990_000})
				return err
			},
			get: func(tx *Tx) (any, error) {
				l, err := tx.Ledger("ac-ledger", 0)
				if err != nil || len(l) != 1 {
					return l, err
				}
				return l[0], nil
			},
			want: model.LedgerEntry{AccountID: "ac-ledger", Seq: 1, At: t0, Amount: -10_000, Kind: model.Charge,
				VMID: "vm-abc123", PeriodStart: t0.Add(-time.Hour), PeriodEnd: t0, BalanceAfter: 990_000},
		},
		{
			name: "event",
			put: func(tx *Tx) error {
				_, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.created", Object: "vm-abc123", Account: "ac-alice1", Message: "created web-1"})
				return err
			},
			get: func(tx *Tx) (any, error) {
				ev, err := tx.EventsAfter(0, 0)
				if err != nil || len(ev) != 1 {
					return ev, err
				}
				return ev[0], nil
			},
			want: model.Event{Seq: 1, At: t0, Type: "vm.created", Object: "vm-abc123", Account: "ac-alice1", Message: "created web-1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMem(t)
			update(t, s, tt.put)
			// Read back both in a new transaction (from the committed state)
			// and in the writing one (from its pending writes).
			view(t, s, func(tx *Tx) error {
				got, err := tt.get(tx)
				if err != nil {
					t.Fatalf("get after commit: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Errorf("after commit:\n got %+v\nwant %+v", got, tt.want)
				}
				return nil
			})
			err := s.Update(context.Background(), func(tx *Tx) error {
				if err := tt.put(tx); err != nil {
					return err
				}
				_, err := tt.get(tx)
				return err
			})
			if err != nil {
				t.Errorf("put then get in one transaction: %v", err)
			}
		})
	}
}

func TestListsComeBackWhole(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for _, id := range []string{"ac-cccccc", "ac-aaaaaa", "ac-bbbbbb"} {
			if err := tx.PutAccount(testAccount(id)); err != nil {
				return err
			}
		}
		for _, tr := range model.DefaultTiers() {
			if err := tx.PutTier(tr); err != nil {
				return err
			}
		}
		for _, n := range []string{"ubuntu-24", "alpine", "debian-12"} {
			if err := tx.PutImage(model.Image{Name: n, CreatedAt: t0}); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, s, func(tx *Tx) error {
		accts, err := tx.Accounts()
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, a := range accts {
			ids = append(ids, a.ID)
		}
		if want := []string{"ac-aaaaaa", "ac-bbbbbb", "ac-cccccc"}; !slices.Equal(ids, want) {
			t.Errorf("Accounts ids = %v, want %v", ids, want)
		}
		tiers, err := tx.Tiers()
		if err != nil {
			t.Fatal(err)
		}
		if len(tiers) != len(model.DefaultTiers()) {
			t.Errorf("Tiers = %d tiers, want %d", len(tiers), len(model.DefaultTiers()))
		}
		images, err := tx.Images()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, im := range images {
			names = append(names, im.Name)
		}
		if want := []string{"alpine", "debian-12", "ubuntu-24"}; !slices.Equal(names, want) {
			t.Errorf("Images = %v, want %v", names, want)
		}
		return nil
	})
	update(t, s, func(tx *Tx) error { return tx.DeleteImage("alpine") })
	view(t, s, func(tx *Tx) error {
		if _, err := tx.Image("alpine"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("Image after DeleteImage: err = %v, want ErrNotFound", err)
		}
		return nil
	})
}

func TestGetterNotFoundNamesID(t *testing.T) {
	tests := []struct {
		id  string
		get func(tx *Tx, id string) error
	}{
		{"ac-nobody", func(tx *Tx, id string) error { _, err := tx.Account(id); return err }},
		{"tiny", func(tx *Tx, id string) error { _, err := tx.Tier(id); return err }},
		{"plan9", func(tx *Tx, id string) error { _, err := tx.Image(id); return err }},
		{"vm-gone00", func(tx *Tx, id string) error { _, err := tx.VM(id); return err }},
		{"bk-gone000000", func(tx *Tx, id string) error { _, err := tx.Backup(id); return err }},
		{"op-gone000000", func(tx *Tx, id string) error { _, err := tx.Operation(id); return err }},
		{"ac-nobody", func(tx *Tx, id string) error { return tx.DeleteAccount(id) }},
		{"plan9", func(tx *Tx, id string) error { return tx.DeleteImage(id) }},
		{"vm-gone00", func(tx *Tx, id string) error { return tx.DeleteVM(id) }},
		{"bk-gone000000", func(tx *Tx, id string) error { return tx.DeleteBackup(id) }},
		{"op-gone000000", func(tx *Tx, id string) error { return tx.DeleteOperation(id) }},
	}
	s := openMem(t)
	for _, tt := range tests {
		err := s.Update(context.Background(), func(tx *Tx) error { return tt.get(tx, tt.id) })
		if !errors.Is(err, model.ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", tt.id, err)
			continue
		}
		if !strings.Contains(err.Error(), tt.id) {
			t.Errorf("%s: error %q does not name the id", tt.id, err)
		}
	}
}

func TestInvalidIDsRejected(t *testing.T) {
	tests := []struct {
		name string
		call func(tx *Tx) error
	}{
		{"Account path", func(tx *Tx) error { _, err := tx.Account("../etc"); return err }},
		{"Account of a VM id", func(tx *Tx) error { _, err := tx.Account("vm-abc123"); return err }},
		{"PutAccount empty", func(tx *Tx) error { return tx.PutAccount(model.Account{}) }},
		{"DeleteAccount upper", func(tx *Tx) error { return tx.DeleteAccount("ac-ABCDEF") }},
		{"Tier slash", func(tx *Tx) error { _, err := tx.Tier("a/b"); return err }},
		{"PutTier empty", func(tx *Tx) error { return tx.PutTier(model.Tier{}) }},
		{"Image slash", func(tx *Tx) error { _, err := tx.Image("a/b"); return err }},
		{"PutImage dot first", func(tx *Tx) error { return tx.PutImage(model.Image{Name: ".hidden"}) }},
		{"DeleteImage empty", func(tx *Tx) error { return tx.DeleteImage("") }},
		{"VM short", func(tx *Tx) error { _, err := tx.VM("vm-abc"); return err }},
		{"PutVM bad id", func(tx *Tx) error { return tx.PutVM(testVM("vm-a/b/c1", "ac-alice1", model.StateRunning)) }},
		{"PutVM bad account", func(tx *Tx) error { return tx.PutVM(testVM("vm-abc123", "alice", model.StateRunning)) }},
		{"PutVM bad state", func(tx *Tx) error { return tx.PutVM(testVM("vm-abc123", "ac-alice1", "dancing")) }},
		{"DeleteVM NUL", func(tx *Tx) error { return tx.DeleteVM("vm-abc\x0012") }},
		{"VMs bad account", func(tx *Tx) error { _, err := tx.VMs(VMFilter{AccountID: "x"}); return err }},
		{"VMs bad state", func(tx *Tx) error { _, err := tx.VMs(VMFilter{State: "dancing"}); return err }},
		{"Backup of VM id", func(tx *Tx) error { _, err := tx.Backup("vm-abc123"); return err }},
		{"PutBackup bad vm", func(tx *Tx) error { return tx.PutBackup(testBackup("bk-0123456789", "vm-x", t0)) }},
		{"PutBackup no time", func(tx *Tx) error { return tx.PutBackup(testBackup("bk-0123456789", "vm-abc123", time.Time{})) }},
		{"PutBackup year 3000", func(tx *Tx) error {
			return tx.PutBackup(testBackup("bk-0123456789", "vm-abc123", time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)))
		}},
		{"DeleteBackup bad", func(tx *Tx) error { return tx.DeleteBackup("bk-1") }},
		{"Backups bad vm", func(tx *Tx) error { _, err := tx.Backups("vm-"); return err }},
		{"Operation bad", func(tx *Tx) error { _, err := tx.Operation("op-1"); return err }},
		{"PutOperation bad", func(tx *Tx) error { return tx.PutOperation(model.Operation{ID: "op-1"}) }},
		{"DeleteOperation bad", func(tx *Tx) error { return tx.DeleteOperation("op-1") }},
		{"IDUsed not an id", func(tx *Tx) error { _, err := tx.IDUsed("xx-1"); return err }},
		{"AppendLedger bad account", func(tx *Tx) error {
			_, err := tx.AppendLedger(model.LedgerEntry{AccountID: "x", At: t0, Kind: model.TopUp})
			return err
		}},
		{"AppendLedger no time", func(tx *Tx) error {
			_, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", Kind: model.TopUp})
			return err
		}},
		{"AppendLedger bad kind", func(tx *Tx) error {
			_, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", At: t0, Kind: "gift"})
			return err
		}},
		{"Ledger bad account", func(tx *Tx) error { _, err := tx.Ledger("", 1); return err }},
		{"NewID unknown kind", func(tx *Tx) error { _, err := tx.NewID("xx"); return err }},
		{"ClaimIP bad vm", func(tx *Tx) error { return tx.ClaimIP(netip.MustParseAddr("10.0.0.1"), "web") }},
		{"ClaimIP no addr", func(tx *Tx) error { return tx.ClaimIP(netip.Addr{}, "vm-abc123") }},
		{"IPOwner zone", func(tx *Tx) error { _, err := tx.IPOwner(netip.MustParseAddr("fe80::1%eth0")); return err }},
		{"ReleaseIP no addr", func(tx *Tx) error { return tx.ReleaseIP(netip.Addr{}) }},
	}
	s := openMem(t)
	for _, tt := range tests {
		err := s.Update(context.Background(), tt.call)
		if !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: err = %v, want ErrInvalid", tt.name, err)
		}
	}
	// Nothing of the rejected calls was written.
	view(t, s, func(tx *Tx) error {
		n := 0
		err := tx.scan(nil, nil, false, func(item *badgerItem) error {
			if string(item.Key()) != keySchema {
				t.Errorf("rejected call left key %q", item.Key())
			}
			n++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("store holds %d keys, want only the schema key", n)
		}
		return nil
	})
}

func TestBackupsNewestFirst(t *testing.T) {
	s := openMem(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var want []model.Backup
	for i := range 50 {
		// Spread over a century, with a few before 1970, and two at the same
		// instant (ordered by id).
		at := time.Date(1950+i*2, time.Month(1+i%12), 1+i%28, i%24, 0, 0, i, time.UTC)
		if i == 49 {
			at = want[48].TakenAt
		}
		want = append(want, testBackup(fmt.Sprintf("bk-%010d", i), "vm-abc123", at))
	}
	perm := rng.Perm(len(want))
	update(t, s, func(tx *Tx) error {
		for _, id := range []string{"vm-abc123", "vm-abc12a", "vm-abc122"} {
			if err := tx.PutVM(testVM(id, "ac-alice1", model.StateRunning)); err != nil {
				return err
			}
		}
		for _, i := range perm {
			if err := tx.PutBackup(want[i]); err != nil {
				return err
			}
		}
		// Neighbours whose ids share a prefix must not leak into the scan.
		if err := tx.PutBackup(testBackup("bk-other00001", "vm-abc12a", t0)); err != nil {
			return err
		}
		return tx.PutBackup(testBackup("bk-other00002", "vm-abc122", t0))
	})
	slices.SortStableFunc(want, func(a, b model.Backup) int {
		if c := b.TakenAt.Compare(a.TakenAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	view(t, s, func(tx *Tx) error {
		got, err := tx.Backups("vm-abc123")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("Backups order:\n got %v\nwant %v", ids(got), ids(want))
		}
		return nil
	})

	// Moving a backup in time moves it in the list, leaving no copy behind;
	// deleting it removes it and its index entry.
	moved := want[len(want)-1]
	moved.TakenAt = want[0].TakenAt.Add(time.Second)
	update(t, s, func(tx *Tx) error { return tx.PutBackup(moved) })
	view(t, s, func(tx *Tx) error {
		got, err := tx.Backups("vm-abc123")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) || got[0].ID != moved.ID {
			t.Errorf("after moving %s: %d backups, first %s; want %d, first %s", moved.ID, len(got), got[0].ID, len(want), moved.ID)
		}
		return nil
	})
	update(t, s, func(tx *Tx) error { return tx.DeleteBackup(moved.ID) })
	view(t, s, func(tx *Tx) error {
		got, _ := tx.Backups("vm-abc123")
		if len(got) != len(want)-1 || slices.ContainsFunc(got, func(b model.Backup) bool { return b.ID == moved.ID }) {
			t.Errorf("after DeleteBackup(%s): %v", moved.ID, ids(got))
		}
		if ok, _ := tx.has(backupIdxKey(moved.ID)); ok {
			t.Errorf("DeleteBackup left the bi/ entry of %s", moved.ID)
		}
		return nil
	})
}

func ids(bs []model.Backup) []string {
	var out []string
	for _, b := range bs {
		out = append(out, b.ID)
	}
	return out
}

func TestLedgerNewestFirst(t *testing.T) {
	s := openMem(t)
	rng := rand.New(rand.NewPCG(3, 4))
	const n = 40
	update(t, s, func(tx *Tx) error {
		for _, i := range rng.Perm(n) {
			// Pairs share an instant: the later-booked one must come first.
			at := t0.Add(time.Duration(i/2) * time.Hour)
			for _, acct := range []string{"ac-alice1", "ac-alice2"} {
				e, err := tx.AppendLedger(model.LedgerEntry{AccountID: acct, At: at, Amount: model.Micro(i), Kind: model.TopUp})
				if err != nil {
					return err
				}
				if e.Seq == 0 {
					t.Errorf("AppendLedger left Seq at 0")
				}
			}
		}
		return nil
	})
	view(t, s, func(tx *Tx) error {
		got, err := tx.Ledger("ac-alice1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("Ledger = %d entries, want %d", len(got), n)
		}
		for i := 1; i < len(got); i++ {
			a, b := got[i-1], got[i]
			if a.AccountID != "ac-alice1" {
				t.Errorf("entry of %s in ac-alice1's ledger", a.AccountID)
			}
			if a.At.Before(b.At) || a.At.Equal(b.At) && a.Seq < b.Seq {
				t.Errorf("entry %d (at %v seq %d) before entry %d (at %v seq %d): not newest first", i-1, a.At, a.Seq, i, b.At, b.Seq)
			}
		}
		top, err := tx.Ledger("ac-alice1", 3)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(top, got[:3]) {
			t.Errorf("Ledger limit 3 = %v, want the first 3 of %v", top, got[:3])
		}
		return nil
	})
}

func TestEventsAfter(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 20 {
			e, err := tx.AppendEvent(model.Event{At: t0.Add(time.Duration(i) * time.Second), Type: "vm.started", Message: fmt.Sprint(i)})
			if err != nil {
				return err
			}
			if e.Seq != uint64(i+1) {
				t.Errorf("event %d got seq %d, want %d", i, e.Seq, i+1)
			}
		}
		return nil
	})
	tests := []struct {
		after uint64
		limit int
		want  []uint64
	}{
		{0, 0, seqs(1, 20)},
		{0, 3, seqs(1, 3)},
		{5, 10, seqs(6, 15)},
		{17, 0, seqs(18, 20)},
		{17, 10, seqs(18, 20)},
		{20, 0, nil},
		{1000, 5, nil},
		{^uint64(0), 0, nil},
	}
	for _, tt := range tests {
		view(t, s, func(tx *Tx) error {
			evs, err := tx.EventsAfter(tt.after, tt.limit)
			if err != nil {
				t.Fatal(err)
			}
			var got []uint64
			for _, e := range evs {
				got = append(got, e.Seq)
				if e.Message != fmt.Sprint(e.Seq-1) {
					t.Errorf("event seq %d has message %q", e.Seq, e.Message)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("EventsAfter(%d, %d) = %v, want %v", tt.after, tt.limit, got, tt.want)
			}
			return nil
		})
	}
	view(t, s, func(tx *Tx) error {
		if last, err := tx.LastEventSeq(); err != nil || last != 20 {
			t.Errorf("LastEventSeq = %d, %v; want 20", last, err)
		}
		return nil
	})
}

func seqs(from, to uint64) []uint64 {
	var out []uint64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func TestVMIndexes(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 12 {
			vm := testVM(fmt.Sprintf("vm-%06d", i), []string{"ac-alice1", "ac-bob222", "ac-carol3"}[i%3], model.StateRunning)
			if i%4 == 0 {
				vm.State = model.StateStopped
			}
			vm.IP = netip.AddrFrom4([4]byte{10, 42, 0, byte(i + 10)})
			if err := tx.PutVM(vm); err != nil {
				return err
			}
		}
		return nil
	})
	vmIDs := func(f VMFilter) []string {
		t.Helper()
		var out []string
		view(t, s, func(tx *Tx) error {
			vms, err := tx.VMs(f)
			if err != nil {
				t.Fatalf("VMs(%+v): %v", f, err)
			}
			for _, vm := range vms {
				out = append(out, vm.ID)
			}
			return nil
		})
		return out
	}
	tests := []struct {
		f    VMFilter
		want []string
	}{
		{VMFilter{AccountID: "ac-alice1"}, []string{"vm-000000", "vm-000003", "vm-000006", "vm-000009"}},
		{VMFilter{AccountID: "ac-alice1", State: model.StateStopped}, []string{"vm-000000"}},
		{VMFilter{State: model.StateStopped}, []string{"vm-000000", "vm-000004", "vm-000008"}},
		{VMFilter{AccountID: "ac-nobody"}, nil},
		{VMFilter{State: model.StateArchived}, nil},
		{VMFilter{}, []string{"vm-000000", "vm-000001", "vm-000002", "vm-000003", "vm-000004", "vm-000005",
			"vm-000006", "vm-000007", "vm-000008", "vm-000009", "vm-000010", "vm-000011"}},
	}
	for _, tt := range tests {
		if got := vmIDs(tt.f); !slices.Equal(got, tt.want) {
			t.Errorf("VMs(%+v) = %v, want %v", tt.f, got, tt.want)
		}
	}

	// A change of state or account moves the VM in the indexes.
	update(t, s, func(tx *Tx) error {
		vm, err := tx.VM("vm-000003")
		if err != nil {
			return err
		}
		vm.State, vm.AccountID = model.StateArchived, "ac-bob222"
		return tx.PutVM(vm)
	})
	if got := vmIDs(VMFilter{AccountID: "ac-alice1"}); slices.Contains(got, "vm-000003") {
		t.Errorf("vm-000003 still listed under ac-alice1 after moving: %v", got)
	}
	if got := vmIDs(VMFilter{AccountID: "ac-bob222", State: model.StateArchived}); !slices.Equal(got, []string{"vm-000003"}) {
		t.Errorf("archived VMs of ac-bob222 = %v, want [vm-000003]", got)
	}
	if got := vmIDs(VMFilter{State: model.StateRunning}); slices.Contains(got, "vm-000003") {
		t.Errorf("vm-000003 still listed as running: %v", got)
	}

	// DeleteVM refuses while backups remain, then removes every key that
	// mentions the VM, releasing the IP it held but not one held by another.
	update(t, s, func(tx *Tx) error {
		if err := tx.ClaimIP(netip.MustParseAddr("10.42.0.13"), "vm-000003"); err != nil {
			return err
		}
		if err := tx.ClaimIP(netip.MustParseAddr("10.42.0.7"), "vm-000004"); err != nil { // vm-000003's LastIP
			return err
		}
		return tx.PutBackup(testBackup("bk-0000000003", "vm-000003", t0))
	})
	err := s.Update(context.Background(), func(tx *Tx) error { return tx.DeleteVM("vm-000003") })
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "backups") {
		t.Errorf("DeleteVM with a backup left: err = %v, want ErrConflict about backups", err)
	}
	update(t, s, func(tx *Tx) error {
		if err := tx.DeleteBackup("bk-0000000003"); err != nil {
			return err
		}
		return tx.DeleteVM("vm-000003")
	})
	view(t, s, func(tx *Tx) error {
		err := tx.scan(nil, nil, true, func(item *badgerItem) error {
			v, _ := item.ValueCopy(nil)
			if strings.Contains(string(item.Key()), "vm-000003") || string(v) == "vm-000003" {
				t.Errorf("key %q (value %q) left after DeleteVM(vm-000003)", item.Key(), v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if owner, err := tx.IPOwner(netip.MustParseAddr("10.42.0.7")); owner != "vm-000004" {
			t.Errorf("DeleteVM released another VM's address: owner %q, %v", owner, err)
		}
		return nil
	})
	if got := vmIDs(VMFilter{AccountID: "ac-bob222"}); slices.Contains(got, "vm-000003") {
		t.Errorf("deleted VM still listed: %v", got)
	}
}

func TestForEachVM(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for i := range 300 {
			if err := tx.PutVM(testVM(fmt.Sprintf("vm-%06d", i), "ac-alice1", model.StateRunning)); err != nil {
				return err
			}
		}
		return nil
	})
	var seen []string
	view(t, s, func(tx *Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			seen = append(seen, vm.ID)
			return nil
		})
	})
	if len(seen) != 300 || !slices.IsSorted(seen) {
		t.Errorf("ForEachVM saw %d VMs (sorted: %v), want 300 in id order", len(seen), slices.IsSorted(seen))
	}
	stop := errors.New("enough")
	n := 0
	err := s.View(context.Background(), func(tx *Tx) error {
		return tx.ForEachVM(func(model.VM) error {
			if n++; n == 10 {
				return stop
			}
			return nil
		})
	})
	if err != stop || n != 10 {
		t.Errorf("ForEachVM stopped after %d with %v, want 10 with %v", n, err, stop)
	}
	ctx, cancel := context.WithCancel(context.Background())
	n = 0
	err = s.View(ctx, func(tx *Tx) error {
		return tx.ForEachVM(func(model.VM) error {
			n++
			cancel()
			return nil
		})
	})
	if !errors.Is(err, context.Canceled) || n >= 300 {
		t.Errorf("ForEachVM with a cancelled context: %d VMs, err %v; want it to stop with context.Canceled", n, err)
	}
}

func TestUnfinishedOperations(t *testing.T) {
	s := openMem(t)
	ops := []model.Operation{
		{ID: "op-aaaaaaaaaa", Kind: model.OpBackup, State: model.OpRunning, StartedAt: t0},
		{ID: "op-bbbbbbbbbb", Kind: model.OpRestore, State: model.OpDone, StartedAt: t0},
		{ID: "op-cccccccccc", Kind: model.OpDestroy, State: model.OpRunning, StartedAt: t0},
	}
	update(t, s, func(tx *Tx) error {
		for _, op := range ops {
			if err := tx.PutOperation(op); err != nil {
				return err
			}
		}
		return nil
	})
	unfinished := func() []string {
		var out []string
		view(t, s, func(tx *Tx) error {
			got, err := tx.UnfinishedOperations()
			if err != nil {
				t.Fatal(err)
			}
			for _, op := range got {
				out = append(out, op.ID)
			}
			return nil
		})
		return out
	}
	if got := unfinished(); !slices.Equal(got, []string{"op-aaaaaaaaaa", "op-cccccccccc"}) {
		t.Errorf("UnfinishedOperations = %v", got)
	}
	update(t, s, func(tx *Tx) error {
		op := ops[0]
		op.State = model.OpRolledBack
		return tx.PutOperation(op)
	})
	if got := unfinished(); !slices.Equal(got, []string{"op-cccccccccc"}) {
		t.Errorf("UnfinishedOperations after finishing op-aaaaaaaaaa = %v", got)
	}
}

// TestConcurrentUpdatesRetry makes two transactions read the same balance
// before either writes: one commit must lose, run again, and still add its
// amount.
func TestConcurrentUpdatesRetry(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error { return tx.PutAccount(testAccount("ac-alice1")) })
	start := testAccount("ac-alice1").Balance

	var read sync.WaitGroup
	read.Add(2)
	var runs atomic.Int32
	add := func(amount model.Micro) error {
		first := true
		return s.Update(context.Background(), func(tx *Tx) error {
			runs.Add(1)
			a, err := tx.Account("ac-alice1")
			if err != nil {
				return err
			}
			if first {
				// Both have read the old balance before either commits.
				first = false
				read.Done()
				read.Wait()
			}
			a.Balance += amount
			return tx.PutAccount(a)
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- add(3 * model.Credit) }()
	go func() { errs <- add(4 * model.Credit) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("Update: %v", err)
		}
	}
	view(t, s, func(tx *Tx) error {
		a, err := tx.Account("ac-alice1")
		if err != nil {
			t.Fatal(err)
		}
		if want := start + 7*model.Credit; a.Balance != want {
			t.Errorf("balance = %s, want %s", a.Balance, want)
		}
		return nil
	})
	if runs.Load() < 3 {
		t.Errorf("fn ran %d times; the losing transaction should have run again", runs.Load())
	}
}

// TestConcurrentTopUps hammers one balance from many goroutines.
func TestConcurrentTopUps(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error { return tx.PutAccount(model.Account{ID: "ac-alice1"}) })
	const workers, each = 4, 25
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				err := s.Update(context.Background(), func(tx *Tx) error {
					a, err := tx.Account("ac-alice1")
					if err != nil {
						return err
					}
					a.Balance += 1
					if err := tx.PutAccount(a); err != nil {
						return err
					}
					_, err = tx.AppendLedger(model.LedgerEntry{AccountID: a.ID, At: t0.Add(time.Duration(w*each+i) * time.Second),
						Amount: 1, Kind: model.TopUp, BalanceAfter: a.Balance})
					return err
				})
				// With this much contention an Update may give up; that
				// must be ErrConflict and must then change nothing.
				if err != nil && !errors.Is(err, model.ErrConflict) {
					t.Errorf("Update: %v", err)
				}
			}
		})
	}
	wg.Wait()
	view(t, s, func(tx *Tx) error {
		a, err := tx.Account("ac-alice1")
		if err != nil {
			t.Fatal(err)
		}
		l, err := tx.Ledger("ac-alice1", 0)
		if err != nil {
			t.Fatal(err)
		}
		if int(a.Balance) != len(l) || len(l) == 0 {
			t.Errorf("balance %d after %d ledger entries: top-ups were lost or doubled", a.Balance, len(l))
		}
		seen := map[uint64]bool{}
		for _, e := range l {
			if seen[e.Seq] {
				t.Errorf("ledger seq %d used twice", e.Seq)
			}
			seen[e.Seq] = true
		}
		return nil
	})
}

// TestUpdateGivesUp makes every run of fn lose: another Update changes the
// account between fn's read and its commit.
func TestUpdateGivesUp(t *testing.T) {
	s := openMem(t)
	ctx := context.Background()
	update(t, s, func(tx *Tx) error { return tx.PutAccount(testAccount("ac-alice1")) })
	runs := 0
	err := s.Update(ctx, func(tx *Tx) error {
		runs++
		a, err := tx.Account("ac-alice1")
		if err != nil {
			return err
		}
		if err := s.Update(ctx, func(other *Tx) error {
			b, err := other.Account("ac-alice1")
			if err != nil {
				return err
			}
			b.Balance++
			return other.PutAccount(b)
		}); err != nil {
			return err
		}
		a.Balance += 1000
		return tx.PutAccount(a)
	})
	if !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Update that always loses: err = %v, want ErrConflict", err)
	}
	if runs != updateTries {
		t.Errorf("fn ran %d times, want %d", runs, updateTries)
	}
	view(t, s, func(tx *Tx) error {
		a, _ := tx.Account("ac-alice1")
		if want := testAccount("ac-alice1").Balance + model.Micro(updateTries); a.Balance != want {
			t.Errorf("balance %d, want %d: only the inner updates should have landed", a.Balance, want)
		}
		return nil
	})
}

func TestUpdateReturnsFnError(t *testing.T) {
	s := openMem(t)
	boom := errors.New("boom")
	runs := 0
	err := s.Update(context.Background(), func(tx *Tx) error {
		runs++
		if err := tx.PutAccount(testAccount("ac-alice1")); err != nil {
			return err
		}
		return boom
	})
	if err != boom || runs != 1 {
		t.Errorf("Update = %v after %d runs, want boom after 1", err, runs)
	}
	view(t, s, func(tx *Tx) error {
		if _, err := tx.Account("ac-alice1"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("a failed Update's write is visible: %v", err)
		}
		return nil
	})
}

func TestViewIsReadOnly(t *testing.T) {
	s := openMem(t)
	err := s.View(context.Background(), func(tx *Tx) error { return tx.PutAccount(testAccount("ac-alice1")) })
	if err == nil || !strings.Contains(err.Error(), "Update") {
		t.Errorf("PutAccount in View: err = %v, want one that points at Update", err)
	}
}

func TestClosedStore(t *testing.T) {
	s, err := Open(context.Background(), Options{InMemory: true, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for name, err := range map[string]error{
		"Update": s.Update(context.Background(), func(*Tx) error { return nil }),
		"View":   s.View(context.Background(), func(*Tx) error { return nil }),
	} {
		if !errors.Is(err, model.ErrUnavailable) {
			t.Errorf("%s on a closed store: %v, want ErrUnavailable", name, err)
		}
	}
}

func TestCancelledContext(t *testing.T) {
	s := openMem(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	called := false
	for name, err := range map[string]error{
		"Update": s.Update(ctx, func(*Tx) error { called = true; return nil }),
		"View":   s.View(ctx, func(*Tx) error { called = true; return nil }),
	} {
		if !errors.Is(err, context.Canceled) {
			t.Errorf("%s with a cancelled context: %v", name, err)
		}
	}
	if called {
		t.Error("fn ran under a cancelled context")
	}
	if _, err := Open(ctx, Options{InMemory: true}); !errors.Is(err, context.Canceled) {
		t.Errorf("Open with a cancelled context: %v", err)
	}
}

func TestOpenOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"neither", Options{}},
		{"both", Options{Dir: t.TempDir(), InMemory: true}},
	}
	for _, tt := range tests {
		if _, err := Open(context.Background(), tt.opts); !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: Open = %v, want ErrInvalid", tt.name, err)
		}
	}
}

func TestIPClaims(t *testing.T) {
	s := openMem(t)
	a := netip.MustParseAddr("10.42.0.9")
	update(t, s, func(tx *Tx) error {
		if _, err := tx.IPOwner(a); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("IPOwner of a free address: %v, want ErrNotFound", err)
		}
		for _, c := range []struct {
			addr string
			vm   string
		}{{"10.42.0.9", "vm-aaaaaa"}, {"10.42.0.10", "vm-bbbbbb"}, {"10.42.1.1", "vm-cccccc"}, {"fd00::1", "vm-dddddd"}, {"10.42.0.2", "vm-eeeeee"}} {
			if err := tx.ClaimIP(netip.MustParseAddr(c.addr), c.vm); err != nil {
				return err
			}
		}
		return tx.ClaimIP(a, "vm-aaaaaa") // again: a no-op
	})
	err := s.Update(context.Background(), func(tx *Tx) error {
		return tx.ClaimIP(netip.MustParseAddr("::ffff:10.42.0.9"), "vm-bbbbbb")
	})
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "vm-aaaaaa") {
		t.Errorf("claiming a held address (IPv4-mapped form): %v, want ErrConflict naming vm-aaaaaa", err)
	}
	view(t, s, func(tx *Tx) error {
		claims, err := tx.IPClaims()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range claims {
			got = append(got, c.Addr.String()+"="+c.VMID)
		}
		want := []string{"10.42.0.2=vm-eeeeee", "10.42.0.9=vm-aaaaaa", "10.42.0.10=vm-bbbbbb", "10.42.1.1=vm-cccccc", "fd00::1=vm-dddddd"}
		if !slices.Equal(got, want) {
			t.Errorf("IPClaims = %v, want %v", got, want)
		}
		return nil
	})
	update(t, s, func(tx *Tx) error {
		if err := tx.ReleaseIP(a); err != nil {
			return err
		}
		return tx.ReleaseIP(a) // again: a no-op
	})
	update(t, s, func(tx *Tx) error {
		if _, err := tx.IPOwner(a); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("IPOwner after ReleaseIP: %v, want ErrNotFound", err)
		}
		return tx.ClaimIP(a, "vm-bbbbbb")
	})
}

func TestDeleteAccount(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		if err := tx.PutAccount(testAccount("ac-alice1")); err != nil {
			return err
		}
		if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", At: t0, Amount: 5, Kind: model.TopUp}); err != nil {
			return err
		}
		return tx.PutVM(testVM("vm-abc123", "ac-alice1", model.StateGraveyard))
	})
	err := s.Update(context.Background(), func(tx *Tx) error { return tx.DeleteAccount("ac-alice1") })
	if !errors.Is(err, model.ErrConflict) {
		t.Errorf("DeleteAccount with a VM left: %v, want ErrConflict", err)
	}
	update(t, s, func(tx *Tx) error {
		if err := tx.DeleteVM("vm-abc123"); err != nil {
			return err
		}
		return tx.DeleteAccount("ac-alice1")
	})
	view(t, s, func(tx *Tx) error {
		if _, err := tx.Account("ac-alice1"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("Account after DeleteAccount: %v", err)
		}
		if l, err := tx.Ledger("ac-alice1", 0); err != nil || len(l) != 1 {
			t.Errorf("ledger after DeleteAccount = %v, %v; want the one entry kept", l, err)
		}
		return nil
	})
}

func TestPruneEvents(t *testing.T) {
	s := openMem(t)
	update(t, s, func(tx *Tx) error {
		for range 10 {
			if _, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.started"}); err != nil {
				return err
			}
		}
		return nil
	})
	tests := []struct {
		through   uint64
		limit     int
		wantN     int
		wantFirst uint64 // oldest seq left; 0 if none
	}{
		{0, 0, 0, 1},
		{3, 2, 2, 3},
		{3, 0, 1, 4},
		{3, 0, 0, 4},
		{100, 0, 7, 0},
	}
	for _, tt := range tests {
		update(t, s, func(tx *Tx) error {
			n, err := tx.PruneEvents(tt.through, tt.limit)
			if err != nil {
				return err
			}
			if n != tt.wantN {
				t.Errorf("PruneEvents(%d, %d) = %d, want %d", tt.through, tt.limit, n, tt.wantN)
			}
			return nil
		})
		view(t, s, func(tx *Tx) error {
			evs, err := tx.EventsAfter(0, 1)
			if err != nil {
				t.Fatal(err)
			}
			var first uint64
			if len(evs) > 0 {
				first = evs[0].Seq
			}
			if first != tt.wantFirst {
				t.Errorf("after PruneEvents(%d, %d): oldest event %d, want %d", tt.through, tt.limit, first, tt.wantFirst)
			}
			return nil
		})
	}
	update(t, s, func(tx *Tx) error {
		e, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.stopped"})
		if e.Seq != 11 {
			t.Errorf("event after pruning all got seq %d, want 11", e.Seq)
		}
		return err
	})
}

func TestDeleteOperation(t *testing.T) {
	s := openMem(t)
	op := model.Operation{ID: "op-aaaaaaaaaa", Kind: model.OpBackup, State: model.OpRunning, StartedAt: t0}
	update(t, s, func(tx *Tx) error { return tx.PutOperation(op) })
	update(t, s, func(tx *Tx) error { return tx.DeleteOperation(op.ID) })
	view(t, s, func(tx *Tx) error {
		if _, err := tx.Operation(op.ID); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("Operation after DeleteOperation: %v", err)
		}
		if ops, err := tx.UnfinishedOperations(); err != nil || len(ops) != 0 {
			t.Errorf("UnfinishedOperations after DeleteOperation = %v, %v", ops, err)
		}
		return nil
	})
	err := s.Update(context.Background(), func(tx *Tx) error { return tx.DeleteOperation(op.ID) })
	if !errors.Is(err, model.ErrNotFound) || !strings.Contains(err.Error(), op.ID) {
		t.Errorf("second DeleteOperation: %v, want ErrNotFound naming %s", err, op.ID)
	}
}

// TestTransactionTooBig checks that an Update too big for one transaction
// fails whole, with a message that says what to do, and that a thousand VMs
// (a big account's worth, or one billing batch) fit.
func TestTransactionTooBig(t *testing.T) {
	s := openMem(t)
	putVMs := func(n int) error {
		return s.Update(context.Background(), func(tx *Tx) error {
			for i := range n {
				if err := tx.PutVM(testVM(fmt.Sprintf("vm-%06d", i), "ac-alice1", model.StateRunning)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	if err := putVMs(1000); err != nil {
		t.Fatalf("1,000 VMs in one Update: %v", err)
	}
	err := putVMs(10_000)
	if err == nil || !strings.Contains(err.Error(), "split the work") {
		t.Fatalf("10,000 VMs in one Update: %v, want an error saying to split the work", err)
	}
	view(t, s, func(tx *Tx) error {
		if _, err := tx.VM("vm-009999"); !errors.Is(err, model.ErrNotFound) {
			t.Errorf("part of a failed Update was committed: %v", err)
		}
		return nil
	})
}

// TestDeleteVMRacesPutBackup runs DeleteVM and PutBackup for the same VM
// at the same time, in both commit orders: either the backup is refused
// because the VM is gone, or the delete is refused because a backup
// appeared; never a backup of a deleted VM.
func TestDeleteVMRacesPutBackup(t *testing.T) {
	const vmID = "vm-abc123"
	bk := testBackup("bk-0123456789", vmID, t0)
	putBackup := func(tx *Tx) error { return tx.PutBackup(bk) }
	deleteVM := func(tx *Tx) error { return tx.DeleteVM(vmID) }
	tests := []struct {
		name          string
		first, second func(tx *Tx) error // second reads, then waits for first to commit
		wantSecond    error
	}{
		{"backup commits first", putBackup, deleteVM, model.ErrConflict},
		{"delete commits first", deleteVM, putBackup, model.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := openMem(t)
			update(t, s, func(tx *Tx) error { return tx.PutVM(testVM(vmID, "ac-alice1", model.StateGraveyard)) })
			read, committed := make(chan struct{}), make(chan struct{})
			secondErr := make(chan error, 1)
			go func() {
				runs := 0
				secondErr <- s.Update(context.Background(), func(tx *Tx) error {
					if err := tt.second(tx); err != nil {
						return err
					}
					if runs++; runs == 1 {
						close(read)
						<-committed
					}
					return nil
				})
			}()
			<-read
			update(t, s, tt.first)
			close(committed)
			if err := <-secondErr; !errors.Is(err, tt.wantSecond) {
				t.Errorf("second transaction: %v, want %v", err, tt.wantSecond)
			}
			view(t, s, func(tx *Tx) error {
				_, vmErr := tx.VM(vmID)
				bks, err := tx.Backups(vmID)
				if err != nil {
					t.Fatal(err)
				}
				if errors.Is(vmErr, model.ErrNotFound) && len(bks) > 0 {
					t.Errorf("VM %s is deleted but its backups %v remain", vmID, ids(bks))
				}
				return nil
			})
		})
	}
}

// TestListBackups: backups across VMs come out ordered by VM id, then newest
// first, filtered by account, VM or both, whatever the VM's state; ids that
// share a prefix do not leak into one another's results.
func TestListBackups(t *testing.T) {
	s := openMem(t)
	type vmAt struct {
		vm, acct string
		state    model.VMState
	}
	vms := []vmAt{
		{"vm-abc123", "ac-alice1", model.StateRunning},
		{"vm-abc12a", "ac-bob123", model.StateGraveyard},
		{"vm-abc122", "ac-alice1", model.StateArchived},
		{"vm-zzz999", "ac-alice1", model.StateStopped}, // no backups
	}
	var all []model.Backup
	update(t, s, func(tx *Tx) error {
		for _, a := range []string{"ac-alice1", "ac-bob123", "ac-carol1"} {
			if err := tx.PutAccount(testAccount(a)); err != nil {
				return err
			}
		}
		for i, v := range vms {
			if err := tx.PutVM(testVM(v.vm, v.acct, v.state)); err != nil {
				return err
			}
			if v.vm == "vm-zzz999" {
				continue
			}
			for j := range 3 {
				// Put oldest first, so that the order is the store's, not
				// the order of writing.
				b := testBackup(fmt.Sprintf("bk-%02d%02d000000", i, j), v.vm, t0.Add(time.Duration(j)*time.Hour))
				if err := tx.PutBackup(b); err != nil {
					return err
				}
				all = append(all, b)
			}
		}
		return nil
	})
	want := func(vmIDs ...string) []string {
		var out []string
		for _, vm := range vmIDs {
			var of []model.Backup
			for _, b := range all {
				if b.VMID == vm {
					of = append(of, b)
				}
			}
			for i := len(of) - 1; i >= 0; i-- {
				out = append(out, of[i].ID)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    BackupFilter
		want []string
	}{
		{"all", BackupFilter{}, want("vm-abc122", "vm-abc123", "vm-abc12a")},
		{"account", BackupFilter{AccountID: "ac-alice1"}, want("vm-abc122", "vm-abc123")},
		{"other account", BackupFilter{AccountID: "ac-bob123"}, want("vm-abc12a")},
		{"account without VMs", BackupFilter{AccountID: "ac-carol1"}, nil},
		{"vm", BackupFilter{VMID: "vm-abc123"}, want("vm-abc123")},
		{"vm and its account", BackupFilter{AccountID: "ac-alice1", VMID: "vm-abc122"}, want("vm-abc122")},
		{"vm of another account", BackupFilter{AccountID: "ac-bob123", VMID: "vm-abc122"}, nil},
		{"vm without backups", BackupFilter{VMID: "vm-zzz999"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			view(t, s, func(tx *Tx) error {
				got, err := tx.ListBackups(tc.f)
				if err != nil {
					t.Fatal(err)
				}
				if got == nil {
					t.Errorf("ListBackups(%+v) = nil, want an empty list", tc.f)
				}
				if !slices.Equal(ids(got), tc.want) {
					t.Errorf("ListBackups(%+v):\n got %v\nwant %v", tc.f, ids(got), tc.want)
				}
				return nil
			})
		})
	}
	view(t, s, func(tx *Tx) error {
		for _, f := range []BackupFilter{{AccountID: "ac-"}, {VMID: "vm-abc"}, {AccountID: "vm-abc123"}} {
			if _, err := tx.ListBackups(f); !errors.Is(err, model.ErrInvalid) {
				t.Errorf("ListBackups(%+v) = %v, want ErrInvalid", f, err)
			}
		}
		return nil
	})
}
