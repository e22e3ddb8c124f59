package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

type badgerItem = badger.Item

func TestNewIDNeverRepeats(t *testing.T) {
	s := openMem(t)
	// The generator offers ids that collide: with each other, and with the
	// id of an object that was created and deleted.
	s.newID = seqIDs("vm-aaaaaa", "vm-aaaaaa", "vm-bbbbbb", "vm-aaaaaa", "vm-bbbbbb", "vm-cccccc")
	var first, second string
	update(t, s, func(tx *Tx) error {
		var err error
		if first, err = tx.NewID(model.KindVM); err != nil {
			return err
		}
		return tx.PutVM(testVM(first, "ac-alice1", model.StateRunning))
	})
	update(t, s, func(tx *Tx) error { return tx.DeleteVM(first) })
	update(t, s, func(tx *Tx) error {
		var err error
		second, err = tx.NewID(model.KindVM)
		return err
	})
	var third string
	update(t, s, func(tx *Tx) error {
		var err error
		third, err = tx.NewID(model.KindVM)
		return err
	})
	if first != "vm-aaaaaa" || second != "vm-bbbbbb" || third != "vm-cccccc" {
		t.Errorf("NewID handed out %s, %s, %s; want vm-aaaaaa, vm-bbbbbb, vm-cccccc (each once)", first, second, third)
	}
	// The generator now only offers used ids: NewID gives up.
	err := s.Update(context.Background(), func(tx *Tx) error { _, err := tx.NewID(model.KindVM); return err })
	if !errors.Is(err, model.ErrConflict) {
		t.Errorf("NewID with only used ids on offer: %v, want ErrConflict", err)
	}
	// An id drawn in a transaction that did not commit was never handed out.
	s.newID = seqIDs("vm-dddddd")
	boom := errors.New("boom")
	_ = s.Update(context.Background(), func(tx *Tx) error { _, _ = tx.NewID(model.KindVM); return boom })
	update(t, s, func(tx *Tx) error {
		id, err := tx.NewID(model.KindVM)
		if id != "vm-dddddd" {
			t.Errorf("after a rolled-back NewID: got %q, %v; want vm-dddddd", id, err)
		}
		return err
	})
	// A generator that makes a malformed id is caught.
	s.newID = seqIDs("vm-../../")
	err = s.Update(context.Background(), func(tx *Tx) error { _, err := tx.NewID(model.KindVM); return err })
	if !errors.Is(err, model.ErrInvalid) {
		t.Errorf("NewID with a broken generator: %v, want ErrInvalid", err)
	}
}

func TestNewIDRealGenerator(t *testing.T) {
	s := openMem(t)
	for _, k := range []model.Kind{model.KindAccount, model.KindVM, model.KindBackup, model.KindOperation} {
		update(t, s, func(tx *Tx) error {
			id, err := tx.NewID(k)
			if err != nil {
				return err
			}
			if model.KindOf(id) != k {
				t.Errorf("NewID(%s) = %q", k, id)
			}
			if used, err := tx.IDUsed(id); !used || err != nil {
				t.Errorf("IDUsed(%s) = %v, %v right after NewID", id, used, err)
			}
			return nil
		})
	}
}

