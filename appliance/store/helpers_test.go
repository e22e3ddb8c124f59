package store

import (
	"context"
	"io"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

var t0 = time.Date(2026, 11, 29, 7, 0, 0, 0, time.UTC)

// quiet discards Badger's logs in tests; TestBadgerLogger checks the adapter.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openMem opens an in-memory store that is closed when the test ends.
func openMem(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{InMemory: true, Logger: quiet})
	if err != nil {
		t.Fatalf("Open in memory: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// openDir opens the on-disk store in dir; the caller closes it.
func openDir(t testing.TB, dir string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quiet})
	if err != nil {
		t.Fatalf("Open %s: %v", dir, err)
	}
	return s
}

func update(t testing.TB, s *Store, fn func(tx *Tx) error) {
	t.Helper()
	if err := s.Update(context.Background(), fn); err != nil {
		t.Fatalf("Update: %v", err)
	}
}

func view(t testing.TB, s *Store, fn func(tx *Tx) error) {
	t.Helper()
	if err := s.View(context.Background(), fn); err != nil {
		t.Fatalf("View: %v", err)
	}
}

func testAccount(id string) model.Account {
	return model.Account{
		ID:           id,
		Name:         "Alice " + id,
		Balance:      25 * model.Credit,
		Entitlements: model.DefaultEntitlements(),
		CreatedAt:    t0,
	}
}

func testVM(id, acct string, state model.VMState) model.VM {
	return model.VM{
		ID:           id,
		AccountID:    acct,
		Name:         "web-1",
		Tier:         "small",
		Image:        "debian-12",
		State:        state,
		IP:           netip.MustParseAddr("10.42.0.7"),
		LastIP:       netip.MustParseAddr("10.42.0.7"),
		Ports:        []model.Port{{Proto: "tcp", Number: 443}, {Proto: "udp", Number: 51820}},
		Domains:      []string{"app.example.com"},
		BootID:       "3f2a9c1e-8d4b-4e7a-9b1c-2d3e4f5a6b7c",
		CreatedAt:    t0,
		StoppedAt:    t0.Add(time.Hour),
		WantRunning:  true,
		BilledUntil:  t0.Add(2 * time.Hour),
		NextBackupAt: t0.Add(20 * time.Hour),
	}
}

func testBackup(id, vm string, at time.Time) model.Backup {
	return model.Backup{ID: id, VMID: vm, Kind: model.Scheduled, TakenAt: at, SizeBytes: 4096, Consistency: model.Frozen}
}

// seqIDs returns a generator that hands out ids in order, then repeats the
// last one forever, for tests that force collisions.
func seqIDs(ids ...string) func(model.Kind) string {
	i := 0
	return func(model.Kind) string {
		id := ids[min(i, len(ids)-1)]
		i++
		return id
	}
}
