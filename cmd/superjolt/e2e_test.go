package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

// These tests build the real binaries and run the CLI against a real
// superjoltd (a loop-backed Btrfs pool in a temporary state directory). The
// VM tests boot real guests under QEMU.

var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// binaries builds superjoltd, superjolt and superjolt-agent once per test
// binary and returns their directory.
func binaries(tb testing.TB) string {
	tb.Helper()
	buildOnce.Do(func() {
		binDir, buildErr = os.MkdirTemp("", "sjbin")
		if buildErr != nil {
			return
		}
		for _, b := range []struct {
			pkg string
			env []string
		}{
			{"github.com/superjolt/superjolt/cmd/superjoltd", nil},
			{"github.com/superjolt/superjolt/cmd/superjolt", nil},
			{"github.com/superjolt/superjolt/cmd/superjolt-agent", []string{"CGO_ENABLED=0"}},
		} {
			cmd := exec.Command("go", "build", "-o", binDir+"/", b.pkg)
			cmd.Env = append(os.Environ(), b.env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = fmt.Errorf("go build %s: %v\n%s", b.pkg, err, out)
				return
			}
		}
	})
	if buildErr != nil {
		tb.Fatal(buildErr)
	}
	return binDir
}

// needVMs skips unless real guests can be built and booted here.
func needVMs(tb testing.TB) {
	tb.Helper()
	btrfstest.Skip(tb)
	if missing := images.Missing(); len(missing) > 0 {
		tb.Skipf("needs what the built-in guest image and QEMU need: missing %v", missing)
	}
}

type daemon struct {
	socket   string
	stateDir string
	bin      string
	args     []string
	env      []string // added to the daemon's environment
	// netns is the named network namespace (ip netns) superjoltd runs in,
	// which outlives its restarts; "" gives each start one of its own.
	netns  string
	cmd    *exec.Cmd
	log    *bytes.Buffer
	exited chan error
}

// startDaemon starts superjoltd with a fresh state directory and a 1 GiB
// pool image and waits until its API answers. It is stopped with SIGTERM
// at the end of the test, which must then exit 0.
func startDaemon(tb testing.TB, extra ...string) *daemon {
	tb.Helper()
	return startDaemonEnv(tb, nil, extra...)
}

// startDaemonEnv is startDaemon with env added to the daemon's environment.
func startDaemonEnv(tb testing.TB, env []string, extra ...string) *daemon {
	tb.Helper()
	return startDaemonIn(tb, "", env, extra...)
}

// startDaemonIn is startDaemonEnv in the named network namespace netns
// ("": one of its own per start).
func startDaemonIn(tb testing.TB, netns string, env []string, extra ...string) *daemon {
	tb.Helper()
	btrfstest.Skip(tb)
	bin := binaries(tb)
	// A short directory: UNIX socket paths are limited to 108 bytes.
	dir, err := os.MkdirTemp("", "sjd")
	if err != nil {
		tb.Fatal(err)
	}
	d := &daemon{socket: filepath.Join(dir, "api.sock"), stateDir: filepath.Join(dir, "state"), bin: bin, env: env, netns: netns, log: &bytes.Buffer{}}
	d.args = []string{"--state-dir", d.stateDir, "--socket", d.socket, "--run-dir", filepath.Join(dir, "run"), "--log-level", "debug"}
	if !slices.Contains(extra, "--pool") {
		d.args = append(d.args, "--pool-size", "1G")
	}
	d.args = append(d.args, extra...)
	tb.Cleanup(func() {
		d.stop(tb)
		d.killVMs(tb)
		if tb.Failed() {
			tb.Logf("superjoltd log:\n%s", d.log)
		}
		os.RemoveAll(dir)
	})
	d.start(tb)
	return d
}

