package tui

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/clock"
)

// fixture is a box with fixed data, served by the real api/server over a
// UNIX socket to the real client, so that the console's views are tested
// on what superjoltd really sends, at a fixed time. It answers the reads
// the console makes and records the actions it asks for; verbs it does not
// implement panic (the embedded nil interface), which the server turns into
// a failed request.
type fixture struct {
	server.Appliance

	clk  *clock.Manual
	sock string
	srv  *http.Server

	mu       sync.Mutex
	accounts []model.Account
	vms      []model.VM
	backups  []model.Backup
	ops      []model.Operation
	events   []model.Event
	calls    []string
	// fail makes every action answer this error.
	fail error
	wake chan struct{}
}

var fixtureNow = time.Date(2026, 12, 1, 12, 4, 0, 0, time.UTC)

func newFixture() *fixture {
	f := &fixture{clk: clock.NewManual(fixtureNow), wake: make(chan struct{})}
	ago := func(d time.Duration) time.Time { return fixtureNow.Add(-d) }
	ent := model.DefaultEntitlements()
	f.accounts = []model.Account{
		{ID: "ac-alice1", Name: "alice", Balance: 250_000_000, Entitlements: ent, CreatedAt: ago(90 * 24 * time.Hour)},
		{ID: "ac-bob222", Name: "bob", Balance: 300_000, Entitlements: ent, CreatedAt: ago(30 * 24 * time.Hour)},
		{ID: "ac-carol3", Name: "carol", Balance: 0, Entitlements: ent, CreatedAt: ago(10 * 24 * time.Hour)},
	}
	ip := func(s string) netip.Addr { return netip.MustParseAddr(s) }
	f.vms = []model.VM{
		{ID: "vm-7k2p9q", AccountID: "ac-alice1", Name: "web-1", Tier: "small", Image: "builtin", State: model.StateRunning,
			IP: ip("10.77.0.2"), BootID: "boot-aaaa", Ports: []model.Port{{Proto: "tcp", Number: 8080}}, Domains: []string{"web.example.com"},
			CreatedAt: ago(40 * 24 * time.Hour), NextBackupAt: fixtureNow.Add(20 * time.Hour), WantRunning: true},
		{ID: "vm-m3x8aa", AccountID: "ac-alice1", Name: "db", Tier: "medium", Image: "builtin", State: model.StateRunning,
			IP: ip("10.77.0.3"), BootID: "boot-bbbb", CreatedAt: ago(20 * 24 * time.Hour), NextBackupAt: fixtureNow.Add(3 * time.Hour), WantRunning: true},
		{ID: "vm-q1w2e3", AccountID: "ac-bob222", Name: "ci", Tier: "nano", Image: "builtin", State: model.StateStopped,
			LastIP: ip("10.77.0.4"), CreatedAt: ago(5 * 24 * time.Hour), StoppedAt: ago(2 * time.Hour), StopReason: model.StopReason("requested"),
			NextBackupAt: fixtureNow.Add(2 * time.Hour)},
		{ID: "vm-z9y8x7", AccountID: "ac-carol3", Name: "old", Tier: "nano", Image: "builtin", State: model.StateArchived,
			LastIP: ip("10.77.0.5"), CreatedAt: ago(9 * 24 * time.Hour), ArchivedAt: ago(11 * time.Hour), ReclaimAt: fixtureNow.Add(13*time.Hour + 2*time.Minute)},
		{ID: "vm-g0n3aa", AccountID: "ac-bob222", Name: "gone", Tier: "nano", Image: "builtin", State: model.StateGraveyard,
			LastIP: ip("10.77.0.6"), CreatedAt: ago(3 * 24 * time.Hour), DestroyedAt: ago(1 * time.Hour), ReclaimAt: fixtureNow.Add(23 * time.Hour)},
	}
	f.backups = []model.Backup{
		{ID: "bk-web0000001", VMID: "vm-7k2p9q", Kind: model.Scheduled, TakenAt: ago(27 * time.Hour), SizeBytes: 12 << 20, Consistency: model.Frozen},
		{ID: "bk-web0000002", VMID: "vm-7k2p9q", Kind: model.Scheduled, TakenAt: ago(3 * time.Hour), SizeBytes: 3 << 20, Consistency: model.Frozen},
		{ID: "bk-web0000003", VMID: "vm-7k2p9q", Kind: model.OnDemand, TakenAt: ago(40 * time.Minute), SizeBytes: 1 << 20, Consistency: model.Frozen},
		{ID: "bk-db00000001", VMID: "vm-m3x8aa", Kind: model.Scheduled, TakenAt: ago(21 * time.Hour), SizeBytes: 80 << 20, Consistency: model.Crash},
		{ID: "bk-ci00000001", VMID: "vm-q1w2e3", Kind: model.Scheduled, TakenAt: ago(26 * time.Hour), SizeBytes: 5 << 20, Consistency: model.Offline},
		{ID: "bk-old0000001", VMID: "vm-z9y8x7", Kind: model.Scheduled, TakenAt: ago(2 * 24 * time.Hour), SizeBytes: 7 << 20, Consistency: model.Frozen},
	}
	f.ops = []model.Operation{
		{ID: "op-restore001", Kind: model.OpRestore, VMID: "vm-m3x8aa", BackupID: "bk-db00000001", State: model.OpRunning, Step: "replaced", Progress: 60, StartedAt: ago(20 * time.Second)},
		{ID: "op-backup0001", Kind: model.OpBackup, VMID: "vm-7k2p9q", State: model.OpDone, Step: "pruned", Progress: 100, StartedAt: ago(3 * time.Hour), FinishedAt: ago(3*time.Hour - 2*time.Second)},
	}
	ev := func(d time.Duration, typ, obj, acct, msg string) {
		f.events = append(f.events, model.Event{Seq: uint64(len(f.events) + 1), At: ago(d), Type: typ, Object: obj, Account: acct, Message: msg})
	}
	ev(3*time.Hour, "op.started", "op-backup0001", "ac-alice1", "backup of vm-7k2p9q started")
	ev(3*time.Hour, "op.step", "op-backup0001", "ac-alice1", "backup of vm-7k2p9q: frozen (20%)")
	ev(3*time.Hour-1500*time.Millisecond, "op.step", "op-backup0001", "ac-alice1", "backup of vm-7k2p9q: snapshot (40%)")
	ev(3*time.Hour-1600*time.Millisecond, "op.step", "op-backup0001", "ac-alice1", "backup of vm-7k2p9q: thawed (60%)")
	ev(3*time.Hour-1700*time.Millisecond, "backup.taken", "bk-web0000002", "ac-alice1", "scheduled backup bk-web0000002 of vm-7k2p9q taken (frozen)")
	ev(3*time.Hour-2*time.Second, "op.done", "op-backup0001", "", "backup of vm-7k2p9q: done")
	ev(time.Hour, "vm.destroyed", "vm-g0n3aa", "ac-bob222", "vm-g0n3aa destroyed; in the graveyard until 2026-12-02T11:04:00Z")
	ev(20*time.Second, "op.started", "op-restore001", "ac-alice1", "restore of vm-m3x8aa started")
	ev(15*time.Second, "op.step", "op-restore001", "ac-alice1", "restore of vm-m3x8aa: stopped (30%)")
	ev(5*time.Second, "op.step", "op-restore001", "ac-alice1", "restore of vm-m3x8aa: replaced (60%)")
	return f
}

