package tui

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
)

// The console's cost at scale: drawing over 1,000 and 10,000 VMs (the goal
// is a View under 16 ms for 1,000 VMs, building only the visible rows),
// the time from an event on the stream to its row on screen, and the heap
// the console holds for 10,000 VMs.
//
//	go test -run '^$' -bench . -benchmem ./tui/

// benchW×benchH is the terminal the benchmarks draw in.
const benchW, benchH = 120, 40

// bigFixture is the fixture with n VMs spread over 20 accounts, 2 backups
// and a usage sample each. It answers VMUsage with a sample for every VM
// (the plain fixture knows only two).
type bigFixture struct {
	*fixture
	usage []model.VMUsage
}

func (f *bigFixture) VMUsage(context.Context) ([]model.VMUsage, error) {
	return slices.Clone(f.usage), nil
}

// bigVMID is the id of the i-th VM of a bigFixture: in id order, so that
// vm 0 is the first row of the VMs tab (sorted by id by default).
func bigVMID(i int) string { return fmt.Sprintf("vm-%06d", i) }

func newBigFixture(n int) *bigFixture {
	f := &bigFixture{fixture: newFixture()}
	ago := func(d time.Duration) time.Time { return fixtureNow.Add(-d) }
	ent := model.DefaultEntitlements()
	const naccounts = 20
	f.accounts = make([]model.Account, naccounts)
	for i := range f.accounts {
		f.accounts[i] = model.Account{ID: fmt.Sprintf("ac-%06d", i), Name: fmt.Sprintf("customer-%02d", i),
			Balance: model.Micro(1_000_000 * (i + 1)), Entitlements: ent, CreatedAt: ago(90 * 24 * time.Hour)}
	}
	tiers := []string{"nano", "small", "medium", "large"}
	f.vms = make([]model.VM, n)
	f.backups = make([]model.Backup, 0, 2*n)
	f.usage = make([]model.VMUsage, 0, n)
	f.ops = nil
	for i := range f.vms {
		id := bigVMID(i)
		vm := model.VM{ID: id, AccountID: f.accounts[i%naccounts].ID, Name: fmt.Sprintf("web-%d", i), Tier: tiers[i%len(tiers)],
			Image: "builtin", State: model.StateRunning, BootID: fmt.Sprintf("boot-%06d", i),
			IP:        netip.AddrFrom4([4]byte{10, 77, byte(i >> 8), byte(i)}),
			Ports:     []model.Port{{Proto: "tcp", Number: 8080}},
			CreatedAt: ago(time.Duration(i%40+1) * 24 * time.Hour), NextBackupAt: fixtureNow.Add(time.Duration(i%24+1) * time.Hour), WantRunning: true}
		switch {
		case i%50 == 49:
			vm.State, vm.IP, vm.LastIP = model.StateGraveyard, netip.Addr{}, vm.IP
			vm.DestroyedAt, vm.ReclaimAt = ago(time.Hour), fixtureNow.Add(23*time.Hour)
		case i%10 == 9:
			vm.State, vm.IP, vm.LastIP = model.StateStopped, netip.Addr{}, vm.IP
			vm.StoppedAt, vm.StopReason, vm.WantRunning = ago(2*time.Hour), model.StopReason("requested"), false
		}
		f.vms[i] = vm
		for j := range 2 {
			f.backups = append(f.backups, model.Backup{ID: fmt.Sprintf("bk-%08d%02d", i, j), VMID: id, Kind: model.Scheduled,
				TakenAt: ago(time.Duration(24*j+i%24+1) * time.Hour), SizeBytes: int64(i%100+1) << 20, Consistency: model.Frozen})
		}
		f.usage = append(f.usage, model.VMUsage{VMID: id, MemoryBytes: int64(i%1024+64) << 20, CPUPercent: float64(i % 100)})
	}
	return f
}