// start starts the daemon process and waits until its API answers.
func (d *daemon) start(tb testing.TB) {
	tb.Helper()
	if d.netns != "" {
		// ip execs superjoltd after entering the namespace: the same process.
		d.cmd = exec.Command("ip", append([]string{"netns", "exec", d.netns, filepath.Join(d.bin, "superjoltd")}, d.args...)...)
	} else {
		d.cmd = exec.Command(filepath.Join(d.bin, "superjoltd"), d.args...)
		ownNetns(d.cmd)
	}
	d.cmd.Stdout, d.cmd.Stderr = d.log, d.log
	d.cmd.Env = append(os.Environ(), d.env...)
	d.exited = make(chan error, 1)
	if err := d.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { d.exited <- d.cmd.Wait() }()
	c := api.NewClient(d.socket)
	defer c.Close()
	deadline := time.Now().Add(5 * time.Minute) // the first start may build the built-in image
	for {
		_, err := c.Tiers(context.Background())
		if err == nil {
			return
		}
		select {
		case err := <-d.exited:
			d.exited <- err
			tb.Fatalf("superjoltd exited while starting: %v\n%s", err, d.log)
		default:
		}
		if time.Now().After(deadline) {
			tb.Fatalf("superjoltd did not answer within 5 minutes: %v\n%s", err, d.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ownNetns starts cmd (a superjoltd) in a network namespace of its own,
// made for it and gone with its last process: its bridge, TAPs, firewall
// and guests' traffic never touch the host's network. The API's UNIX
// socket works across namespaces.
func ownNetns(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Cloneflags |= syscall.CLONE_NEWNET
}

// restart stops the daemon cleanly and starts it again on the same state.
func (d *daemon) restart(tb testing.TB) {
	tb.Helper()
	d.stop(tb)
	d.start(tb)
}

// stop sends SIGTERM and checks that the daemon exits 0 and leaves its
// socket and pool mount behind it.
func (d *daemon) stop(tb testing.TB) {
	tb.Helper()
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-d.exited:
		d.exited <- err
		if err != nil {
			tb.Errorf("superjoltd after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		_ = d.cmd.Process.Kill()
		tb.Errorf("superjoltd did not stop within 2 minutes of SIGTERM")
		return
	}
	if _, err := os.Stat(d.socket); !errors.Is(err, os.ErrNotExist) {
		tb.Errorf("socket %s left behind: %v", d.socket, err)
	}
	// VMs outlive the daemon, on its pool: the pool stays mounted exactly
	// while some run. (A daemon in a named namespace runs under ip netns
	// exec, in a mount namespace of its own, whose mounts are not seen.)
	mounted := d.poolMounted()
	if left := d.runningVMs(); d.netns == "" && len(left) > 0 != mounted {
		tb.Errorf("after a clean stop, VMs %v still run and the pool's mounted is %v: want it mounted exactly while VMs run", left, mounted)
	}
}

func (d *daemon) runDir() string { return filepath.Join(filepath.Dir(d.stateDir), "run") }

func (d *daemon) poolMounted() bool {
	b, _ := os.ReadFile("/proc/self/mountinfo")
	return bytes.Contains(b, []byte(filepath.Join(d.stateDir, "pool")+" "))
}

// runningVMs returns the ids of the VMs whose QEMU runs from the daemon's
// run directory, with their pids.
func (d *daemon) runningVMs() map[string]int {
	left := map[string]int{}
	ents, _ := os.ReadDir(d.runDir())
	for _, e := range ents {
		if pid, ok := vmm.Running(filepath.Join(d.runDir(), e.Name()), e.Name()); ok {
			left[e.Name()] = pid
		}
	}
	return left
}

// killVMs ends the VMs that outlived the daemon at the end of a test, and
// unmounts the pool they kept mounted.
func (d *daemon) killVMs(tb testing.TB) {
	tb.Helper()
	for id := range d.runningVMs() {
		if err := vmm.Kill(filepath.Join(d.runDir(), id), id); err != nil {
			tb.Errorf("end the QEMU of %s: %v", id, err)
		}
	}
	// vmm.Kill waited for each QEMU to exit; the kernel may still be
	// closing what it held on the pool for a moment.
	for wait := time.Now().Add(10 * time.Second); d.poolMounted(); time.Sleep(100 * time.Millisecond) {
		err := unix.Unmount(filepath.Join(d.stateDir, "pool"), 0)
		if err == nil || !errors.Is(err, unix.EBUSY) || time.Now().After(wait) {
			if err != nil {
				tb.Errorf("unmount the pool: %v", err)
			}
			break
		}
	}
}

type result struct {
	stdout, stderr string
	code           int
}

// sj runs the CLI against d with stdin from /dev/null (not a terminal).
func (d *daemon) sj(tb testing.TB, args ...string) result {
	tb.Helper()
	return runCLI(tb, d.bin, d.socket, args...)
}

func runCLI(tb testing.TB, bin, socket string, args ...string) result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "superjolt"), args...)
	cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	code := 0
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		tb.Fatalf("superjolt %v: %v", args, err)
	}
	return result{out.String(), errb.String(), code}
}

// ok runs the CLI and fails the test unless it exits 0.
func (d *daemon) ok(tb testing.TB, args ...string) string {
	tb.Helper()
	r := d.sj(tb, args...)
	if r.code != 0 {
		tb.Fatalf("superjolt %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// okJSON runs the CLI with -o json and decodes its output into a T.
func okJSON[T any](tb testing.TB, d *daemon, args ...string) T {
	tb.Helper()
	out := d.ok(tb, append(args, "-o", "json")...)
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		tb.Fatalf("superjolt %s -o json: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

func TestCLIAccountsAndBadInput(t *testing.T) {
	d := startDaemon(t, "--clock=manual")

	a := okJSON[model.Account](t, d, "account", "create", "alice", "--balance", "25", "--retention", "2")
	if model.ValidateID(model.KindAccount, a.ID) != nil || a.Name != "alice" || a.Balance != 25*model.Credit || a.Entitlements.BackupRetention != 2 {
		t.Fatalf("account create -o json = %+v", a)
	}
	a = okJSON[model.Account](t, d, "account", "topup", a.ID, "2.5")
	if a.Balance != 27_500_000 {
		t.Fatalf("balance after topup 2.5 = %s, want 27.5", a.Balance)
	}
	if out := d.ok(t, "account", "show", a.ID); !strings.Contains(out, "27.5 credits") || !strings.Contains(out, "topup") {
		t.Fatalf("account show does not show the balance and ledger:\n%s", out)
	}
	list := d.ok(t, "account", "list")
	if lines := strings.Split(strings.TrimSpace(list), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], a.ID) || !strings.Contains(lines[1], "27.5") {
		t.Fatalf("account list table:\n%s", list)
	}
	if out := d.ok(t, "__complete", "account", "topup", ""); !strings.Contains(out, a.ID+"\talice") {
		t.Fatalf("completion of account ids:\n%s", out)
	}
	if out := d.ok(t, "__complete", "vm", "create", "--tier", ""); !strings.Contains(out, "nano\t") {
		t.Fatalf("completion of tiers:\n%s", out)
	}
	tiers := okJSON[[]model.Tier](t, d, "tier", "list")
	if len(tiers) != len(model.DefaultTiers()) || tiers[0].Name == "" || tiers[0].RatePerHour <= 0 {
		t.Fatalf("tier list -o json = %+v", tiers)
	}
	if out := d.ok(t, "tier", "list"); !strings.Contains(out, "CREDITS/HOUR") || !strings.Contains(out, "256 MiB") {
		t.Fatalf("tier list table:\n%s", out)
	}
	events := okJSON[[]model.Event](t, d, "events")
	if len(events) == 0 {
		t.Fatal("events -o json: no events after creating an account")
	}

	broke := okJSON[model.Account](t, d, "account", "create", "broke")
	if broke.Balance != 0 {
		t.Fatalf("an account made without --balance has %s", broke.Balance)
	}

	// Bad input: a clear message, the documented exit code, nothing changed.
	bad := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"account", "topup", "ac-zzzzzz", "5"}, exitNotFound, "ac-zzzzzz"},
		{[]string{"account", "topup", "nobody", "5"}, exitNotFound, "no account is named nobody"},
		{[]string{"account", "topup", a.ID, "-5"}, exitUsage, "negative"},
		{[]string{"account", "topup", a.ID, "0"}, exitUsage, "is zero"},
		{[]string{"account", "topup", a.ID, "10000000000"}, exitUsage, "allowed at once"},
		{[]string{"account", "topup", a.ID, "1.0000001"}, exitUsage, "6 decimals"},
		{[]string{"account", "topup", a.ID, "ten"}, exitUsage, "not a number"},
		{[]string{"account", "topup", a.ID}, exitUsage, "2 argument"},
		{[]string{"account", "create", ""}, exitUsage, "empty"},
		{[]string{"account", "create", "bob", "--balance", "-1"}, exitUsage, "negative"},
		{[]string{"account", "create", "bob", "--retention", "1000"}, exitUsage, "retention"},
		{[]string{"account", "show", "AC-ABC123"}, exitUsage, "not an account id"},
		{[]string{"vm", "show", "vm-zzzzzz"}, exitNotFound, "vm-zzzzzz"},
		{[]string{"vm", "show", "vm-../../etc"}, exitUsage, "not a VM id"},
		{[]string{"vm", "destroy", "vm-zzzzzz", "--yes"}, exitNotFound, "vm-zzzzzz"},
		{[]string{"vm", "create", "--tier", "nano"}, exitUsage, "--account"},
		{[]string{"vm", "create", "--account", a.ID, "--tier", "huge"}, exitNotFound, "huge"},
		{[]string{"vm", "create", "--account", broke.ID, "--tier", "nano"}, exitFunds, "top up"},
		{[]string{"vm", "list", "--state", "deleted"}, exitUsage, "unknown VM state"},
		{[]string{"vm", "ports", "add", "vm-zzzzzz", "80/sctp"}, exitUsage, "tcp or udp"},
		{[]string{"vm", "ports", "add", "vm-zzzzzz", "8000-8010/tcp"}, exitUsage, "one port at a time"},
		{[]string{"vm", "ports", "add", "vm-zzzzzz", "8080:0"}, exitUsage, "HOSTPORT[:GUESTPORT]"},
		{[]string{"vm", "ports", "add", "vm-zzzzzz", "70000/tcp"}, exitUsage, "ports 1-65535"},
		{[]string{"vm", "ports", "add", "vm-zzzzzz", "0/tcp"}, exitUsage, "ports 1-65535"},
		{[]string{"vm", "domains", "add", "vm-zzzzzz", "*.example.com"}, exitUsage, "wildcards are not supported"},
		{[]string{"vm", "domains", "add", "vm-zzzzzz", strings.Repeat("a", 64) + ".example.com"}, exitUsage, "not a valid DNS name"},
		{[]string{"vm", "domains", "add", "vm-zzzzzz", "app.example.com", "--port", "0"}, exitUsage, "--port 0"},
		{[]string{"vm", "exec", "vm-zzzzzz"}, exitUsage, "--"},
		{[]string{"backup", "delete", "bk-zzzzzzzzzz"}, exitUsage, "pass --yes"},
		{[]string{"backup", "delete", "bk-zzzzzzzzzz", "--yes"}, exitNotFound, "bk-zzzzzzzzzz"},
		{[]string{"backup", "restore", "vm-zzzzzz"}, exitUsage, "--from"},
		{[]string{"backup", "restore", "vm-zzzzzz", "--from", "last week"}, exitUsage, "YYYY-MM-DD"},
		{[]string{"op", "show", "op-zzzzzzzzzz"}, exitNotFound, "op-zzzzzzzzzz"},
		{[]string{"debug", "clock", "advance", "soon"}, exitUsage, "7d"},
		{[]string{"debug", "clock", "advance", "-1h"}, exitUsage, ""},
		{[]string{"frobnicate"}, exitUsage, "unknown command"},
		{[]string{"vm", "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"account", "list", "--bogus"}, exitUsage, "unknown flag"},
		{[]string{"account", "list", "-o", "yaml"}, exitUsage, "-o json"},
	}
	for _, tt := range bad {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := d.sj(t, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, tt.code, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "superjolt: ") || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("stderr %q should be a superjolt: message mentioning %q", r.stderr, tt.msg)
			}
			if r.stdout != "" {
				t.Errorf("stdout should be empty on failure, got %q", r.stdout)
			}
		})
	}
	as := okJSON[[]model.Account](t, d, "account", "list")
	balances := map[string]model.Micro{}
	for _, x := range as {
		balances[x.ID] = x.Balance
	}
	if len(as) != 2 || balances[a.ID] != 27_500_000 || balances[broke.ID] != 0 {
		t.Fatalf("after the bad input: accounts %+v, want alice with 27.5 and broke with 0", as)
	}
	if vms := okJSON[[]model.VM](t, d, "vm", "list"); len(vms) != 0 {
		t.Fatalf("after the bad input: VMs %+v", vms)
	}

	// The manual clock moves on command, with days.
	st := okJSON[api.Status](t, d, "debug", "clock", "show")
	moved := okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "7d")
	if st.Clock != "manual" || !moved.Now.Equal(st.Now.Add(7*24*time.Hour)) {
		t.Fatalf("clock %+v advanced by 7d = %v", st, moved.Now)
	}
}

