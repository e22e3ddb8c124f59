package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestCLIExecStream runs `vm exec` against a real guest: output arrives as
// the command prints it, stdin is forwarded, a timeout kill names its
// limit, and Ctrl-C of the CLI ends the command in the guest.
func TestCLIExecStream(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "ex", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "ex-1")

	t.Run("lines arrive as printed", func(t *testing.T) {
		cmd := d.cli("vm", "exec", vm.ID, "--", "sh", "-c", "for i in 1 2 3; do echo $i; sleep 1; done")
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(out)
		var lines []string
		var at []time.Duration
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				break
			}
			lines = append(lines, l)
			at = append(at, time.Since(start))
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("vm exec: %v", err)
		}
		total := time.Since(start)
		t.Logf("lines at %v; the command ended after %s", at, total.Round(time.Millisecond))
		if strings.Join(lines, "") != "1\n2\n3\n" {
			t.Fatalf("stdout %q", lines)
		}
		if total-at[0] < 1500*time.Millisecond {
			t.Fatalf("the first line came %s before the end: not streamed", (total - at[0]).Round(time.Millisecond))
		}
	})

	t.Run("stdin is forwarded", func(t *testing.T) {
		cmd := d.cli("vm", "exec", vm.ID, "-i", "--", "sh", "-c", "cat; echo done >&2")
		cmd.Stdin = strings.NewReader("hello from stdin\n")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil || out.String() != "hello from stdin\n" || errb.String() != "done\n" {
			t.Fatalf("vm exec -i cat: %v, stdout %q, stderr %q", err, out.String(), errb.String())
		}
		// Interactive: a line comes back before stdin ends.
		cmd = d.cli("vm", "exec", vm.ID, "-i", "--", "cat")
		in, _ := cmd.StdinPipe()
		outp, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(outp)
		for _, w := range []string{"one\n", "two\n"} {
			io.WriteString(in, w)
			got := make(chan string, 1)
			go func() { l, _ := br.ReadString('\n'); got <- l }()
			select {
			case l := <-got:
				if l != w {
					t.Fatalf("echoed %q, want %q", l, w)
				}
			case <-time.After(20 * time.Second):
				t.Fatalf("%q did not come back while stdin stayed open", w)
			}
		}
		in.Close()
		if err := cmd.Wait(); err != nil {
			t.Fatalf("cat after stdin closed: %v", err)
		}
	})

	t.Run("a timeout kill names the limit", func(t *testing.T) {
		start := time.Now()
		r := d.sj(t, "vm", "exec", vm.ID, "--timeout", "2s", "--", "sleep", "30")
		t.Logf("took %s", time.Since(start).Round(time.Millisecond))
		if r.code != 128+9 || !strings.Contains(r.stderr, "killed after --timeout 2 s; use a longer --timeout (up to 10m)") {
			t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
		}
		r = d.sj(t, "vm", "exec", vm.ID, "--timeout", "11m", "--", "true")
		if r.code != exitUsage || !strings.Contains(r.stderr, "up to 10m") {
			t.Fatalf("--timeout 11m: exit %d, stderr %q", r.code, r.stderr)
		}
	})

	t.Run("Ctrl-C ends the guest command", func(t *testing.T) {
		cmd := d.cli("vm", "exec", vm.ID, "--", "sh", "-c", "echo started; exec sleep 25")
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		if l, _ := bufio.NewReader(out).ReadString('\n'); l != "started\n" {
			t.Fatalf("first line %q", l)
		}
		if got := d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", guestComms); !strings.Contains(got, "sleep") {
			t.Fatalf("sleep 25 not running in the guest before Ctrl-C:\n%s", got)
		}
		start := time.Now()
		_ = cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 130 {
			t.Fatalf("vm exec after SIGINT: %v, want exit 130", err)
		}
		t.Logf("the CLI exited %s after SIGINT", time.Since(start).Round(time.Millisecond))
		got := d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", guestComms)
		t.Logf("the check ran %s after SIGINT", time.Since(start).Round(time.Millisecond))
		if strings.Contains(got, "sleep") {
			t.Fatalf("sleep 25 still runs in the guest after Ctrl-C:\n%s", got)
		}
	})
}

// guestComms lists the guest's processes by name (busybox has no ps by
// default in the image).
const guestComms = `for p in /proc/[0-9]*; do cat $p/comm 2>/dev/null; done`

// cli returns the CLI command against d, not started.
func (d *daemon) cli(args ...string) *exec.Cmd {
	cmd := exec.Command(filepath.Join(d.bin, "superjolt"), args...)
	cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+d.socket)
	return cmd
}

// TestCLIExecTTY runs `superjolt vm exec -it VM -- sh` in tmux against a
// real guest: keys typed reach the shell, its output the pane, the window
// size follows tmux's, and the CLI exits with the shell's status.
func TestCLIExecTTY(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "tty", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "tty-1")

	term := newTmuxPane(t, 100, 30, "SUPERJOLT_SOCKET="+d.socket+" TERM=xterm "+filepath.Join(d.bin, "superjolt")+" vm exec -it "+vm.ID+" -- sh")
	// Type at the prompt, as a person would: on a loaded machine, keys
	// typed before the guest's shell was up were echoed by the local
	// terminal before the shell's banner and never ran.
	term.waitText("/ #")
	start := time.Now()
	term.keys("echo hi-$((1+1))", "Enter")
	term.waitText("hi-2")
	t.Logf("hi-2 shown %s after the keys", time.Since(start).Round(time.Millisecond))

	term.keys("stty size", "Enter")
	term.waitText("30 100")
	term.run("resize-window", "-x", "120", "-y", "40")
	time.Sleep(500 * time.Millisecond)
	term.keys("stty size", "Enter")
	term.waitText("40 120")

	term.keys("exit 3", "Enter")
	if got := term.waitExit(30 * time.Second); got != "EXIT=3" {
		t.Fatalf("superjolt vm exec -it after exit 3: %s\n%s", got, term.pane())
	}
}