// serve starts the real API server over f (so that VMUsage is the one of
// bigFixture) and returns a client of it.
func (f *bigFixture) serve(tb testing.TB) *api.Client {
	sock := filepath.Join(tb.TempDir(), "sj.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: server.New(f, server.Options{Logger: slog.New(slog.DiscardHandler)})}
	go srv.Serve(ln)
	tb.Cleanup(func() { srv.Close() })
	c := api.NewClient(sock)
	tb.Cleanup(func() { c.Close() })
	return c
}

// loadModel returns a console over c in benchW×benchH, loaded with the
// snapshot as Init would, and the command its Update returned: the wait
// for the first events of its subscription.
func loadModel(tb testing.TB, c *api.Client) (*Model, tea.Cmd) {
	tb.Helper()
	m := New(c, Options{Host: "box1", Location: time.UTC, NoClock: true})
	m.Update(tea.WindowSizeMsg{Width: benchW, Height: benchH})
	msg := m.loadSnapshot()()
	if sm, ok := msg.(snapshotMsg); !ok || sm.err != nil {
		tb.Fatalf("snapshot: %#v", msg)
	}
	_, next := m.Update(msg)
	if !m.loaded || m.stream == nil || next == nil {
		tb.Fatal("the snapshot did not load")
	}
	return m, next
}

// runner runs commands as a tea.Program does: each in a goroutine of its
// own, and each command of a tea.BatchMsg in one of its own, their
// messages to msgs (until done is closed).
type runner struct {
	msgs chan tea.Msg
	done chan struct{}
}

func newRunner(tb testing.TB) *runner {
	r := &runner{msgs: make(chan tea.Msg), done: make(chan struct{})}
	tb.Cleanup(func() { close(r.done) })
	return r
}

func (r *runner) run(cmd tea.Cmd) {
	if cmd == nil {
		return
	}
	go func() {
		msg := cmd()
		if batch, ok := msg.(tea.BatchMsg); ok {
			for _, c := range batch {
				r.run(c)
			}
			return
		}
		select {
		case r.msgs <- msg:
		case <-r.done:
		}
	}()
}

// rowOf returns the screen's line that shows VM id ("" if none). Ids are
// of one length, and the cursor's row starts ">id": match "id ".
func rowOf(screen, id string) string {
	for l := range strings.Lines(screen) {
		if strings.Contains(l, id+" ") {
			return l
		}
	}
	return ""
}

var benchSizes = []int{1000, 10000}

// BenchmarkView draws the VMs tab: steady (the row order is cached) and
// after a change (one VM updated, as a fetched event does, so the order
// is rebuilt: filter and sort of every row).
func BenchmarkView(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("vms=%d", n), func(b *testing.B) {
			f := newBigFixture(n)
			m, _ := loadModel(b, f.serve(b))
			b.Cleanup(m.Close)
			if got := len(m.d.vms); got != n {
				b.Fatalf("loaded %d VMs, want %d", got, n)
			}
			if s := m.View(); rowOf(s, bigVMID(0)) == "" {
				b.Fatalf("the first VM is not on screen:\n%s", s)
			}
			b.Run("steady", func(b *testing.B) {
				m.View()
				for b.Loop() {
					m.View()
				}
			})
			b.Run("changed", func(b *testing.B) {
				vm := m.d.vms[bigVMID(0)]
				states := [2]model.VMState{model.StateStopped, model.StateRunning}
				i := 0
				for b.Loop() {
					vm.State = states[i%2]
					i++
					m.d.putVM(vm)
					m.View()
				}
			})
		})
	}
}

// BenchmarkEventToRow times an event on the stream to its row on screen:
// the VM's state changes in the fixture, the fixture emits its event, the
// console takes it from its subscription, fetches the VM, applies it and
// draws; the VM is the first row. Commands run as in a tea.Program (each
// in a goroutine, the subscription's wait included).
//
// draw=each draws after every Update, as tea.Program does: after the
// events (which change the data too, so the rows' order is rebuilt) and
// after the fetched VM. draw=end draws only once the VM is applied.
func BenchmarkEventToRow(b *testing.B) {
	for _, n := range benchSizes {
		for _, each := range []bool{true, false} {
			name := fmt.Sprintf("vms=%d/draw=end", n)
			if each {
				name = fmt.Sprintf("vms=%d/draw=each", n)
			}
			b.Run(name, func(b *testing.B) { benchEventToRow(b, n, each) })
		}
	}
}

func benchEventToRow(b *testing.B, n int, drawEach bool) {
	f := newBigFixture(n)
	m, next := loadModel(b, f.serve(b))
	b.Cleanup(m.Close)
	r := newRunner(b)
	r.run(next)
	id, acct := bigVMID(0), f.vms[0].AccountID
	if rowOf(m.View(), id) == "" {
		b.Fatal("the first VM is not on screen")
	}
	states := [2]model.VMState{model.StateStopped, model.StateRunning}
	i := 0
	for b.Loop() {
		st := states[i%2]
		i++
		f.mu.Lock()
		f.vms[0].State = st
		f.mu.Unlock()
		f.emit("vm."+string(st), id, acct, id+" "+string(st))
		for shown := false; !shown; {
			var msg tea.Msg
			select {
			case msg = <-r.msgs:
			case <-time.After(10 * time.Second):
				b.Fatalf("%s's row did not change to %s in 10s", id, st)
			}
			switch msg.(type) {
			case eventsMsg, fetchedMsg:
			default:
				b.Fatalf("unexpected message %#v", msg)
			}
			_, cmd := m.Update(msg)
			r.run(cmd)
			if _, fetched := msg.(fetchedMsg); fetched || drawEach {
				shown = strings.Contains(rowOf(m.View(), id), string(st))
			}
		}
	}
	b.StopTimer()
	if !m.Settled() {
		b.Errorf("reads still under way after the last row changed")
	}
}

