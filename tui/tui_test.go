package tui

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"

	"github.com/superjolt/superjolt/appliance/model"
)

func init() {
	// One colour profile everywhere: golden files hold plain text, and the
	// cursor and focus marks must be visible without colour.
	lipgloss.SetColorProfile(termenv.Ascii)
}

// sizes are the terminal sizes every view is checked at.
var sizes = []struct{ w, h int }{{80, 24}, {120, 40}}

// console starts the console over f in a teatest program of w×h and waits
// until it shows the fixture's VMs.
type console struct {
	t  *testing.T
	f  *fixture
	tm *teatest.TestModel
	m  *Model
}

func startConsole(t *testing.T, f *fixture, w, h int, opts Options) *console {
	t.Helper()
	opts.Host, opts.Location, opts.NoClock = "box1", time.UTC, true
	m := New(f.serve(t), opts)
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(w, h))
	c := &console{t: t, f: f, tm: tm, m: m}
	c.waitFor("vm-7k2p9q")
	return c
}

// waitFor waits until the screen shows s.
func (c *console) waitFor(s string) {
	c.t.Helper()
	teatest.WaitFor(c.t, c.tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte(s)) },
		teatest.WithDuration(10*time.Second), teatest.WithCheckInterval(10*time.Millisecond))
}

// keys types each key: runes as typed, or named keys in angle brackets
// ("<enter>", "<tab>", "<esc>", "<down>"); "@text" waits until the screen
// shows text.
func (c *console) keys(ks ...string) {
	for _, k := range ks {
		if w, ok := strings.CutPrefix(k, "@"); ok {
			c.waitFor(w)
			continue
		}
		switch k {
		case "<enter>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyEnter})
		case "<tab>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyTab})
		case "<shift+tab>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyShiftTab})
		case "<esc>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyEsc})
		case "<down>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyDown})
		case "<up>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyUp})
		case "<backspace>":
			c.tm.Send(tea.KeyMsg{Type: tea.KeyBackspace})
		case " ":
			c.tm.Send(tea.KeyMsg{Type: tea.KeySpace, Runes: []rune{' '}})
		default:
			for _, r := range k {
				c.tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
			}
		}
	}
}