// TestCLIEventsFollow follows events as NDJSON while an account is made,
// then interrupts the CLI like Ctrl-C: exit 130.
func TestCLIEventsFollow(t *testing.T) {
	d := startDaemon(t, "--clock=manual")
	cmd := exec.Command(filepath.Join(d.bin, "superjolt"), "--socket", d.socket, "events", "--follow", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	a := okJSON[model.Account](t, d, "account", "create", "follower")
	dec := json.NewDecoder(out)
	found := make(chan error, 1)
	go func() {
		for {
			var ev model.Event
			if err := dec.Decode(&ev); err != nil {
				found <- fmt.Errorf("reading the stream: %v", err)
				return
			}
			if ev.Object == a.ID {
				found <- nil
				return
			}
		}
	}()
	select {
	case err := <-found:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("events --follow did not show the new account within 30 s")
	}
	_ = cmd.Process.Signal(os.Interrupt)
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitCancelled {
		t.Fatalf("events --follow after SIGINT: %v (stderr %q), want exit %d", err, stderr.String(), exitCancelled)
	}
}

// TestCLIEventsTail: `superjolt events` shows the newest events (50 by
// default, -n N), oldest first; --after SEQ keeps the scripts' form;
// --follow goes on after the newest shown, without repeating or missing any.
func TestCLIEventsTail(t *testing.T) {
	d := startDaemon(t, "--clock=manual")
	c := api.NewClient(d.socket)
	ctx := context.Background()
	for i := range 60 {
		if _, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: fmt.Sprintf("user-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	all := okJSON[[]model.Event](t, d, "events", "--after", "0", "--limit", "1000")
	if len(all) < 60 {
		t.Fatalf("events --after 0: %d events, want at least 60", len(all))
	}
	seqs := func(evs []model.Event) []uint64 {
		out := []uint64{}
		for _, ev := range evs {
			out = append(out, ev.Seq)
		}
		return out
	}
	if got, want := seqs(okJSON[[]model.Event](t, d, "events")), seqs(all[len(all)-50:]); !slices.Equal(got, want) {
		t.Errorf("events: seqs %v, want the newest 50 %v", got, want)
	}
	if got, want := seqs(okJSON[[]model.Event](t, d, "events", "-n", "3")), seqs(all[len(all)-3:]); !slices.Equal(got, want) {
		t.Errorf("events -n 3: seqs %v, want %v", got, want)
	}
	if got, want := seqs(okJSON[[]model.Event](t, d, "events", "--after", fmt.Sprint(all[9].Seq), "--limit", "2")), seqs(all[10:12]); !slices.Equal(got, want) {
		t.Errorf("events --after %d --limit 2: seqs %v, want %v", all[9].Seq, got, want)
	}
	if got := okJSON[[]model.Event](t, d, "events", "-n", "0"); len(got) != 0 {
		t.Errorf("events -n 0 = %v, want none", got)
	}
	newest, oldest := all[len(all)-1], all[0]
	table := d.ok(t, "events", "-n", "2")
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "SEQ") || !strings.HasPrefix(lines[2], fmt.Sprint(newest.Seq)+" ") ||
		!strings.HasPrefix(lines[1], fmt.Sprint(all[len(all)-2].Seq)+" ") || strings.Contains(table, oldest.Message) {
		t.Errorf("events -n 2 table, want the two newest, oldest first:\n%s", table)
	}
	for _, bad := range [][]string{{"events", "-n", "5", "--after", "3"}, {"events", "--limit", "5"}, {"events", "-n", "-1"}} {
		if r := d.sj(t, bad...); r.code != exitUsage || r.stdout != "" {
			t.Errorf("superjolt %s: exit %d, stdout %q, stderr %q; want exit %d", strings.Join(bad, " "), r.code, r.stdout, r.stderr, exitUsage)
		}
	}

	// --follow -n 2: the two newest, then what happens next, in order.
	cmd := exec.Command(filepath.Join(d.bin, "superjolt"), "--socket", d.socket, "events", "--follow", "-n", "2", "-o", "json")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	}()
	dec := json.NewDecoder(out)
	next := func() model.Event {
		t.Helper()
		var ev model.Event
		if err := dec.Decode(&ev); err != nil {
			t.Fatalf("reading the followed stream: %v", err)
		}
		return ev
	}
	if first, second := next(), next(); first.Seq != all[len(all)-2].Seq || second.Seq != newest.Seq {
		t.Fatalf("events --follow -n 2 began with %d, %d; want %d, %d", first.Seq, second.Seq, all[len(all)-2].Seq, newest.Seq)
	}
	late, err := c.CreateAccount(ctx, api.CreateAccountRequest{Name: "late"})
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan model.Event, 1)
	go func() {
		var ev model.Event
		if err := dec.Decode(&ev); err == nil {
			got <- ev
		}
		close(got)
	}()
	select {
	case ev := <-got:
		if ev.Seq != newest.Seq+1 || ev.Object != late.ID {
			t.Errorf("followed %+v next, want event %d about %s", ev, newest.Seq+1, late.ID)
		}
	case <-time.After(30 * time.Second): // a hang guard, not timing
		t.Fatal("events --follow did not show the new account within 30 s")
	}
}