// BenchmarkMemory10000 reports the heap the console holds once loaded with
// 10,000 VMs (2 backups and a usage sample each) and drawn once, over what
// was in use before (the fixture's own data included in both), averaged
// over the runs: MiB-heap is HeapInuse, MiB-live HeapAlloc. Its ns/op is
// the time of loading the snapshot through the API and drawing once, and
// its B/op and allocs/op count the server's side too (same process).
func BenchmarkMemory10000(b *testing.B) {
	const n = 10000
	f := newBigFixture(n)
	c := f.serve(b)
	var before, after runtime.MemStats
	var inuse, live float64
	// Two collections: what sync.Pools hold (the server's JSON buffers of
	// the 10,000 VMs) survives the first one.
	gc := func() { runtime.GC(); runtime.GC() }
	runs := 0
	for b.Loop() {
		b.StopTimer()
		gc()
		runtime.ReadMemStats(&before)
		b.StartTimer()
		m, _ := loadModel(b, c)
		m.View()
		b.StopTimer()
		gc()
		runtime.ReadMemStats(&after)
		inuse += float64(int64(after.HeapInuse) - int64(before.HeapInuse))
		live += float64(int64(after.HeapAlloc) - int64(before.HeapAlloc))
		runs++
		if len(m.d.vms) != n || len(m.d.usage) != n || len(m.d.backups) != n {
			b.Fatalf("loaded %d VMs, %d usages, backups of %d VMs; want %d each", len(m.d.vms), len(m.d.usage), len(m.d.backups), n)
		}
		runtime.KeepAlive(m)
		m.Close()
		b.StartTimer()
	}
	b.ReportMetric(inuse/float64(runs)/(1<<20), "MiB-heap")
	b.ReportMetric(live/float64(runs)/(1<<20), "MiB-live")
}

// TestViewBuildsOnlyVisibleRows checks, at 10,000 VMs, that drawing the VMs
// tab builds the visible rows only, and that a redraw without a change
// does not sort again.
func TestViewBuildsOnlyVisibleRows(t *testing.T) {
	const n = 10000
	f := newBigFixture(n)
	m, _ := loadModel(t, f.serve(t))
	defer m.Close()
	v := m.tabs[0].(*vmsView)
	var built, keyed int
	cells, sortKey := v.cells, v.sortKey
	v.cells = func(m *Model, id string) []string { built++; return cells(m, id) }
	v.sortKey = func(m *Model, id string, col int) string { keyed++; return sortKey(m, id, col) }

	// The body is the screen less the header, tabs, note and footer; the
	// table's header takes one line of it.
	visible := benchH - 4 - 1
	s := m.View()
	if built != visible {
		t.Errorf("the first View built %d rows of %d VMs, want the %d visible", built, n, visible)
	}
	if keyed != n {
		t.Errorf("the first View keyed %d rows for sorting, want %d", keyed, n)
	}
	if rowOf(s, bigVMID(0)) == "" || rowOf(s, bigVMID(visible-1)) == "" || rowOf(s, bigVMID(visible)) != "" {
		t.Errorf("the screen does not show VMs 0 to %d:\n%s", visible-1, s)
	}

	built, keyed = 0, 0
	m.View()
	if built != visible || keyed != 0 {
		t.Errorf("a View without a change built %d rows and keyed %d, want %d and 0", built, keyed, visible)
	}

	built, keyed = 0, 0
	vm := m.d.vms[bigVMID(0)]
	vm.State = model.StateStopped
	m.d.putVM(vm)
	if row := rowOf(m.View(), vm.ID); !strings.Contains(row, "stopped") {
		t.Errorf("after a change the row of %s is %q", vm.ID, row)
	}
	if built != visible || keyed != n {
		t.Errorf("a View after a change built %d rows and keyed %d, want %d and %d", built, keyed, visible, n)
	}
}
