package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestCLIConsole runs `superjolt vm console VM` in tmux against a real
// guest: the banner names the detach key, keys typed reach the guest's
// serial shell and its output the pane, a second client is refused while
// the first is attached, Ctrl-] detaches with exit 0 and the terminal as
// it was, and the console of a stopped VM is refused.
func TestCLIConsole(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "con", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "con-1")

	dir := t.TempDir()
	before, after := filepath.Join(dir, "before"), filepath.Join(dir, "after")
	term := newTmuxPane(t, 100, 30, "stty -g > "+before+"; SUPERJOLT_SOCKET="+d.socket+" TERM=xterm "+filepath.Join(d.bin, "superjolt")+
		" vm console con-1; s=$?; stty -g > "+after+"; (exit $s)")
	banner := "Connected to con-1 serial console; detach with Ctrl-]"
	term.waitLine(func(l string) bool { return l == banner }, "line "+banner)

	start := time.Now()
	term.keys("echo hi-$((2+2))", "Enter")
	term.waitLine(func(l string) bool { return l == "hi-4" }, "line hi-4")
	t.Logf("hi-4 shown %s after the keys; the pane:\n%s", time.Since(start).Round(time.Millisecond), strings.TrimRight(term.pane(), "\n"))

	// A second client while the first is attached: refused, naming the first.
	r := d.sj(t, "vm", "console", vm.ID)
	t.Logf("second attach: exit %d, stderr %q", r.code, r.stderr)
	if r.code != exitConflict || !strings.Contains(r.stderr, "console of "+vm.ID+" is in use") || !strings.Contains(r.stderr, ", pid ") {
		t.Fatalf("second attach: exit %d, stderr %q; want a conflict naming the first client", r.code, r.stderr)
	}

	term.keys("-H", "1d") // Ctrl-]
	if got := term.waitExit(30 * time.Second); got != "EXIT=0" {
		t.Fatalf("superjolt vm console after Ctrl-]: %s\n%s", got, term.pane())
	}
	term.waitLine(func(l string) bool { return l == "Detached from con-1 serial console." }, "detach message")
	b1, _ := os.ReadFile(before)
	b2, _ := os.ReadFile(after)
	if len(b1) == 0 || string(b1) != string(b2) {
		t.Fatalf("terminal not restored: stty -g before %q, after %q", b1, b2)
	}

	// Once detached, the console can be attached again (and refuses nobody).
	r = d.sj(t, "vm", "exec", vm.ID, "--", "true")
	if r.code != 0 {
		t.Fatalf("exec after the console: exit %d, %s", r.code, r.stderr)
	}

	d.ok(t, "vm", "stop", vm.ID)
	r = d.sj(t, "vm", "console", vm.ID)
	t.Logf("console of a stopped VM: exit %d, stderr %q", r.code, r.stderr)
	if r.code != exitConflict || !strings.Contains(r.stderr, "is stopped; start it with `superjolt vm start") {
		t.Fatalf("console of a stopped VM: exit %d, stderr %q", r.code, r.stderr)
	}
}