// TestReopen writes one of everything to disk, closes, opens again, and
// checks that all of it is there and that sequences and ids carry on.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := openDir(t, dir)
	s.newID = seqIDs("vm-abc123")
	var vmID string
	update(t, s, func(tx *Tx) error {
		var err error
		if vmID, err = tx.NewID(model.KindVM); err != nil {
			return err
		}
		steps := []error{
			tx.PutAccount(testAccount("ac-alice1")),
			tx.PutTier(model.DefaultTiers()[0]),
			tx.PutImage(model.Image{Name: "debian-12", CreatedAt: t0}),
			tx.PutVM(testVM(vmID, "ac-alice1", model.StateRunning)),
			tx.PutBackup(testBackup("bk-0123456789", vmID, t0)),
			tx.PutOperation(model.Operation{ID: "op-aaaaaaaaaa", Kind: model.OpBackup, State: model.OpRunning, StartedAt: t0}),
			tx.ClaimIP(netip.MustParseAddr("10.42.0.7"), vmID),
		}
		for _, err := range steps {
			if err != nil {
				return err
			}
		}
		for range 3 {
			if _, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.created", Message: "x"}); err != nil {
				return err
			}
			if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", At: t0, Amount: 1, Kind: model.TopUp}); err != nil {
				return err
			}
		}
		return nil
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openDir(t, dir)
	defer s.Close()
	s.newID = seqIDs("vm-abc123", "vm-def456")
	update(t, s, func(tx *Tx) error {
		checks := []struct {
			what string
			err  error
		}{
			{"account", second(tx.Account("ac-alice1"))},
			{"tier", second(tx.Tier(model.DefaultTiers()[0].Name))},
			{"image", second(tx.Image("debian-12"))},
			{"vm", second(tx.VM(vmID))},
			{"backup", second(tx.Backup("bk-0123456789"))},
			{"operation", second(tx.Operation("op-aaaaaaaaaa"))},
		}
		for _, c := range checks {
			if c.err != nil {
				t.Errorf("%s after reopen: %v", c.what, c.err)
			}
		}
		if vms, err := tx.VMs(VMFilter{AccountID: "ac-alice1"}); err != nil || len(vms) != 1 {
			t.Errorf("VMs of ac-alice1 after reopen: %d, %v", len(vms), err)
		}
		if ops, err := tx.UnfinishedOperations(); err != nil || len(ops) != 1 {
			t.Errorf("unfinished operations after reopen: %d, %v", len(ops), err)
		}
		if owner, err := tx.IPOwner(netip.MustParseAddr("10.42.0.7")); owner != vmID {
			t.Errorf("IP owner after reopen: %q, %v", owner, err)
		}
		id, err := tx.NewID(model.KindVM)
		if err != nil || id != "vm-def456" {
			t.Errorf("NewID after reopen = %q, %v; want vm-def456 (vm-abc123 was handed out before)", id, err)
		}
		e, err := tx.AppendEvent(model.Event{At: t0, Type: "vm.started", Message: "y"})
		if err != nil || e.Seq != 4 {
			t.Errorf("event seq after reopen = %d, %v; want 4", e.Seq, err)
		}
		l, err := tx.AppendLedger(model.LedgerEntry{AccountID: "ac-alice1", At: t0, Amount: 1, Kind: model.TopUp})
		if err != nil || l.Seq != 4 {
			t.Errorf("ledger seq after reopen = %d, %v; want 4", l.Seq, err)
		}
		return nil
	})
}

func second[T any](_ T, err error) error { return err }

func TestSchemaChecked(t *testing.T) {
	tests := []struct {
		name   string
		before func(db *badger.DB) error // run on the raw database before Open
		want   string                    // in the error; "" if Open must succeed
	}{
		{"new store", func(*badger.DB) error { return nil }, ""},
		{"current schema", func(db *badger.DB) error {
			return db.Update(func(txn *badger.Txn) error {
				return txn.Set([]byte(keySchema), binary.BigEndian.AppendUint32(nil, SchemaVersion))
			})
		}, ""},
		{"newer schema", func(db *badger.DB) error {
			return db.Update(func(txn *badger.Txn) error {
				return txn.Set([]byte(keySchema), binary.BigEndian.AppendUint32(nil, SchemaVersion+1))
			})
		}, "newer superjolt"},
		{"malformed schema", func(db *badger.DB) error {
			return db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keySchema), []byte("1")) })
		}, "malformed"},
		{"data without schema", func(db *badger.DB) error {
			return db.Update(func(txn *badger.Txn) error { return txn.Set([]byte("something/else"), []byte("x")) })
		}, "no schema version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			db, err := badger.Open(badger.DefaultOptions(dir).WithLogger(nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := tt.before(db); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), Options{Dir: dir, Logger: quiet})
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Open: %v", err)
				}
				defer s.Close()
				view(t, s, func(tx *Tx) error {
					var v uint32
					item, err := tx.txn.Get([]byte(keySchema))
					if err == nil {
						err = item.Value(func(b []byte) error { v = binary.BigEndian.Uint32(b); return nil })
					}
					if err != nil || v != SchemaVersion {
						t.Errorf("schema key after Open = %d, %v; want %d", v, err, SchemaVersion)
					}
					return nil
				})
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("Open succeeded, want an error about %q", tt.want)
			}
			if !errors.Is(err, ErrSchema) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want ErrSchema saying %q", err, tt.want)
			}
		})
	}
}

func TestOpenTwiceIsUnavailable(t *testing.T) {
	dir := t.TempDir()
	s := openDir(t, dir)
	defer s.Close()
	_, err := Open(context.Background(), Options{Dir: dir, Logger: quiet})
	if !errors.Is(err, model.ErrUnavailable) || !strings.Contains(err.Error(), "another superjoltd") {
		t.Errorf("second Open of %s: %v, want ErrUnavailable asking about another superjoltd", dir, err)
	}
}

func TestBadgerLogger(t *testing.T) {
	var buf bytes.Buffer
	l := badgerLogger{slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))}
	l.Infof("compaction %d done\n", 7)
	l.Debugf("detail")
	l.Warningf("value log %s is big\n", "000001.vlog")
	l.Errorf("cannot %s", "sync")
	out := buf.String()
	for _, want := range []string{`level=WARN msg="value log 000001.vlog is big" component=badger`, `level=ERROR msg="cannot sync" component=badger`} {
		if !strings.Contains(out, want) {
			t.Errorf("log output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "compaction") || strings.Contains(out, "detail") {
		t.Errorf("Badger info/debug lines reached an info-level logger:\n%s", out)
	}
}