// screen waits until the console has the answers to what it asked,
// quits, and returns the last screen.
func (c *console) screen() string {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !c.m.Settled() {
		if time.Now().After(deadline) {
			c.t.Fatal("the console still waits for superjoltd after 10 s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := c.tm.Quit(); err != nil {
		c.t.Fatal(err)
	}
	m := c.tm.FinalModel(c.t, teatest.WithFinalTimeout(10*time.Second)).(*Model)
	m.Close()
	return m.View()
}

// golden compares the last screen with testdata/<test>.golden
// (go test ./tui -update rewrites them).
func (c *console) golden() string {
	c.t.Helper()
	s := c.screen()
	golden.RequireEqual(c.t, []byte(s+"\n"))
	return s
}

// eachSize runs fn at every size as a subtest named WxH.
func eachSize(t *testing.T, fn func(t *testing.T, w, h int)) {
	for _, s := range sizes {
		t.Run(fmt.Sprintf("%dx%d", s.w, s.h), func(t *testing.T) { fn(t, s.w, s.h) })
	}
}

func TestViews(t *testing.T) {
	views := []struct {
		name string
		keys []string
		want string // on screen once the view is drawn
	}{
		{"vms", nil, ""},
		{"vm", []string{"<enter>"}, "CONSISTENCY"},
		{"accounts", []string{"2"}, "RUNWAY"},
		{"graveyard", []string{"3"}, "RECLAIMED IN"},
		{"events", []string{"4"}, "following the stream"},
		{"events_paused", []string{"4", " "}, "paused"},
		{"ops", []string{"5"}, "PROGRESS"},
		{"help", []string{"?"}, "Keys of"},
		{"filter", []string{"/", "alice", "<enter>"}, "/alice"},
		{"sorted", []string{"o", "O"}, "NAME↓"},
	}
	for _, v := range views {
		t.Run(v.name, func(t *testing.T) {
			eachSize(t, func(t *testing.T, w, h int) {
				c := startConsole(t, newFixture(), w, h, Options{})
				c.keys(v.keys...)
				if v.want != "" {
					c.waitFor(v.want)
				}
				c.golden()
			})
		})
	}
}

func TestReadOnlyHasNoActions(t *testing.T) {
	c := startConsole(t, newFixture(), 120, 40, Options{ReadOnly: true})
	c.keys("b", "d", "r", "s", "c", "?")
	c.waitFor("read-only")
	s := c.golden()
	for _, word := range []string{"back up now", "destroy", "restore", "create VM"} {
		if strings.Contains(s, word) {
			t.Errorf("read-only help lists %q:\n%s", word, s)
		}
	}
	if calls := c.f.called(); len(calls) != 0 {
		t.Errorf("read-only console sent %v", calls)
	}
}

// Actions: each flow ends in the call the daemon received (or none), and
// what the console shows then.
func TestActions(t *testing.T) {
	flows := []struct {
		name string
		keys []string
		want string   // on screen at the end
		sent []string // what the daemon received
	}{
		{"backup", []string{"b"}, "backup of vm-7k2p9q: running", []string{"backup vm-7k2p9q"}},
		{"stop", []string{"s"}, "stop of vm-7k2p9q: running", []string{"stop vm-7k2p9q"}},
		{"start", []string{"/", "ci", "<enter>", "s"}, "start of vm-q1w2e3: running", []string{"start vm-q1w2e3"}},
		// Destroy starts on Cancel: Enter right away sends nothing.
		{"destroy_cancel", []string{"d", "@Destroy vm-", "<enter>"}, "LAST BACKUP", nil},
		{"destroy_dialog", []string{"d"}, "graveyard", nil},
		{"destroy_wrong_name", []string{"d", "<tab>", "web-2", "<enter>"}, "type web-1 exactly", nil},
		{"destroy", []string{"d", "<tab>", "web-1", "<enter>", "<enter>"}, "destroy of vm-7k2p9q: running", []string{"destroy vm-7k2p9q"}},
		{"resume", []string{"3", "u"}, "resume of", []string{"resume vm-z9y8x7"}},
		{"restore_picker", []string{"r"}, "yesterday", nil},
		{"restore_yesterday", []string{"r", "<enter>"}, "Restore vm-7k2p9q?", []string{"resolve vm-7k2p9q yesterday"}},
		{"restore", []string{"r", "<down>", "<enter>", "<tab>", "web-1", "<enter>", "<enter>"}, "restore of vm-7k2p9q from bk-web0000003: running",
			[]string{"restore vm-7k2p9q from bk-web0000003"}},
		{"delete_scheduled", []string{"<enter>", "<down>", "x"}, "scheduled backup", nil},
		{"delete_backup", []string{"<enter>", "x", "<tab>", "web-1", "<enter>", "<enter>"}, "delete of bk-web0000003: running", []string{"delete bk-web0000003"}},
		{"create", []string{"c", "alice", "<tab>", "<tab>", "api-1", "<tab>", "<tab>", "<tab>", "<enter>"}, "create of api-1: running",
			[]string{"create account=ac-alice1 tier=nano name=api-1 image=builtin"}},
		{"topup", []string{"2", "t", "12.5", "<tab>", "<tab>", "<enter>"}, "top-up of ac-alice1: done", []string{"topup ac-alice1 12.5"}},
		{"port_add", []string{"p", "9090/udp", "<tab>", "<tab>", "<enter>"}, "add port 9090/udp of vm-7k2p9q: done", []string{"port add vm-7k2p9q 9090/udp"}},
		{"port_forward", []string{"p", "8443:443", "<tab>", "<tab>", "<enter>"}, "add port 8443:443/tcp of vm-7k2p9q: done", []string{"port add vm-7k2p9q 8443:443/tcp"}},
		{"port_remove", []string{"P", "<tab>", "<tab>", "<enter>"}, "remove port 8080/tcp of vm-7k2p9q: done", []string{"port remove vm-7k2p9q 8080/tcp"}},
		{"domain_add", []string{"n", "API.example.com.", "<tab>", "<tab>", "<enter>"}, "add domain api.example.com of vm-7k2p9q: done", []string{"domain add vm-7k2p9q api.example.com"}},
		{"domain_remove", []string{"N", "<tab>", "<tab>", "<enter>"}, "remove domain web.example.com of vm-7k2p9q: done", []string{"domain remove vm-7k2p9q web.example.com"}},
		{"cancel_op", []string{"5", "x"}, "cancel of op-restore001", []string{"cancel op-restore001"}},
	}
	for _, fl := range flows {
		t.Run(fl.name, func(t *testing.T) {
			eachSize(t, func(t *testing.T, w, h int) {
				f := newFixture()
				c := startConsole(t, f, w, h, Options{})
				c.keys(fl.keys...)
				c.waitFor(fl.want)
				c.golden()
				if got := f.called(); strings.Join(got, "|") != strings.Join(fl.sent, "|") {
					t.Errorf("daemon received %q, want %q", got, fl.sent)
				}
			})
		})
	}
}

// Bad input in forms: the form says what is allowed, and nothing is sent.
func TestFormsRefuseBadInput(t *testing.T) {
	cases := []struct {
		name string
		keys []string
		want string
	}{
		{"topup_negative", []string{"2", "t", "-5", "<tab>", "<tab>", "<enter>"}, "✗"},
		{"topup_letters", []string{"2", "t", "abc", "<tab>", "<tab>", "<enter>"}, "✗"},
		{"create_name_slash", []string{"c", "alice", "<tab>", "<tab>", "a/b", "<tab>", "<tab>", "<tab>", "<enter>"}, "is not allowed"},
		{"create_no_tier", []string{"c", "alice", "<tab>", "<backspace>", "<backspace>", "<backspace>", "<backspace>", "huge", "<tab>", "<tab>", "<tab>", "<tab>", "<enter>"}, "no tier \"huge\""},
		{"create_no_account", []string{"c", "mallory", "<tab>", "<tab>", "<tab>", "<tab>", "<tab>", "<enter>"}, "no account \"mallory\""},
		{"port_bad", []string{"p", "99999/tcp", "<tab>", "<tab>", "<enter>"}, "✗"},
		{"domain_bad", []string{"n", "not a domain", "<tab>", "<tab>", "<enter>"}, "✗"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			eachSize(t, func(t *testing.T, w, h int) {
				f := newFixture()
				c := startConsole(t, f, w, h, Options{})
				c.keys(tc.keys...)
				c.waitFor(tc.want)
				c.golden()
				if got := f.called(); len(got) != 0 {
					t.Errorf("bad input was sent: %q", got)
				}
			})
		})
	}
}

// The daemon's refusal shows in the dialog that asked, and the console
// goes on.
func TestDaemonErrorShowsInPlace(t *testing.T) {
	f := newFixture()
	f.fail = fmt.Errorf("%w: account ac-alice1 has 0 credits left; top up with `superjolt account topup ac-alice1 CREDITS`", model.ErrInsufficientFunds)
	c := startConsole(t, f, 80, 24, Options{})
	c.keys("c", "alice", "<tab>", "<tab>", "api-1", "<tab>", "<tab>", "<tab>", "<enter>")
	c.waitFor("top up with")
	s := c.golden()
	if !strings.Contains(s, "Create a VM") {
		t.Errorf("the form closed on the daemon's error:\n%s", s)
	}
}

// When superjoltd goes away the console says so, keeps its data (greyed),
// and comes back by itself when superjoltd does, without a key.
func TestUnreachableAndBack(t *testing.T) {
	f := newFixture()
	c := startConsole(t, f, 80, 24, Options{})
	f.down()
	c.waitFor("superjoltd is unreachable")
	if c.m.loaded != true {
		t.Fatal("lost its data")
	}
	f.vms[0].State = model.StateStopped // changed while the console was away
	f.up(t)
	c.waitFor("stopped  ")
	s := c.golden()
	if strings.Contains(s, "UNREACHABLE") || strings.Contains(s, "unreachable") {
		t.Fatalf("still says unreachable after superjoltd came back:\n%s", s)
	}
}

// The unreachable screen itself: the last data, and what is going on.
func TestUnreachableScreen(t *testing.T) {
	f := newFixture()
	c := startConsole(t, f, 80, 24, Options{})
	f.down()
	c.waitFor("cannot reach superjoltd") // a reconnect failed, not only the stream
	s := c.golden()
	for _, want := range []string{"UNREACHABLE, reconnecting", "vm-7k2p9q", "superjoltd is unreachable (unavailable: "} {
		if !strings.Contains(s, want) {
			t.Errorf("unreachable screen lacks %q:\n%s", want, s)
		}
	}
}

// An action's line follows its operation to the end, and what the
// operation did to its VM shows without an event about the VM: a resume
// ends in op.done alone.
func TestActionFollowsItsOperation(t *testing.T) {
	f := newFixture()
	c := startConsole(t, f, 80, 24, Options{})
	c.keys("3", "u", "@resume of vm-z9y8x7: running")
	op := f.called()
	if len(op) != 1 || op[0] != "resume vm-z9y8x7" {
		t.Fatalf("daemon received %q", op)
	}
	f.change("vm-z9y8x7", func(vm *model.VM) {
		vm.State, vm.IP, vm.ArchivedAt, vm.ReclaimAt = model.StateRunning, vm.LastIP, time.Time{}, time.Time{}
	})
	f.finish("op-0000000001")
	c.waitFor("resume of vm-z9y8x7: done")
	s := c.golden()
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(strings.TrimLeft(l, " >"), "vm-z9y8x7") {
			t.Fatalf("the resumed VM is still in the graveyard view:\n%s", s)
		}
	}
	if !strings.Contains(s, "Graveyard(1)") {
		t.Fatalf("the graveyard still counts the resumed VM:\n%s", s)
	}
}