// TestDaemonNotifiesSystemd plays systemd's side of Type=notify: a datagram
// socket in NOTIFY_SOCKET, and WATCHDOG_USEC. superjoltd must say READY=1
// once its API serves, ping WATCHDOG=1 regularly, and say STOPPING=1 on
// SIGTERM.
func TestDaemonNotifiesSystemd(t *testing.T) {
	btrfstest.Skip(t)
	dir, err := os.MkdirTemp("", "sjn")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	// 600 ms: the daemon pings every 200 ms.
	d := startDaemonEnv(t, []string{"NOTIFY_SOCKET=" + path, "WATCHDOG_USEC=600000"}, "--clock=manual")
	await := func(what string) {
		t.Helper()
		timeout := time.After(30 * time.Second)
		for {
			select {
			case m := <-msgs:
				for _, line := range strings.Split(m, "\n") {
					if line == what {
						return
					}
				}
			case <-timeout:
				t.Fatalf("no %s from superjoltd within 30 s", what)
			}
		}
	}
	await("READY=1")
	for range 3 {
		await("WATCHDOG=1")
	}
	d.stop(t)
	await("STOPPING=1")
}

// TestDaemonOnExistingBtrfs runs superjoltd with --pool on a Btrfs mount
// it did not make: the pool layout and the built-in image land there, and a
// clean stop leaves the mount alone.
func TestDaemonOnExistingBtrfs(t *testing.T) {
	pool := btrfstest.NewPool(t, 512<<20)
	dir := filepath.Join(pool.Root(), "superjolt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--pool", dir, "--clock=manual")
	d.ok(t, "tier", "list")
	for _, sub := range []string{"images", "vms", "backups", "trash"} {
		if _, err := os.Stat(filepath.Join(dir, sub)); err != nil {
			t.Errorf("the pool on %s has no %s/: %v", dir, sub, err)
		}
	}
	if len(images.Missing()) == 0 {
		imgs := okJSON[[]model.Image](t, d, "image", "list")
		if len(imgs) != 1 || !imgs[0].Builtin || imgs[0].SizeBytes <= 0 {
			t.Fatalf("image list on an existing Btrfs: %+v, want the built-in image", imgs)
		}
	}
	d.stop(t)
	if b, _ := os.ReadFile("/proc/self/mountinfo"); !bytes.Contains(b, []byte(pool.Root())) {
		t.Fatalf("stopping superjoltd unmounted a Btrfs it did not mount (%s)", pool.Root())
	}
}

