package appliance

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
	"github.com/superjolt/superjolt/testvm"
)

// t0 is where manual clocks start: a Sunday, midnight UTC.
var t0 = time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)

// stubHypervisor runs no VM at all. It stands in for VM processes ONLY in
// tests whose subject is not the VM (billing arithmetic, bad input, the
// bookkeeping of graveyard and reaper at scale); every rule they cover is
// also exercised with real VMs (see the TestReal* tests). Its agent answers
// ping, freeze and thaw, and records whether the "guest" is frozen.
type stubHypervisor struct {
	mu       sync.Mutex
	launches int
	attaches int
	running  map[string]*stubMachine
	// netBroken makes a guest with a network report it could not bring
	// its address up; otherwise it reports the address it was given.
	netBroken bool
}

func (h *stubHypervisor) Launch(life, boot context.Context, spec MachineSpec) (Machine, error) {
	for _, f := range []string{spec.Kernel, spec.Initrd, spec.Rootfs} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	id := make([]byte, 16)
	rand.Read(id)
	m := &stubMachine{id: spec.ID, boot: hex.EncodeToString(id), exited: make(chan struct{})}
	if spec.Net != nil {
		m.ping = guest.PingResult{Hostname: spec.Name, Addresses: []netip.Prefix{spec.Net.Addr}}
		if h.netBroken {
			m.ping = guest.PingResult{Hostname: spec.Name, BootConfigError: "network: no NIC found"}
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running == nil {
		h.running = map[string]*stubMachine{}
	}
	if old := h.running[spec.ID]; old != nil && !old.isDone() {
		return nil, errors.New("stub: VM " + spec.ID + " is already running")
	}
	h.launches++
	h.running[spec.ID] = m
	return m, nil
}

// Attach takes over a stub machine that was let go of: stub machines
// outlive the appliance as QEMU processes do.
func (h *stubHypervisor) Attach(_, _ context.Context, spec MachineSpec) (Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.running[spec.ID]
	if m == nil || m.isDone() {
		return nil, fmt.Errorf("%w: stub: %s", ErrNoMachine, spec.ID)
	}
	h.attaches++
	return m, nil
}

func (h *stubHypervisor) Leftovers(string) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var ids []string
	for id, m := range h.running {
		if !m.isDone() {
			ids = append(ids, id)
		}
	}
	return ids
}

func (h *stubHypervisor) Kill(_, id string) error {
	h.mu.Lock()
	m := h.running[id]
	h.mu.Unlock()
	if m != nil {
		return m.Kill()
	}
	return nil
}

// crash ends the stub machine of VM id as if its process died unasked.
func (h *stubHypervisor) crash(id string) {
	h.mu.Lock()
	m := h.running[id]
	h.mu.Unlock()
	m.once.Do(func() { close(m.exited) })
}

// powerOff ends the stub machine of VM id as a guest's own poweroff does.
func (h *stubHypervisor) powerOff(id string) {
	h.mu.Lock()
	m := h.running[id]
	h.mu.Unlock()
	m.mu.Lock()
	m.poweroff = true
	m.mu.Unlock()
	m.once.Do(func() { close(m.exited) })
}

func (h *stubHypervisor) isRunning(id string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := h.running[id]
	return m != nil && !m.isDone()
}

type stubMachine struct {
	id, boot string
	ping     guest.PingResult // what Ping reports besides the boot id
	poweroff bool             // the guest powered itself off (powerOff)
	mu       sync.Mutex
	frozen   bool
	once     sync.Once
	exited   chan struct{}
}

func (m *stubMachine) BootID() string            { return m.boot }
func (m *stubMachine) Rebooted() <-chan struct{} { return nil }
func (m *stubMachine) Exit() Exit {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.poweroff {
		return ExitPoweredOff
	}
	return ExitUnasked
}
func (m *stubMachine) Agent() Agent { return m }
func (m *stubMachine) Shutdown(context.Context) error {
	m.once.Do(func() { close(m.exited) })
	return nil
}
func (m *stubMachine) Kill() error { return m.Shutdown(context.Background()) }
func (m *stubMachine) Detach()     {}
func (m *stubMachine) Wait(ctx context.Context) error {
	select {
	case <-m.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (m *stubMachine) isDone() bool {
	select {
	case <-m.exited:
		return true
	default:
		return false
	}
}
func (m *stubMachine) Ping(context.Context) (guest.PingResult, error) {
	p := m.ping
	p.BootID = m.boot
	return p, nil
}
func (m *stubMachine) Freeze(context.Context, time.Duration) (guest.FreezeResult, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frozen = true
	return guest.FreezeResult{Filesystems: []string{"/"}}, nil
}
func (m *stubMachine) Thaw(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.frozen = false
	return nil
}
func (m *stubMachine) Exec(context.Context, guest.ExecRequest) (guest.ExecResult, error) {
	return guest.ExecResult{}, errors.New("stub: no guest to exec in")
}

// env is an appliance on a real store and a real Btrfs pool.
type env struct {
	t        testing.TB
	a        *Appliance
	st       *store.Store
	pool     *btrfs.Pool
	clk      *clock.Manual
	hv       Hypervisor
	stateDir string
	runDir   string
	real     bool
	hostMiB  int64
	net      Network
	backoff  time.Duration
	// builtin and build are New's BuiltinImage and BuildImage (zero: the
	// default name, and the image must be in the pool).
	builtin string
	build   func(ctx context.Context, dir string) error
	// historyWindow is New's HistoryWindow (0: the default).
	historyWindow time.Duration
}

type envOptions struct {
	realVMs  bool  // boot real QEMU guests (skips when the host cannot)
	poolSize int64 // 0: 1 GiB
	// imageFill replaces how the built-in image is made.
	imageFill func(ctx context.Context, dir string) error
	// hostMemoryMiB is the host's memory as the appliance sees it (0: 64 GiB,
	// so that no test but the capacity one meets the limit).
	hostMemoryMiB int64
	// network, when set, is the appliance's Network.
	network Network
	// crashBackoff is the crash policy's first back-off (0: the default).
	crashBackoff time.Duration
	// builtinImage names the built-in image ("": DefaultImage).
	builtinImage string
	// historyWindow is how long history is kept (0: the default).
	historyWindow time.Duration
}

// newEnv opens an appliance on a fresh loop-backed pool and store, with a
// manual clock at t0.
func newEnv(t testing.TB, o envOptions) *env {
	t.Helper()
	e := &env{t: t, clk: clock.NewManual(t0), real: o.realVMs, hostMiB: o.hostMemoryMiB, net: o.network, backoff: o.crashBackoff,
		builtin: o.builtinImage, historyWindow: o.historyWindow}
	if e.hostMiB == 0 {
		e.hostMiB = 64 << 10
	}
	fill := o.imageFill
	if o.realVMs {
		img := testvm.Require(t)
		e.hv = &QEMU{Config: vmm.Config{BootTimeout: 90 * time.Second}, Logger: testLogger(t)}
		if fill == nil {
			fill = func(ctx context.Context, dir string) error { return copyImage(dir, img) }
		}
	} else {
		e.hv = &stubHypervisor{}
		if fill == nil {
			fill = fakeImage
		}
	}
	size := o.poolSize
	if size == 0 {
		size = 1 << 30
	}
	e.pool = btrfstest.NewPool(t, size)
	e.stateDir = t.TempDir()
	e.runDir = filepath.Join(t.TempDir(), "run")
	ctx := context.Background()
	builtin := cmp.Or(o.builtinImage, DefaultImage)
	if err := e.pool.CreateImage(ctx, builtin, func(dir string) error { return fill(ctx, dir) }); err != nil {
		t.Fatalf("built-in image: %v", err)
	}
	e.open()
	t.Cleanup(e.close)
	return e
}

// open opens the store and the appliance (again).
func (e *env) open() {
	e.t.Helper()
	st, err := store.Open(context.Background(), store.Options{Dir: filepath.Join(e.stateDir, "db"), Logger: testLogger(e.t)})
	if err != nil {
		e.t.Fatalf("open store: %v", err)
	}
	e.st = st
	a, err := New(context.Background(), Options{Store: st, Pool: e.pool, Hypervisor: e.hv, Clock: e.clk,
		RunDir: e.runDir, Logger: testLogger(e.t), HostMemoryMiB: e.hostMiB, Network: e.net, CrashBackoff: e.backoff,
		BuiltinImage: e.builtin, BuildImage: e.build, HistoryWindow: e.historyWindow})
	if err != nil {
		st.Close()
		e.t.Fatalf("New: %v", err)
	}
	e.a = a
}

// close closes the appliance and the store, once.
func (e *env) close() {
	if e.a != nil {
		if err := e.a.CloseAndHalt(); err != nil {
			e.t.Errorf("Close: %v", err)
		}
		e.a = nil
	}
	if e.st != nil {
		if err := e.st.Close(); err != nil {
			e.t.Errorf("close store: %v", err)
		}
		e.st = nil
	}
}

// restart closes the appliance letting its VMs run, as a daemon that
// stops does, and opens it again: the new one takes them over.
func (e *env) restart() {
	e.t.Helper()
	if err := e.a.Close(); err != nil {
		e.t.Errorf("Close: %v", err)
	}
	e.a = nil
	if err := e.st.Close(); err != nil {
		e.t.Errorf("close store: %v", err)
	}
	e.st = nil
	e.open()
}

func (e *env) reopen() {
	e.t.Helper()
	e.close()
	e.open()
}

// fakeImage writes an image that the stub hypervisor accepts (it boots nothing).
func fakeImage(_ context.Context, dir string) error {
	for _, f := range []string{KernelFile, InitrdFile} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte("not a kernel\n"), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, RootfsFile), make([]byte, 64<<10), 0o644)
}

// copyImage copies the test guest's image into dir.
func copyImage(dir string, img *images.Image) error {
	for _, f := range []struct{ src, dst string }{{img.Kernel, KernelFile}, {img.Initrd, InitrdFile}, {img.Rootfs, RootfsFile}} {
		if err := images.CopyDisk(filepath.Join(dir, f.dst), f.src); err != nil {
			return err
		}
	}
	return nil
}

func testLogger(t testing.TB) *slog.Logger {
	if testing.Verbose() && os.Getenv("SUPERJOLT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func (e *env) account(name string, balance model.Micro, retention int) model.Account {
	e.t.Helper()
	acct, err := e.a.CreateAccount(context.Background(), CreateAccountRequest{Name: name, Balance: balance, BackupRetention: retention})
	if err != nil {
		e.t.Fatalf("CreateAccount: %v", err)
	}
	return acct
}

func (e *env) vm(acct string) model.VM {
	e.t.Helper()
	vm, err := e.a.CreateVM(context.Background(), CreateVMRequest{AccountID: acct, Tier: "nano"})
	if err != nil {
		e.t.Fatalf("CreateVM: %v", err)
	}
	return vm
}

func (e *env) advance(d time.Duration) {
	e.t.Helper()
	if _, err := e.a.AdvanceClock(context.Background(), d); err != nil {
		e.t.Fatalf("AdvanceClock(%s): %v", d, err)
	}
}

func (e *env) getVM(id string) model.VM {
	e.t.Helper()
	vm, err := e.a.VM(context.Background(), id)
	if err != nil {
		e.t.Fatalf("VM(%s): %v", id, err)
	}
	return vm
}

// poolHas reports whether the pool holds vms/<id>, and the backup
// snapshots it holds for id.
func (e *env) poolHas(id string) (bool, []string) {
	e.t.Helper()
	ctx := context.Background()
	vms, err := e.pool.VMs(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	bks, err := e.pool.Backups(ctx, id)
	if err != nil {
		e.t.Fatal(err)
	}
	return slices.Contains(vms, id), bks
}

// checkConsistent fails the test unless store and pool agree: no
// unfinished operation, every VM subvolume and backup snapshot has its row
// and every row its subvolume, every live VM holds its address.
func (e *env) checkConsistent() {
	e.t.Helper()
	ctx := context.Background()
	var ops []model.Operation
	rows := map[string][]string{}
	ips := map[string]string{}
	err := e.st.View(ctx, func(tx *store.Tx) error {
		var err error
		if ops, err = tx.UnfinishedOperations(); err != nil {
			return err
		}
		return tx.ForEachVM(func(vm model.VM) error {
			bks, err := tx.Backups(vm.ID)
			if err != nil {
				return err
			}
			rows[vm.ID] = []string{}
			for _, b := range bks {
				rows[vm.ID] = append(rows[vm.ID], b.ID)
			}
			if vm.State.Live() {
				owner, err := tx.IPOwner(vm.IP)
				if err != nil {
					return err
				}
				ips[vm.ID] = owner
			}
			return nil
		})
	})
	if err != nil {
		e.t.Fatal(err)
	}
	// Operations this process runs right now are not "left unfinished".
	for _, o := range ops {
		e.t.Errorf("operation %s (%s of %s) is unfinished at step %s", o.ID, o.Kind, o.VMID, o.Step)
	}
	for id, owner := range ips {
		if owner != id {
			e.t.Errorf("%s is live but its address is held by %q", id, owner)
		}
	}
	disk, _ := e.pool.VMs(ctx)
	for _, id := range disk {
		if _, ok := rows[id]; !ok {
			e.t.Errorf("orphan subvolume vms/%s: no VM row", id)
		}
	}
	for id, bks := range rows {
		has, snaps := e.poolHas(id)
		if !has {
			e.t.Errorf("VM %s has a row but no subvolume", id)
		}
		slices.Sort(bks)
		if !slices.Equal(bks, snaps) {
			e.t.Errorf("VM %s: backup rows %v, snapshots %v", id, bks, snaps)
		}
	}
	withBackups, _ := e.pool.BackupVMs(ctx)
	for _, id := range withBackups {
		if _, ok := rows[id]; !ok {
			if _, snaps := e.poolHas(id); len(snaps) > 0 {
				e.t.Errorf("orphan backups of %s: %v", id, snaps)
			}
		}
	}
}

// wantCode fails unless err wraps the category named code.
func wantCode(t testing.TB, err error, code string) {
	t.Helper()
	if got := model.Code(err); got != code {
		t.Fatalf("error %v: category %q, want %q", err, got, code)
	}
}

// eventsWhere returns the events that keep accepts, oldest first.
func (e *env) eventsWhere(keep func(model.Event) bool) []model.Event {
	e.t.Helper()
	evs, err := e.a.Events(context.Background(), 0, model.MaxListLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	return slices.DeleteFunc(evs, func(ev model.Event) bool { return !keep(ev) })
}

// eventsOfType returns the events of typ, oldest first.
func (e *env) eventsOfType(typ string) []model.Event {
	e.t.Helper()
	return e.eventsWhere(func(ev model.Event) bool { return ev.Type == typ })
}

// eventsAbout returns the events about object, oldest first.
func (e *env) eventsAbout(object string) []model.Event {
	e.t.Helper()
	return e.eventsWhere(func(ev model.Event) bool { return ev.Object == object })
}