// serve starts the real API server over f and returns a client of it.
func (f *fixture) serve(t testing.TB) *api.Client {
	f.sock = filepath.Join(t.TempDir(), "sj.sock")
	f.up(t)
	t.Cleanup(f.down)
	c := api.NewClient(f.sock)
	t.Cleanup(func() { c.Close() })
	return c
}

// up (re)starts the server on f's socket.
func (f *fixture) up(t testing.TB) {
	ln, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = &http.Server{Handler: server.New(f, server.Options{Logger: slog.New(slog.DiscardHandler)})}
	go f.srv.Serve(ln)
}

// down stops the server as a dying superjoltd would: connections cut, the
// socket gone.
func (f *fixture) down() {
	f.srv.Close()
	os.Remove(f.sock)
}

func (f *fixture) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, fmt.Sprintf(format, args...))
}

// called returns the actions asked for so far.
func (f *fixture) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// emit appends an event and wakes the followers.
func (f *fixture) emit(typ, obj, acct, msg string) {
	f.mu.Lock()
	f.events = append(f.events, model.Event{Seq: uint64(len(f.events) + 1), At: f.clk.Now(), Type: typ, Object: obj, Account: acct, Message: msg})
	close(f.wake)
	f.wake = make(chan struct{})
	f.mu.Unlock()
}