// On a VM's page the cursor stays on the newest backup as new ones come,
// so that b then r restores from the backup just taken.
func TestNewestBackupUnderTheCursor(t *testing.T) {
	f := newFixture()
	c := startConsole(t, f, 120, 40, Options{})
	c.keys("<enter>", "@CONSISTENCY", "b", "@backup of vm-7k2p9q: running")
	f.addBackup(model.Backup{ID: "bk-new0000001", VMID: "vm-7k2p9q", Kind: model.OnDemand, TakenAt: fixtureNow, SizeBytes: 1 << 20, Consistency: model.Frozen})
	f.emit("backup.taken", "bk-new0000001", "ac-alice1", "on_demand backup bk-new0000001 of vm-7k2p9q taken (frozen)")
	c.waitFor("bk-new0000001")
	c.keys("r", "@Restore vm-7k2p9q from")
	s := c.golden()
	if !strings.Contains(s, "> bk-new0000001") {
		t.Fatalf("the restore picker does not start on the backup just taken:\n%s", s)
	}
}

// The clock and the countdowns move by themselves: each tick asks for the
// next.
func TestClockKeepsTicking(t *testing.T) {
	m := New(newFixture().serve(t), Options{})
	defer m.Close()
	if _, cmd := m.Update(clockTickMsg(time.Now())); cmd == nil {
		t.Fatal("a clock tick does not ask for the next one")
	}
}
