package main

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"maps"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/systemd"
)

// These benchmarks put numbers on what leaving VMs running across a
// restart of superjoltd buys (issue 11). Each iteration boots or takes
// over real guests under QEMU, which under TCG takes seconds to minutes:
// run them one iteration at a time, several times, and compare medians:
//
//	make bench BENCH='DaemonRestart|VMStart' COUNT=5
//
// or, the same by hand,
//
//	go test -run '^$' -bench 'DaemonRestart|VMStart' -benchtime=1x -count 5 -timeout 60m ./cmd/superjolt/
//
// and benchstat the output. (b.Loop stops after one iteration anyway once
// an iteration takes longer than -benchtime; -benchtime=1x only makes that
// explicit.) Under TCG the absolute figures say little about a box with
// KVM; the ratios are the point.

// restartVMs is how many VMs BenchmarkDaemonRestart keeps running: enough
// that the per-VM cost of a takeover or a boot dominates the daemon's own
// start.
const restartVMs = 20

// BenchmarkDaemonRestart measures a SIGTERM restart of a self-supervising
// superjoltd with restartVMs nano VMs running, until every guest's agent
// answers again:
//   - reattach: the VMs outlive the daemon and the new one takes them over
//     (the same QEMU processes, no guest disturbed);
//   - boot: every QEMU is ended while the daemon is down (the store still
//     says they run, as after a reboot of the host), so the new daemon
//     boots them all again, two at a time: what a restart would cost if
//     VMs did not outlive the daemon.
//
// The 20 VMs are created once, before either is timed, for all the runs
// -count asks for (it repeats each sub-benchmark, not this setup). Under
// TCG on two cores an iteration of boot takes 30 to 60 seconds.
func BenchmarkDaemonRestart(b *testing.B) {
	needVMs(b)
	// The network is off: a daemon started outside a named namespace gets a
	// network namespace of its own at each start (ownNetns), and the guests'
	// TAPs would stay behind in the first one. What is measured does not
	// use it: the daemon reaches QMP and each agent over UNIX sockets
	// (virtio-serial in the guest), and a boot needs no network either.
	// A pool of 4 GiB: 20 guests' disks, which they write to as they boot.
	d := startDaemon(b, "--clock=manual", "--network=off", "--supervisor=self", "--pool-size", "4G")
	ids := createVMs(b, d, restartVMs)
	waitAgents(b, d, ids) // all answer before anything is timed

	b.Run("reattach", func(b *testing.B) {
		before := d.runningVMs()
		for b.Loop() {
			d.restart(b)
			waitAgents(b, d, ids)
		}
		// A takeover, not a boot: every guest runs in the QEMU it ran in.
		if after := d.runningVMs(); !maps.Equal(after, before) {
			b.Fatalf("QEMU processes (vm: pid) before the restarts %v, after %v: want the same", before, after)
		}
		reportPerVM(b, len(ids))
	})

	b.Run("boot", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			d.stop(b)
			d.killVMs(b) // and unmounts the pool, which the next start mounts
			if left := d.runningVMs(); len(left) > 0 {
				b.Fatalf("QEMU still runs for %v after killing them", left)
			}
			b.StartTimer()
			// The API answers once the daemon has booted every VM the store
			// says runs (bootWanted, two at a time); then each agent is asked.
			d.start(b)
			waitAgents(b, d, ids)
		}
		if got := len(d.runningVMs()); got != len(ids) {
			b.Fatalf("%d QEMU processes after the boots, want %d", got, len(ids))
		}
		reportPerVM(b, len(ids))
	})
}

// BenchmarkVMStart measures `superjolt vm start ID` of one stopped nano VM,
// until it returns (the guest's agent answered), with QEMU supervised two
// ways:
//   - unit: superjoltd as installed under a real systemd (systemd-nspawn,
//     as in TestSystemdSupervision), each VM a transient unit
//     superjolt-vm-<id>.service;
//   - self: superjoltd on the host with --supervisor=self.
//
// The VM is stopped between iterations, untimed. In the container the CLI
// runs through nsenter, which adds a few milliseconds to unit's figures;
// boots take seconds.
func BenchmarkVMStart(b *testing.B) {
	b.Run("unit", func(b *testing.B) {
		logToTB(b)
		box := newSDBox(b)
		acct := sdJSON[model.Account](box, "account", "create", "start", "--balance", "100")
		vm := sdJSON[model.VM](box, "vm", "create", "--account", acct.ID, "--tier", "nano", "--name", "start-unit")
		unit := systemd.UnitName(vm.ID)
		for b.Loop() {
			b.StopTimer()
			if got := sdJSON[model.VM](box, "vm", "stop", vm.ID); got.State != model.StateStopped {
				b.Fatalf("vm stop: %s, want stopped", got.State)
			}
			// vm stop returns once QEMU has exited, which can be before
			// systemd has let go of the unit; a start then is refused
			// ("already loaded"). Wait until the unit is gone.
			waitUnitGone(b, box, unit)
			b.StartTimer()
			if got := sdJSON[model.VM](box, "vm", "start", vm.ID); got.State != model.StateRunning {
				b.Fatalf("vm start: %s, want running", got.State)
			}
		}
		// It ran in its unit, not under the daemon.
		if p := box.show(unit, "ActiveState", "MainPID"); p["ActiveState"] != "active" || p["MainPID"] == "0" {
			b.Fatalf("after vm start, %s is %v: want an active unit running QEMU", unit, p)
		}
	})

	b.Run("self", func(b *testing.B) {
		needVMs(b)
		// The network is on, as in the container: a start sets up the
		// guest's TAP and firewall both ways.
		d := startDaemon(b, "--clock=manual", "--supervisor=self")
		acct := okJSON[model.Account](b, d, "account", "create", "start", "--balance", "100")
		vm := okJSON[model.VM](b, d, "vm", "create", "--account", acct.ID, "--tier", "nano", "--name", "start-self")
		for b.Loop() {
			b.StopTimer()
			if got := okJSON[model.VM](b, d, "vm", "stop", vm.ID); got.State != model.StateStopped {
				b.Fatalf("vm stop: %s, want stopped", got.State)
			}
			b.StartTimer()
			if got := okJSON[model.VM](b, d, "vm", "start", vm.ID); got.State != model.StateRunning {
				b.Fatalf("vm start: %s, want running", got.State)
			}
		}
		if d.runningVMs()[vm.ID] == 0 {
			b.Fatalf("after vm start no QEMU of %s runs from the daemon's run directory", vm.ID)
		}
	})
}