func TestCLIClockAdvanceRefusedOnRealClock(t *testing.T) {
	d := startDaemon(t) // --clock=real is the default
	r := d.sj(t, "debug", "clock", "advance", "24h")
	if r.code != exitConflict || !strings.Contains(r.stderr, "--clock=manual") {
		t.Fatalf("debug clock advance on a real clock: exit %d, stderr %q; want %d and a hint at --clock=manual", r.code, r.stderr, exitConflict)
	}
}

func TestCLIDaemonNotRunning(t *testing.T) {
	bin := binaries(t)
	sock := filepath.Join(t.TempDir(), "none.sock")
	r := runCLI(t, bin, sock, "account", "list")
	if r.code != exitUnavailable || !strings.Contains(r.stderr, "cannot reach superjoltd at "+sock) || !strings.Contains(r.stderr, "is it running?") {
		t.Fatalf("no daemon: exit %d, stderr %q", r.code, r.stderr)
	}
	// --socket wins over SUPERJOLT_SOCKET.
	other := filepath.Join(t.TempDir(), "other.sock")
	r = runCLI(t, bin, sock, "--socket", other, "tier", "list")
	if r.code != exitUnavailable || !strings.Contains(r.stderr, other) {
		t.Fatalf("--socket: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestCLISecondDaemonRefused(t *testing.T) {
	group, err := user.LookupGroup("nogroup")
	if err != nil {
		t.Skip("needs the group nogroup for --socket-group")
	}
	d := startDaemon(t, "--clock=manual", "--socket-group", "nogroup")
	var st syscall.Stat_t
	if err := syscall.Stat(d.socket, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o777 != 0o660 || fmt.Sprint(st.Gid) != group.Gid {
		t.Fatalf("socket mode %o gid %d, want 0660 and group nogroup (%s)", st.Mode&0o777, st.Gid, group.Gid)
	}
	cmd := exec.Command(filepath.Join(d.bin, "superjoltd"), "--state-dir", t.TempDir(), "--socket", d.socket)
	ownNetns(cmd)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !bytes.Contains(out, []byte("another superjoltd")) {
		t.Fatalf("second superjoltd on the same socket: %v\n%s", err, out)
	}
	d.ok(t, "tier", "list") // the first one still serves
}

func TestCLICompletion(t *testing.T) {
	bin := binaries(t)
	for _, sh := range []string{"bash", "zsh", "fish"} {
		r := runCLI(t, bin, "/nonexistent", "completion", sh)
		if r.code != 0 || !strings.Contains(r.stdout, "superjolt") {
			t.Errorf("completion %s: exit %d, %d bytes", sh, r.code, len(r.stdout))
		}
	}
}

// TestCLIVMLifecycle is the end to end of the issue, through the CLI and a
// real daemon with real guests: create, write, backup (frozen), write more,
// restore (the data goes back, new boot id, same id and IP), stop keeps
// billing, destroy to the graveyard and resume with the data, and destroy
// of a young VM leaves nothing on disk.
func TestCLIVMLifecycle(t *testing.T) {
	needVMs(t)
	if runtime.NumCPU() < 2 {
		t.Log("one CPU: guests under TCG will be slow")
	}
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "e2e", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "web-1")
	if vm.State != model.StateRunning || !vm.IP.IsValid() || vm.BootID == "" || vm.Name != "web-1" {
		t.Fatalf("vm create = %+v, want running with an IP and a boot id", vm)
	}
	if out := d.ok(t, "vm", "list"); !strings.Contains(out, vm.ID) || !strings.Contains(out, "running") || !strings.Contains(out, vm.IP.String()) {
		t.Fatalf("vm list:\n%s", out)
	}

	// vm exec: output and exit status pass through.
	r := d.sj(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo out; echo err >&2; exit 7")
	if r.code != 7 || r.stdout != "out\n" || r.stderr != "err\n" {
		t.Fatalf("vm exec: exit %d, stdout %q, stderr %q; want 7, out, err", r.code, r.stdout, r.stderr)
	}
	d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo before > /root/data && sync")

	bk := okJSON[model.Backup](t, d, "backup", "create", vm.ID)
	if bk.Kind != model.OnDemand || bk.Consistency != model.Frozen || bk.VMID != vm.ID {
		t.Fatalf("backup create = %+v, want an on-demand frozen backup of %s", bk, vm.ID)
	}
	d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo after > /root/data && sync")
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "after\n" {
		t.Fatalf("before restore the guest reads %q", got)
	}
	bs := okJSON[[]model.Backup](t, d, "backup", "list", vm.ID)
	if len(bs) != 1 || bs[0].ID != bk.ID {
		t.Fatalf("backup list = %+v", bs)
	}

	// Restore needs --yes off a terminal, and says what will be lost.
	r = d.sj(t, "backup", "restore", vm.ID, bk.ID)
	if r.code != exitUsage || !strings.Contains(r.stderr, "pass --yes") || !strings.Contains(r.stderr, "Anything written to "+vm.ID+" since") {
		t.Fatalf("restore without --yes: exit %d, stderr %q", r.code, r.stderr)
	}
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "after\n" {
		t.Fatalf("a refused restore changed the disk: the guest reads %q", got)
	}
	restored := okJSON[model.VM](t, d, "backup", "restore", vm.ID, bk.ID, "--yes")
	if restored.ID != vm.ID || restored.IP != vm.IP || restored.BootID == "" || restored.BootID == vm.BootID || restored.State != model.StateRunning {
		t.Fatalf("restore = %+v; want same id %s and IP %s, a new boot id (was %s), running", restored, vm.ID, vm.IP, vm.BootID)
	}
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "before\n" {
		t.Fatalf("after restore the guest reads %q, want the backed-up %q", got, "before\n")
	}
	// --from latest resolves to the same backup.
	r = d.sj(t, "backup", "restore", vm.ID, "--from", "latest")
	if r.code != exitUsage || !strings.Contains(r.stderr, bk.ID) {
		t.Fatalf("restore --from latest without --yes: exit %d, stderr %q", r.code, r.stderr)
	}

	// Ports and domains are attributes kept with the VM.
	withPort := okJSON[model.VM](t, d, "vm", "ports", "add", vm.ID, "8443:443/tcp")
	withDomain := okJSON[model.VM](t, d, "vm", "domains", "add", vm.ID, "app.example.com")
	if len(withPort.Ports) != 1 || withPort.Ports[0] != (model.Port{Proto: "tcp", Number: 8443, GuestPort: 443}) || len(withDomain.Domains) != 1 {
		t.Fatalf("ports/domains: %+v / %+v", withPort.Ports, withDomain.Domains)
	}

	// Stop keeps billing.
	stopped := okJSON[model.VM](t, d, "vm", "stop", vm.ID)
	if stopped.State != model.StateStopped || stopped.IP != vm.IP {
		t.Fatalf("vm stop = %+v, want stopped with its IP %s", stopped, vm.IP)
	}
	before := okJSON[model.Account](t, d, "account", "show", a.ID).Balance
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "2h")
	after := okJSON[model.Account](t, d, "account", "show", a.ID).Balance
	nano := model.DefaultTiers()[0]
	if charged := before - after; charged < nano.RatePerHour || charged > 3*nano.RatePerHour {
		t.Fatalf("a stopped nano VM over 2 h was charged %s (balance %s -> %s); want about %s", charged, before, after, 2*nano.RatePerHour)
	}

	// A day later the scheduler has taken a scheduled backup (offline: the
	// VM is stopped); scheduled backups cannot be deleted by hand.
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "24h")
	var scheduled model.Backup
	for _, b := range okJSON[[]model.Backup](t, d, "backup", "list", vm.ID) {
		if b.Kind == model.Scheduled {
			scheduled = b
		}
	}
	if scheduled.ID == "" || scheduled.Consistency != model.Offline {
		t.Fatalf("after a day stopped: scheduled backup %+v, want one with consistency offline", scheduled)
	}
	if r := d.sj(t, "backup", "delete", scheduled.ID, "--yes"); r.code != exitConflict || !strings.Contains(r.stderr, "scheduled") {
		t.Fatalf("delete of a scheduled backup: exit %d, stderr %q; want %d", r.code, r.stderr, exitConflict)
	}

	// Destroy (older than an hour now): graveyard; resume: back with its data.
	r = d.sj(t, "vm", "destroy", vm.ID)
	if r.code != exitUsage || !strings.Contains(r.stderr, "pass --yes") || !strings.Contains(r.stderr, "graveyard") {
		t.Fatalf("destroy without --yes: exit %d, stderr %q", r.code, r.stderr)
	}
	res := okJSON[api.DestroyResult](t, d, "vm", "destroy", vm.ID, "--yes")
	if res.Reclaimed || res.VM.State != model.StateGraveyard || res.VM.ReclaimAt.IsZero() || res.VM.IP.IsValid() {
		t.Fatalf("destroy = %+v, want graveyard with a reclaim time and no IP", res)
	}
	if r := d.sj(t, "vm", "destroy", vm.ID, "--yes"); r.code != exitConflict {
		t.Fatalf("double destroy: exit %d, stderr %q; want %d", r.code, r.stderr, exitConflict)
	}
	resumed := okJSON[model.VM](t, d, "vm", "resume", vm.ID)
	if resumed.State == model.StateStopped {
		resumed = okJSON[model.VM](t, d, "vm", "start", vm.ID)
	}
	if resumed.State != model.StateRunning || resumed.ID != vm.ID || len(resumed.Ports) != 1 || len(resumed.Domains) != 1 {
		t.Fatalf("resume = %+v, want it running with its ports and domains", resumed)
	}
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "before\n" {
		t.Fatalf("after resume the guest reads %q, want %q", got, "before\n")
	}

	// A clean stop keeps the VM's state; the next start boots it again,
	// with its data, and the manual clock has not run back.
	clockBefore := okJSON[api.Status](t, d, "debug", "clock", "show").Now
	d.restart(t)
	back := okJSON[model.VM](t, d, "vm", "show", vm.ID)
	if back.State != model.StateRunning || back.IP != resumed.IP || back.BootID == "" || back.BootID == resumed.BootID {
		t.Fatalf("after a daemon restart %+v; want it running again with IP %s and a new boot id (was %s)", back, resumed.IP, resumed.BootID)
	}
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "before\n" {
		t.Fatalf("after a daemon restart the guest reads %q", got)
	}
	if now := okJSON[api.Status](t, d, "debug", "clock", "show").Now; now.Before(clockBefore) {
		t.Fatalf("the manual clock ran back across a restart: %v -> %v", clockBefore, now)
	}

	// A VM younger than an hour is reclaimed at once: nothing left.
	young := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano")
	youngBk := okJSON[model.Backup](t, d, "backup", "create", young.ID)
	// Restoring a VM from another VM's backup is refused, by the CLI and by
	// the API, and changes nothing.
	if r := d.sj(t, "backup", "restore", vm.ID, youngBk.ID, "--yes"); r.code != exitNotFound || !strings.Contains(r.stderr, "not a backup of "+vm.ID) {
		t.Fatalf("restore from another VM's backup: exit %d, stderr %q", r.code, r.stderr)
	}
	c := api.NewClient(d.socket)
	if _, err := c.RestoreVM(context.Background(), vm.ID, youngBk.ID); !errors.Is(err, model.ErrInvalid) {
		t.Fatalf("API restore from another VM's backup = %v, want invalid", err)
	}
	c.Close()
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/data"); got != "before\n" {
		t.Fatalf("a refused restore changed the disk: %q", got)
	}
	if out := d.ok(t, "vm", "destroy", young.ID, "--yes"); !strings.Contains(out, "reclaimed") {
		t.Fatalf("destroy of a young VM: %q", out)
	}
	if r := d.sj(t, "vm", "show", young.ID); r.code != exitNotFound {
		t.Fatalf("vm show of a reclaimed VM: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, p := range []string{"vms/" + young.ID, "backups/" + young.ID} {
		if _, err := os.Stat(filepath.Join(d.stateDir, "pool", p)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("pool/%s still exists after reclaim: %v", p, err)
		}
	}
	if out := d.ok(t, "vm", "list"); strings.Contains(out, young.ID) {
		t.Errorf("vm list still shows the reclaimed %s:\n%s", young.ID, out)
	}

	// An account that runs dry has its VM archived; resume is refused until
	// a top-up, then brings it back.
	poor := okJSON[model.Account](t, d, "account", "create", "poor", "--balance", "0.01")
	pvm := okJSON[model.VM](t, d, "vm", "create", "--account", poor.ID, "--tier", "nano")
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "3h")
	if got := okJSON[model.VM](t, d, "vm", "show", pvm.ID); got.State != model.StateArchived {
		t.Fatalf("after 3 h on 0.01 credits the VM is %s, want archived", got.State)
	}
	if r := d.sj(t, "vm", "resume", pvm.ID); r.code != exitFunds || !strings.Contains(r.stderr, "top up") {
		t.Fatalf("resume without balance: exit %d, stderr %q; want %d", r.code, r.stderr, exitFunds)
	}
	d.ok(t, "account", "topup", poor.ID, "10")
	if got := okJSON[model.VM](t, d, "vm", "resume", pvm.ID); got.State != model.StateRunning {
		t.Fatalf("resume after a top-up: %s, want running", got.State)
	}
}

