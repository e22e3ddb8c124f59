package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tmuxPane is a tmux server of a test's own (-S: its own socket, never the
// user's) running one shell line in a pane of a fixed size: what a person
// at a terminal sees, read with capture-pane.
type tmuxPane struct {
	t      *testing.T
	tmux   string
	sock   string
	status string // the file the line's exit status goes to
}

// newTmuxPane runs line (a shell command) in a width×height pane; when it
// ends, "EXIT=<its status>" goes to the pane's status file, read by
// waitExit. It skips the test when tmux is missing.
func newTmuxPane(t *testing.T, width, height int, line string) *tmuxPane {
	t.Helper()
	tmux, err := exec.LookPath("tmux")
	if err != nil {
		t.Skip("needs tmux (apt-get install tmux)")
	}
	dir := t.TempDir()
	term := &tmuxPane{t: t, tmux: tmux, sock: filepath.Join(dir, "tmux.sock"), status: filepath.Join(dir, "status")}
	term.run("new-session", "-d", "-x", strconv.Itoa(width), "-y", strconv.Itoa(height), "sh", "-c", line+"; echo EXIT=$? > "+term.status+"; sleep 60")
	t.Cleanup(func() { _ = exec.Command(tmux, "-S", term.sock, "kill-server").Run() })
	return term
}

// run runs a tmux command on the pane's server and returns its output.
func (term *tmuxPane) run(args ...string) string {
	term.t.Helper()
	out, err := exec.Command(term.tmux, append([]string{"-S", term.sock}, args...)...).CombinedOutput()
	if err != nil {
		term.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// keys types into the pane (tmux send-keys arguments).
func (term *tmuxPane) keys(args ...string) {
	term.t.Helper()
	term.run(append([]string{"send-keys"}, args...)...)
}

// pane returns what the pane shows.
func (term *tmuxPane) pane() string { term.t.Helper(); return term.run("capture-pane", "-p") }

// waitLine waits (up to a minute) until a line of the pane, trimmed, is
// one match accepts; what names it in the failure.
func (term *tmuxPane) waitLine(match func(line string) bool, what string) {
	term.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		pane := term.pane()
		for _, l := range strings.Split(pane, "\n") {
			if match(strings.TrimSpace(l)) {
				return
			}
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("no %s in the pane:\n%s", what, pane)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitText waits until a line of the pane is want.
func (term *tmuxPane) waitText(want string) {
	term.t.Helper()
	term.waitLine(func(l string) bool { return l == want }, "line "+want)
}

// waitExit waits (up to limit) for the shell line to end and returns
// "EXIT=<status>".
func (term *tmuxPane) waitExit(limit time.Duration) string {
	term.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if b, err := os.ReadFile(term.status); err == nil && strings.TrimSpace(string(b)) != "" {
			return strings.TrimSpace(string(b))
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("the command in the tmuxPane did not end within %s:\n%s", limit, term.pane())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