// createVMs creates n nano VMs and waits until each is running. They are
// spread over accounts of model.DefaultVMLimit VMs each, the most an
// account may have. Creations are submitted a few at a time (--no-wait) so that
// their boots overlap without all n fighting for two CPUs under TCG (a
// boot has a deadline).
func createVMs(tb testing.TB, d *daemon, n int) []string {
	tb.Helper()
	const batch = 4
	var accounts []string
	for i := 0; i < n; i += model.DefaultVMLimit {
		accounts = append(accounts, okJSON[model.Account](tb, d, "account", "create", fmt.Sprintf("restart-%d", i/model.DefaultVMLimit), "--balance", "1000").ID)
	}
	c := api.NewClient(d.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	start := time.Now()
	var ids []string
	for i := 0; i < n; i += batch {
		var ops []model.Operation
		for j := i; j < min(i+batch, n); j++ {
			ops = append(ops, okJSON[model.Operation](tb, d, "vm", "create", "--account", accounts[j/model.DefaultVMLimit], "--tier", "nano",
				"--name", fmt.Sprintf("restart-%02d", j), "--no-wait"))
		}
		for _, op := range ops {
			done, err := c.FollowOperation(ctx, op.ID, nil)
			if err != nil {
				tb.Fatalf("create of VM %s (%s): %v", done.VMID, op.ID, err)
			}
			ids = append(ids, done.VMID)
		}
	}
	for _, id := range ids {
		if vm := okJSON[model.VM](tb, d, "vm", "show", id); vm.State != model.StateRunning {
			tb.Fatalf("%s is %s after its creation, want running", id, vm.State)
		}
	}
	tb.Logf("created %d nano VMs in %v", n, time.Since(start).Round(time.Second))
	return ids
}

// waitAgents waits until the agent of every VM in ids runs a program
// (`true`, through the daemon's exec API, all VMs at once): the API
// answering is not enough, the guests must. It fails tb after 5 minutes (a
// hang guard, not part of any figure).
func waitAgents(tb testing.TB, d *daemon, ids []string) {
	tb.Helper()
	c := api.NewClient(d.socket)
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []string
	)
	for _, id := range ids {
		wg.Go(func() {
			for {
				res, err := c.Exec(ctx, id, api.ExecRequest{Path: "true"})
				if err == nil && res.ExitCode == 0 {
					return
				}
				if ctx.Err() != nil {
					mu.Lock()
					errs = append(errs, fmt.Sprintf("%s: exec true: %+v, %v", id, res, err))
					mu.Unlock()
					return
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	wg.Wait()
	if len(errs) > 0 {
		tb.Fatalf("agents that did not answer within 5 minutes:\n%s", strings.Join(errs, "\n"))
	}
}

// waitUnitGone waits until systemd in box no longer has unit loaded (a
// hang guard of a minute).
func waitUnitGone(tb testing.TB, box *sdBox, unit string) {
	tb.Helper()
	start := time.Now()
	for deadline := start.Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		p := box.show(unit, "LoadState", "ActiveState", "SubState")
		if p["LoadState"] == "not-found" {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("%s still loaded a minute after vm stop: %v", unit, p)
		}
	}
}

// logToTB keeps what the log package prints (and so slog's default
// logger, which btrfstest's pool logs to) until tb ends, and shows it in
// tb's log if tb failed: printed as it comes, it lands in the middle of the
// benchmark's result line, which benchstat then cannot read.
func logToTB(tb testing.TB) {
	tb.Helper()
	prev := log.Writer()
	var buf syncBuffer
	log.SetOutput(&buf)
	tb.Cleanup(func() { // registered first, so it runs last
		log.SetOutput(prev)
		if tb.Failed() {
			tb.Logf("the log package's output:\n%s", buf.String())
		}
	})
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// reportPerVM adds the time per VM of each iteration to b's results.
func reportPerVM(b *testing.B, vms int) {
	b.ReportMetric(float64(b.Elapsed())/float64(time.Millisecond)/float64(b.N*vms), "ms/VM")
}