func (f *fixture) Clock() clock.Clock { return f.clk }
func (f *fixture) Capacity(context.Context) (model.Capacity, error) {
	return model.Capacity{Accel: "tcg", MemoryMiB: 16384, CPUs: 2, PoolBytes: 200 << 30, PoolUsedBytes: 76 << 30}, nil
}
func (f *fixture) PoolStatus(context.Context) (appliance.PoolStatus, error) {
	return appliance.PoolStatus{}, fmt.Errorf("%w: no pool in the fixture", model.ErrUnavailable)
}
func (f *fixture) Accounts(context.Context) ([]model.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.accounts), nil
}
func (f *fixture) Account(_ context.Context, id string) (model.Account, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, a := range f.accounts {
		if a.ID == id {
			return a, nil
		}
	}
	return model.Account{}, fmt.Errorf("%w: no account %s", model.ErrNotFound, id)
}
func (f *fixture) Tiers(context.Context) ([]model.Tier, error) { return model.DefaultTiers(), nil }
func (f *fixture) Images(context.Context) ([]model.Image, error) {
	return []model.Image{{Name: "builtin", Builtin: true}, {Name: "debian-12"}}, nil
}
func (f *fixture) ImportImage(context.Context, appliance.ImportImageRequest, io.Reader, func(string)) (model.Image, error) {
	return model.Image{}, fmt.Errorf("%w: the fixture makes no images", model.ErrUnavailable)
}
func (f *fixture) BuildImage(context.Context, appliance.BuildImageRequest, func(string)) (model.Image, error) {
	return model.Image{}, fmt.Errorf("%w: the fixture makes no images", model.ErrUnavailable)
}
func (f *fixture) DeleteImage(context.Context, string) (model.Image, error) {
	return model.Image{}, fmt.Errorf("%w: the fixture removes no images", model.ErrUnavailable)
}
func (f *fixture) VMs(context.Context, appliance.VMFilter) ([]model.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.vms), nil
}
func (f *fixture) VMRows(ctx context.Context, filter appliance.VMFilter, _ appliance.Page) (appliance.Rows, error) {
	vms, err := f.VMs(ctx, filter)
	return fixtureRows(vms), err
}
func (f *fixture) VM(_ context.Context, id string) (model.VM, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, vm := range f.vms {
		if vm.ID == id {
			return vm, nil
		}
	}
	return model.VM{}, fmt.Errorf("%w: no VM %s", model.ErrNotFound, id)
}
func (f *fixture) Backup(_ context.Context, id string) (model.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, b := range f.backups {
		if b.ID == id {
			return b, nil
		}
	}
	return model.Backup{}, fmt.Errorf("%w: no backup %s", model.ErrNotFound, id)
}
func (f *fixture) Backups(_ context.Context, vmID string) ([]model.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Backup
	for _, b := range f.backups {
		if b.VMID == vmID {
			out = append(out, b)
		}
	}
	return out, nil
}
func (f *fixture) ListBackups(_ context.Context, _ appliance.BackupFilter) ([]model.Backup, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.backups), nil
}
func (f *fixture) BackupRows(ctx context.Context, filter appliance.BackupFilter, _ appliance.Page) (appliance.Rows, error) {
	bs, err := f.ListBackups(ctx, filter)
	return fixtureRows(bs), err
}