// TestCLIGuestPowerAndTrueState: `reboot` inside a real guest leaves it
// running with a new boot id and a vm.rebooted event; `poweroff` inside
// stops it, says why in `vm show` and `vm list`, and it keeps billing;
// `vm show` shows only the times that hold now (no Stopped on a running
// VM, no Destroyed on a resumed one); restoring a stopped VM says that its
// disk was rolled back and it is still stopped.
func TestCLIGuestPowerAndTrueState(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "power", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "pw-1")

	// waitVM polls vm show until ok holds (a hang guard of two minutes, not timing).
	waitVM := func(what string, ok func(model.VM) bool) model.VM {
		t.Helper()
		for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
			got := okJSON[model.VM](t, d, "vm", "show", vm.ID)
			if ok(got) {
				return got
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: still %+v after 2 minutes", what, got)
			}
		}
	}

	// reboot inside: running again, new boot id, the agent answers, an event says so.
	start := time.Now()
	d.sj(t, "vm", "exec", vm.ID, "--", "reboot") // its answer may be lost with the guest
	rebooted := waitVM("after reboot inside", func(v model.VM) bool {
		return v.State == model.StateRunning && v.BootID != "" && v.BootID != vm.BootID
	})
	t.Logf("reboot inside -> running with a new boot id in %v", time.Since(start).Round(time.Millisecond))
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/proc/sys/kernel/random/boot_id"); strings.TrimSpace(got) != rebooted.BootID {
		t.Errorf("the guest says boot id %q, vm show %q", got, rebooted.BootID)
	}
	if out := d.ok(t, "events", "-n", "20"); !strings.Contains(out, "vm.rebooted") || !strings.Contains(out, rebooted.BootID) {
		t.Errorf("events do not say that %s rebooted:\n%s", vm.ID, out)
	}
	if out := d.ok(t, "vm", "show", vm.ID); strings.Contains(out, "Stopped") {
		t.Errorf("vm show of a running VM says Stopped:\n%s", out)
	}

	// poweroff inside: stopped, with the reason shown; it keeps billing.
	start = time.Now()
	d.sj(t, "vm", "exec", vm.ID, "--", "poweroff")
	waitVM("after poweroff inside", func(v model.VM) bool { return v.State == model.StateStopped })
	t.Logf("poweroff inside -> stopped in %v", time.Since(start).Round(time.Millisecond))
	if out := d.ok(t, "vm", "show", vm.ID); !regexp.MustCompile(`(?m)^Stopped:\s+\S.*\(powered off from inside\)$`).MatchString(out) {
		t.Errorf("vm show does not say why it stopped:\n%s", out)
	}
	if out := d.ok(t, "vm", "list"); !strings.Contains(out, "NOTE") || !strings.Contains(out, "powered off from inside") {
		t.Errorf("vm list does not say why it stopped:\n%s", out)
	}
	before := okJSON[model.Account](t, d, "account", "show", a.ID).Balance
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "2h")
	if after := okJSON[model.Account](t, d, "account", "show", a.ID).Balance; after >= before {
		t.Errorf("balance %s -> %s over 2 h powered off: a stopped VM bills", before, after)
	}

	// Restore of a stopped VM: the disk goes back, it stays stopped, and says so.
	bk := okJSON[model.Backup](t, d, "backup", "create", vm.ID)
	out := d.ok(t, "backup", "restore", vm.ID, bk.ID, "--yes")
	if !strings.Contains(out, "disk was rolled back") || !strings.Contains(out, "still stopped") || strings.Contains(out, "boot id") {
		t.Errorf("restore of a stopped VM says:\n%s", out)
	}
	if got := okJSON[model.VM](t, d, "vm", "show", vm.ID); got.State != model.StateStopped || got.StopReason != model.StopGuestPowerOff {
		t.Errorf("after restoring a stopped VM: state %s reason %q; want still stopped, powered off", got.State, got.StopReason)
	}

	// Start: running, and no stale Stopped line (nor stop in the JSON).
	started := okJSON[model.VM](t, d, "vm", "start", vm.ID)
	if started.State != model.StateRunning || !started.StoppedAt.IsZero() || started.StopReason != "" {
		t.Errorf("vm start = %+v; want running without a stop time or reason", started)
	}
	if out := d.ok(t, "vm", "show", vm.ID); strings.Contains(out, "Stopped") {
		t.Errorf("vm show after start keeps a Stopped line:\n%s", out)
	}

	// Stopped by the operator, destroyed, resumed: no stale Destroyed line;
	// it is stopped again and says why.
	d.ok(t, "vm", "stop", vm.ID)
	if out := d.ok(t, "vm", "show", vm.ID); !strings.Contains(out, "(stopped by the operator)") {
		t.Errorf("vm show after vm stop:\n%s", out)
	}
	if res := okJSON[api.DestroyResult](t, d, "vm", "destroy", vm.ID, "--yes"); res.VM.State != model.StateGraveyard {
		t.Fatalf("destroy = %+v, want graveyard", res)
	}
	if out := d.ok(t, "vm", "show", vm.ID); !strings.Contains(out, "Destroyed") || strings.Contains(out, "Stopped") {
		t.Errorf("vm show in the graveyard:\n%s", out)
	}
	d.ok(t, "vm", "resume", vm.ID)
	out = d.ok(t, "vm", "show", vm.ID)
	if strings.Contains(out, "Destroyed") || strings.Contains(out, "Reclaimed") {
		t.Errorf("vm show of a resumed VM keeps its graveyard times:\n%s", out)
	}
	if got := okJSON[model.VM](t, d, "vm", "show", vm.ID); got.State == model.StateStopped && !strings.Contains(out, "(stopped by the operator)") {
		t.Errorf("a VM resumed stopped does not say why it is stopped:\n%s", out)
	}
}
