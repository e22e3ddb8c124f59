package main

import (
	"os"
	"os/exec"
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
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("needs tmux (apt-get install tmux)")
	}
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "con", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "con-1")

	dir := t.TempDir()
	// A tmux server of the test's own (-S: its own socket), never the user's.
	sock := filepath.Join(dir, "tmux.sock")
	status, before, after := filepath.Join(dir, "status"), filepath.Join(dir, "before"), filepath.Join(dir, "after")
	tm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(tmux, append([]string{"-S", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	shell := "stty -g > " + before + "; SUPERJOLT_SOCKET=" + d.socket + " TERM=xterm " + filepath.Join(d.bin, "superjolt") +
		" vm console con-1; echo EXIT=$? > " + status + "; stty -g > " + after + "; sleep 60"
	tm("new-session", "-d", "-x", "100", "-y", "30", "sh", "-c", shell)
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", sock, "kill-server").Run() })

	waitPane := func(match func(line string) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			pane := tm("capture-pane", "-p")
			for _, l := range strings.Split(pane, "\n") {
				if match(strings.TrimSpace(l)) {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s in the pane:\n%s", what, pane)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	banner := "Connected to con-1 serial console; detach with Ctrl-]"
	waitPane(func(l string) bool { return l == banner }, "line "+banner)

	start := time.Now()
	tm("send-keys", "echo hi-$((2+2))", "Enter")
	waitPane(func(l string) bool { return l == "hi-4" }, "line hi-4")
	t.Logf("hi-4 shown %s after the keys; the pane:\n%s", time.Since(start).Round(time.Millisecond), strings.TrimRight(tm("capture-pane", "-p"), "\n"))

	// A second client while the first is attached: refused, naming the first.
	r := d.sj(t, "vm", "console", vm.ID)
	t.Logf("second attach: exit %d, stderr %q", r.code, r.stderr)
	if r.code != exitConflict || !strings.Contains(r.stderr, "console of "+vm.ID+" is in use") || !strings.Contains(r.stderr, ", pid ") {
		t.Fatalf("second attach: exit %d, stderr %q; want a conflict naming the first client", r.code, r.stderr)
	}

	tm("send-keys", "-H", "1d") // Ctrl-]
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, _ := os.ReadFile(status)
		if s := strings.TrimSpace(string(b)); s != "" {
			if s != "EXIT=0" {
				t.Fatalf("superjolt vm console after Ctrl-]: %s\n%s", s, tm("capture-pane", "-p"))
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("superjolt did not exit after Ctrl-]:\n%s", tm("capture-pane", "-p"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	waitPane(func(l string) bool { return l == "Detached from con-1 serial console." }, "detach message")
	time.Sleep(200 * time.Millisecond) // stty -g after the exit
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