// fixtureRows encodes a whole list as the rows the store would hand the
// server.
func fixtureRows[T any](items []T) appliance.Rows {
	rows := appliance.Rows{Rows: make([][]byte, len(items))}
	for i, it := range items {
		b, err := json.Marshal(it)
		if err != nil {
			panic(err)
		}
		rows.Rows[i] = b
	}
	return rows
}
func (f *fixture) VMUsage(context.Context) ([]model.VMUsage, error) {
	return []model.VMUsage{{VMID: "vm-7k2p9q", MemoryBytes: 312 << 20, CPUPercent: 4, CPUTime: 95 * time.Second, Source: model.UsageFromProc}, {VMID: "vm-m3x8aa", MemoryBytes: 1 << 30, CPUPercent: 37}}, nil
}
func (f *fixture) Operations(_ context.Context, o appliance.OpFilter) ([]model.Operation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Operation
	for _, op := range f.ops {
		if !o.Running || op.State == model.OpRunning {
			out = append(out, op)
		}
	}
	return out, nil
}
func (f *fixture) Operation(_ context.Context, id string) (model.Operation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, op := range f.ops {
		if op.ID == id {
			return op, nil
		}
	}
	return model.Operation{}, fmt.Errorf("%w: no operation %s", model.ErrNotFound, id)
}
func (f *fixture) Events(_ context.Context, after uint64, limit int) ([]model.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []model.Event
	for _, e := range f.events {
		if e.Seq > after && len(out) < limit {
			out = append(out, e)
		}
	}
	return out, nil
}
func (f *fixture) LastEvents(_ context.Context, n int) ([]model.Event, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.events[max(len(f.events)-n, 0):]), nil
}
func (f *fixture) WaitEvents(ctx context.Context, after uint64) ([]model.Event, error) {
	for {
		// Look and take the wake channel under one lock, or an event
		// emitted in between would wait for the next one.
		f.mu.Lock()
		var es []model.Event
		for _, e := range f.events {
			if e.Seq > after {
				es = append(es, e)
			}
		}
		wake := f.wake
		f.mu.Unlock()
		if len(es) > 0 {
			return es, nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Actions: recorded, answered with f.fail when set, else accepted.

func (f *fixture) accept(kind model.OpKind, vmID, call string) (model.Operation, error) {
	f.record("%s", call)
	if f.fail != nil {
		return model.Operation{}, f.fail
	}
	op := model.Operation{ID: fmt.Sprintf("op-%010d", len(f.called())), Kind: kind, VMID: vmID, State: model.OpRunning, Step: "recorded", StartedAt: f.clk.Now()}
	f.mu.Lock()
	f.ops = append(f.ops, op)
	f.mu.Unlock()
	return op, nil
}

func (f *fixture) SubmitBackup(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpBackup, id, "backup "+id)
}
func (f *fixture) SubmitRestore(_ context.Context, id, bk string) (model.Operation, error) {
	return f.accept(model.OpRestore, id, "restore "+id+" from "+bk)
}
func (f *fixture) SubmitDestroyVM(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpDestroy, id, "destroy "+id)
}
func (f *fixture) SubmitResumeVM(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpResume, id, "resume "+id)
}
func (f *fixture) SubmitStopVM(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpStop, id, "stop "+id)
}
func (f *fixture) SubmitStartVM(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpStart, id, "start "+id)
}
func (f *fixture) SubmitDeleteBackup(_ context.Context, id string) (model.Operation, error) {
	return f.accept(model.OpDeleteBackup, "", "delete "+id)
}
func (f *fixture) SubmitCreateVM(_ context.Context, req appliance.CreateVMRequest) (model.Operation, error) {
	return f.accept(model.OpCreate, "", fmt.Sprintf("create account=%s tier=%s name=%s image=%s", req.AccountID, req.Tier, req.Name, req.Image))
}
func (f *fixture) CancelOperation(_ context.Context, id string) (model.Operation, error) {
	f.record("cancel %s", id)
	return model.Operation{}, f.fail
}
func (f *fixture) ResolveBackup(_ context.Context, vmID, from string, _ *time.Location) (model.Backup, error) {
	f.record("resolve %s %s", vmID, from)
	bks, _ := f.Backups(context.Background(), vmID)
	return model.PickBackup(bks, from, f.clk.Now(), time.UTC)
}
func (f *fixture) TopUp(_ context.Context, id string, m model.Micro) (model.Account, error) {
	f.record("topup %s %s", id, m)
	if f.fail != nil {
		return model.Account{}, f.fail
	}
	return f.Account(context.Background(), id)
}
func (f *fixture) AddPort(_ context.Context, id string, p model.Port) (model.VM, error) {
	f.record("port add %s %s", id, p)
	return f.VM(context.Background(), id)
}
func (f *fixture) RemovePort(_ context.Context, id string, p model.Port) (model.VM, error) {
	f.record("port remove %s %s", id, p)
	return f.VM(context.Background(), id)
}
func (f *fixture) AddDomain(_ context.Context, id, d string, _ uint16) (model.VM, error) {
	f.record("domain add %s %s", id, d)
	return f.VM(context.Background(), id)
}
func (f *fixture) RemoveDomain(_ context.Context, id, d string) (model.VM, error) {
	f.record("domain remove %s %s", id, d)
	return f.VM(context.Background(), id)
}
func (f *fixture) ConsoleLog(_ context.Context, id string, n int) ([]string, error) {
	lines := []string{"[    0.000000] Linux version 6.1.0 (superjolt built-in)", "superjolt-agent: listening on virtio-serial", "/ # echo hello", "hello"}
	return lines[max(len(lines)-n, 0):], nil
}

// change edits the VM id in place, as the daemon would.
func (f *fixture) change(id string, fn func(vm *model.VM)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.vms {
		if f.vms[i].ID == id {
			fn(&f.vms[i])
		}
	}
}

// addBackup records a new backup, as one taken would be.
func (f *fixture) addBackup(b model.Backup) {
	f.mu.Lock()
	f.backups = append(f.backups, b)
	f.mu.Unlock()
}

// finish ends the operation id as done and tells the stream (op.done,
// naming only the operation, as superjoltd does).
func (f *fixture) finish(id string) {
	f.mu.Lock()
	var msg string
	for i := range f.ops {
		if f.ops[i].ID == id {
			f.ops[i].State, f.ops[i].Progress, f.ops[i].FinishedAt = model.OpDone, 100, f.clk.Now()
			msg = fmt.Sprintf("%s of %s: done", f.ops[i].Kind, f.ops[i].VMID)
		}
	}
	f.mu.Unlock()
	f.emit("op.done", id, "", msg)
}
