package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
)

// newAppliance opens the real appliance over an in-memory store and a real
// loop-backed Btrfs pool (skipping where one cannot be made). It has no
// image, so it runs no VMs: VM verbs are tested end to end through the CLI.
func newAppliance(tb testing.TB, clk clock.Clock) (*appliance.Appliance, *store.Store) {
	tb.Helper()
	pool := btrfstest.NewPool(tb, 0)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	app, err := appliance.New(ctx, appliance.Options{
		Store: st, Pool: pool, Clock: clk, RunDir: tb.TempDir(),
		Subnet: netip.MustParsePrefix("10.77.0.0/24"),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { app.Close() })
	return app, st
}

func TestRealAccounts(t *testing.T) {
	clk := clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	app, _ := newAppliance(t, clk)
	c, _ := serve(t, app)
	ctx := context.Background()

	a, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice", Balance: 25 * model.Credit, BackupRetention: 2})
	if err != nil {
		t.Fatal(err)
	}
	if model.ValidateID(model.KindAccount, a.ID) != nil || a.Balance != 25*model.Credit || a.Entitlements.BackupRetention != 2 {
		t.Fatalf("created %+v", a)
	}
	a, err = c.TopUp(ctx, a.ID, 2_500_000)
	if err != nil || a.Balance != 27_500_000 {
		t.Fatalf("TopUp = %+v, %v; want balance 27.5", a, err)
	}
	got, err := c.Account(ctx, a.ID)
	if err != nil || got.Balance != a.Balance || got.Name != "alice" {
		t.Fatalf("Account = %+v, %v", got, err)
	}
	as, err := c.Accounts(ctx)
	if err != nil || len(as) != 1 || as[0].ID != a.ID {
		t.Fatalf("Accounts = %+v, %v", as, err)
	}
	ledger, err := c.Ledger(ctx, a.ID, 10)
	if err != nil || len(ledger) != 2 {
		t.Fatalf("Ledger = %+v, %v; want the opening balance and the top-up", ledger, err)
	}
	var sum model.Micro
	for _, e := range ledger {
		if e.Kind != model.TopUp {
			t.Errorf("ledger entry %+v is not a top-up", e)
		}
		sum += e.Amount
	}
	if sum != 27_500_000 {
		t.Errorf("ledger sums to %s, want 27.5", sum)
	}

	tiers, err := c.Tiers(ctx)
	if err != nil || len(tiers) != len(model.DefaultTiers()) {
		t.Fatalf("Tiers = %+v, %v", tiers, err)
	}

	// Errors of the real appliance keep their category across the socket.
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"unknown account", func() error { _, err := c.Account(ctx, "ac-zzzzzz"); return err }, model.ErrNotFound},
		{"top-up of unknown account", func() error { _, err := c.TopUp(ctx, "ac-zzzzzz", 1); return err }, model.ErrNotFound},
		{"malformed id", func() error { _, err := c.Account(ctx, "alice"); return err }, model.ErrInvalid},
		{"negative amount", func() error { _, err := c.TopUp(ctx, a.ID, -1); return err }, model.ErrInvalid},
		{"absurd amount", func() error { _, err := c.TopUp(ctx, a.ID, model.MaxAmount+1); return err }, model.ErrInvalid},
		{"unknown VM", func() error { _, err := c.VM(ctx, "vm-zzzzzz"); return err }, model.ErrNotFound},
		{"destroy unknown VM", func() error { _, err := c.DestroyVM(ctx, "vm-zzzzzz"); return err }, model.ErrNotFound},
		{"unknown tier", func() error {
			_, err := c.CreateVM(ctx, api.CreateVMRequest{AccountID: a.ID, Tier: "huge"})
			return err
		}, model.ErrNotFound},
		{"unknown backup", func() error { _, err := c.DeleteBackup(ctx, "bk-zzzzzzzzzz"); return err }, model.ErrNotFound},
		{"unknown operation", func() error { _, err := c.Operation(ctx, "op-zzzzzzzzzz"); return err }, model.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	// Nothing of the refused requests changed the account.
	if got, _ := c.Account(ctx, a.ID); got.Balance != 27_500_000 {
		t.Fatalf("balance after refused requests = %s, want 27.5", got.Balance)
	}
}

func TestRealClockAndEvents(t *testing.T) {
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	app, _ := newAppliance(t, clock.NewManual(start))
	c, _ := serve(t, app)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := c.Status(ctx)
	if err != nil || st.Clock != "manual" || !st.Now.Equal(start) {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	now, err := c.AdvanceClock(ctx, 7*24*time.Hour)
	if err != nil || !now.Equal(start.Add(7*24*time.Hour)) {
		t.Fatalf("AdvanceClock(7d) = %v, %v", now, err)
	}

	// Follow: the stream delivers events made after it started, in order.
	got := make(chan model.Event, 16)
	followErr := make(chan error, 1)
	fctx, stopFollow := context.WithCancel(ctx)
	go func() {
		followErr <- c.FollowEvents(fctx, 0, func(ev model.Event) error {
			got <- ev
			return nil
		})
	}()
	var ids []string
	for i := range 3 {
		a, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: fmt.Sprintf("user-%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, a.ID)
	}
	var seen []string
	var last uint64
	for len(seen) < 3 {
		select {
		case ev := <-got:
			if ev.Seq <= last {
				t.Fatalf("event %d after %d: out of order", ev.Seq, last)
			}
			last = ev.Seq
			if model.KindOf(ev.Object) == model.KindAccount {
				seen = append(seen, ev.Object)
			}
		case <-ctx.Done():
			t.Fatalf("followed events for 30 s and saw accounts %v of %v", seen, ids)
		}
	}
	sort.Strings(seen)
	sort.Strings(ids)
	if fmt.Sprint(seen) != fmt.Sprint(ids) {
		t.Fatalf("events named accounts %v, want %v", seen, ids)
	}
	stopFollow()
	if err := <-followErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("FollowEvents after cancel = %v, want context.Canceled", err)
	}
	// WaitEvents: returns what is there at once, else waits for the next.
	if es, err := c.WaitEvents(ctx, 0); err != nil || len(es) == 0 {
		t.Fatalf("WaitEvents(0) = %v, %v; want the events so far", es, err)
	}
	waited := make(chan []model.Event, 1)
	go func() {
		es, err := c.WaitEvents(ctx, last)
		if err != nil {
			t.Errorf("WaitEvents(%d): %v", last, err)
		}
		waited <- es
	}()
	select {
	case es := <-waited:
		t.Fatalf("WaitEvents(%d) returned %v before anything happened", last, es)
	case <-time.After(200 * time.Millisecond):
	}
	b, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case es := <-waited:
		if len(es) == 0 || es[0].Seq <= last || es[len(es)-1].Object != b.ID {
			t.Fatalf("WaitEvents(%d) = %+v, want the events of %s", last, es, b.ID)
		}
		last = es[len(es)-1].Seq
	case <-ctx.Done():
		t.Fatal("WaitEvents did not return after an event")
	}

	es, err := c.Events(ctx, 0, 1000)
	if err != nil || len(es) == 0 || es[len(es)-1].Seq != last {
		t.Fatalf("Events = %d events (last %v), %v; want the last to be %d", len(es), es, err, last)
	}
	// LastEvents: the newest ones, oldest first, the same as the tail of Events.
	if len(es) < 3 {
		t.Fatalf("Events = %d events, want at least 3", len(es))
	}
	tail, err := c.LastEvents(ctx, 2)
	if err != nil || len(tail) != 2 || tail[0].Seq != es[len(es)-2].Seq || tail[1].Seq != last || tail[1].Object != b.ID {
		t.Fatalf("LastEvents(2) = %+v, %v; want events %d and %d", tail, err, es[len(es)-2].Seq, last)
	}
	if all, err := c.LastEvents(ctx, 1000); err != nil || len(all) != len(es) || all[0].Seq != es[0].Seq {
		t.Fatalf("LastEvents(1000) = %d events, %v; want all %d", len(all), err, len(es))
	}
	_, err = c.LastEvents(ctx, 0)
	if model.Code(err) != "invalid" {
		t.Fatalf("LastEvents(0) = %v, want invalid", err)
	}
}

func TestRealClockRefusedOnRealClock(t *testing.T) {
	app, _ := newAppliance(t, clock.Real{})
	c, _ := serve(t, app)
	_, err := c.AdvanceClock(context.Background(), time.Hour)
	if !errors.Is(err, model.ErrConflict) {
		t.Fatalf("AdvanceClock on a real clock = %v, want conflict", err)
	}
	if st, err := c.Status(context.Background()); err != nil || st.Clock != "real" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
}

// BenchmarkVMList measures `vm list` through the API (client, socket, server,
// appliance, store) with 1,000 VMs. The VM rows are put straight into a real
// (in-memory Badger) store: no VM processes run.
func BenchmarkVMList(b *testing.B) {
	app, st := newAppliance(b, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, _ := serve(b, app)
	ctx := context.Background()
	acct, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bench", Balance: model.MaxAmount})
	if err != nil {
		b.Fatal(err)
	}
	const n = 1000
	created := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i += 100 {
		err := st.Update(ctx, func(tx *store.Tx) error {
			for j := i; j < i+100; j++ {
				id, err := tx.NewID(model.KindVM)
				if err != nil {
					return err
				}
				vm := model.VM{
					ID: id, AccountID: acct.ID, Name: fmt.Sprintf("vm-%04d", j), Tier: "small", Image: appliance.DefaultImage,
					State: model.StateStopped, LastIP: netip.AddrFrom4([4]byte{10, 77, byte(j >> 8), byte(j)}),
					Ports: []model.Port{{Proto: "tcp", Number: 443}}, Domains: []string{fmt.Sprintf("app%d.example.com", j)},
					CreatedAt: created, StoppedAt: created, BilledUntil: created,
				}
				if err := tx.PutVM(vm); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		vms, err := c.VMs(ctx, api.VMFilter{})
		if err != nil || len(vms) != n {
			b.Fatalf("VMs = %d, %v; want %d", len(vms), err, n)
		}
	}
}

// TestRealBackupList lists backups across VMs through the socket, with and
// without filters, from rows written into the real store (the appliance
// here runs no VMs, so it takes no backups itself); none is an empty
// list, never null.
func TestRealBackupList(t *testing.T) {
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, sock := serve(t, app)
	ctx := context.Background()

	if status, body := rawDo(t, sock, "GET", "/v1/backups", "", nil); status != 200 || string(body) != "[]\n" {
		t.Fatalf("GET /v1/backups on an empty box = %d %q, want 200 []", status, body)
	}

	alice, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "bob", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	rows := []struct{ vm, acct, bk string }{
		{"vm-bbbbbb", alice.ID, "bk-b000000001"},
		{"vm-bbbbbb", alice.ID, "bk-b000000002"},
		{"vm-aaaaaa", bob.ID, "bk-a000000001"},
		{"vm-cccccc", alice.ID, "bk-c000000001"},
	}
	err = st.Update(ctx, func(tx *store.Tx) error {
		for i, r := range rows {
			if _, err := tx.VM(r.vm); errors.Is(err, model.ErrNotFound) {
				vm := model.VM{ID: r.vm, AccountID: r.acct, Name: "x", Tier: "nano", Image: appliance.DefaultImage, State: model.StateStopped, CreatedAt: at}
				if err := tx.PutVM(vm); err != nil {
					return err
				}
			}
			b := model.Backup{ID: r.bk, VMID: r.vm, Kind: model.OnDemand, TakenAt: at.Add(time.Duration(i) * time.Hour), Consistency: model.Crash}
			if err := tx.PutBackup(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	ids := func(bs []model.Backup) string {
		var out []string
		for _, b := range bs {
			out = append(out, b.ID)
		}
		return fmt.Sprint(out)
	}
	for _, tt := range []struct {
		f    api.BackupFilter
		want string
	}{
		{api.BackupFilter{}, "[bk-a000000001 bk-b000000002 bk-b000000001 bk-c000000001]"},
		{api.BackupFilter{AccountID: alice.ID}, "[bk-b000000002 bk-b000000001 bk-c000000001]"},
		{api.BackupFilter{VMID: "vm-bbbbbb"}, "[bk-b000000002 bk-b000000001]"},
		{api.BackupFilter{AccountID: bob.ID, VMID: "vm-bbbbbb"}, "[]"},
	} {
		bs, err := c.ListBackups(ctx, tt.f)
		if err != nil || ids(bs) != tt.want {
			t.Errorf("ListBackups(%+v) = %s, %v; want %s", tt.f, ids(bs), err, tt.want)
		}
	}
	if _, err := c.ListBackups(ctx, api.BackupFilter{AccountID: "ac-zzzzzz"}); !errors.Is(err, model.ErrNotFound) {
		t.Errorf("ListBackups of an unknown account = %v, want not found", err)
	}
}

// TestRealVMUsage: with no VM running, the usage is an empty list, never
// null (a running guest's is tested in the appliance's TestRealBackupRestore).
func TestRealVMUsage(t *testing.T) {
	app, _ := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	c, sock := serve(t, app)
	if status, body := rawDo(t, sock, "GET", "/v1/vms/usage", "", nil); status != 200 || string(body) != "[]\n" {
		t.Fatalf("GET /v1/vms/usage with no VM = %d %q, want 200 []", status, body)
	}
	if us, err := c.VMUsage(context.Background()); err != nil || len(us) != 0 {
		t.Errorf("VMUsage with no VM running = %+v, %v; want none", us, err)
	}
}

// TestRealTokens: the token routes over the real appliance and client; the
// secret comes back once, never in a list, and authenticates.
func TestRealTokens(t *testing.T) {
	start := time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)
	app, _ := newAppliance(t, clock.NewManual(start))
	c, sock := serve(t, app)
	ctx := context.Background()
	a, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}

	ct, err := c.CreateToken(ctx, a.ID, api.CreateTokenRequest{Name: "assistant", ReadOnly: true, ExpiresIn: api.Duration(30 * 24 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if ct.Token.AccountID != a.ID || ct.Token.Name != "assistant" || !ct.Token.ReadOnly || !ct.Token.ExpiresAt.Equal(start.Add(30*24*time.Hour)) ||
		!strings.HasPrefix(ct.Secret, "sjt_"+ct.Token.ID+"_") {
		t.Fatalf("CreateToken = %+v", ct)
	}
	if p, err := app.Authenticate(ctx, ct.Secret); err != nil || p.TokenID != ct.Token.ID || !p.ReadOnly {
		t.Fatalf("Authenticate(the secret answered) = %+v, %v", p, err)
	}
	status, body := rawDo(t, sock, "GET", "/v1/accounts/"+a.ID+"/tokens", "", nil)
	secretPart := ct.Secret[len(ct.Secret)-20:]
	if status != 200 || strings.Contains(string(body), secretPart) || strings.Contains(string(body), "hash") || !strings.Contains(string(body), `"read_only":true`) {
		t.Fatalf("GET tokens = %d %s: want the token without its secret or hash", status, body)
	}
	ts, err := c.Tokens(ctx, a.ID)
	if err != nil || len(ts) != 1 || ts[0].ID != ct.Token.ID || ts[0].Hash != nil {
		t.Fatalf("Tokens = %+v, %v", ts, err)
	}
	if _, err := c.CreateToken(ctx, a.ID, api.CreateTokenRequest{Name: "ASSISTANT"}); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("a second live token of the same name: %v, want conflict", err)
	}
	r, err := c.RevokeToken(ctx, ct.Token.ID)
	if err != nil || !r.RevokedAt.Equal(start) {
		t.Fatalf("RevokeToken = %+v, %v", r, err)
	}
	if _, err := app.Authenticate(ctx, ct.Secret); !errors.Is(err, model.ErrUnauthenticated) {
		t.Fatalf("Authenticate(revoked) = %v", err)
	}
	if r, err := c.RevokeToken(ctx, ct.Token.ID); err != nil || !r.RevokedAt.Equal(start) {
		t.Fatalf("RevokeToken twice = %+v, %v", r, err)
	}

	for _, tt := range []struct {
		name string
		call func() error
		want error
	}{
		{"create for unknown account", func() error {
			_, err := c.CreateToken(ctx, "ac-zzzzzz", api.CreateTokenRequest{Name: "x"})
			return err
		}, model.ErrNotFound},
		{"list of unknown account", func() error { _, err := c.Tokens(ctx, "ac-zzzzzz"); return err }, model.ErrNotFound},
		{"revoke unknown token", func() error { _, err := c.RevokeToken(ctx, "tk-zzzzzzzzzz"); return err }, model.ErrNotFound},
		{"revoke malformed token", func() error { _, err := c.RevokeToken(ctx, "sjt_x"); return err }, model.ErrInvalid},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if status, body := rawDo(t, sock, "POST", "/v1/accounts/ac-zzzzzz/tokens", "application/json", []byte(`{"name":"x"}`)); status != 404 || !strings.Contains(string(body), "not_found") {
		t.Fatalf("POST tokens of an unknown account = %d %s, want 404", status, body)
	}
	if status, _ := rawDo(t, sock, "POST", "/v1/accounts/"+a.ID+"/tokens", "application/json", []byte(`{"name":"cli"}`)); status != 201 {
		t.Fatalf("POST tokens = %d, want 201", status)
	}
}
