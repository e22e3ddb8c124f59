package appliance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

// TestCreateFailureLeavesNothing: a VM that cannot boot is undone: no row,
// no disk, its address free again. The stub refuses to launch a VM whose
// kernel is missing, as QEMU would.
func TestCreateFailureLeavesNothing(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	if err := e.pool.CreateImage(ctx, "broken", func(dir string) error {
		return os.WriteFile(filepath.Join(dir, RootfsFile), []byte("x"), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	e.reopen() // New seeds the image row
	acct := e.account("unlucky", model.Credit, 0)
	_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", Image: "broken"})
	wantCode(t, err, "unavailable")
	vms, _ := e.a.VMs(ctx, VMFilter{})
	if len(vms) != 0 {
		t.Errorf("a failed create left %d VMs", len(vms))
	}
	if disk, _ := e.pool.VMs(ctx); len(disk) != 0 {
		t.Errorf("a failed create left subvolumes %v", disk)
	}
	vm := e.vm(acct.ID)
	if vm.IP.String() != "10.77.0.2" {
		t.Errorf("the failed create's address was not freed: the next VM got %v", vm.IP)
	}
	if o := lastOp(t, e, model.OpCreate); o.State != model.OpDone {
		t.Errorf("last create: %s", o.State)
	}
	e.checkConsistent()
}

// TestWaitEvents: a follower blocked in WaitEvents wakes for a new event.
func TestWaitEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("events", model.Credit, 0)
	evs, err := e.a.Events(ctx, 0, 0)
	if err != nil || len(evs) == 0 {
		t.Fatalf("Events: %v %v", evs, err)
	}
	last := evs[len(evs)-1].Seq
	got := make(chan []model.Event, 1)
	go func() {
		evs, err := e.a.WaitEvents(ctx, last)
		if err != nil {
			t.Error(err)
		}
		got <- evs
	}()
	if _, err := e.a.TopUp(ctx, acct.ID, model.Credit); err != nil {
		t.Fatal(err)
	}
	select {
	case evs := <-got:
		if len(evs) != 1 || evs[0].Type != "account.topup" || evs[0].Seq != last+1 {
			t.Errorf("WaitEvents returned %+v", evs)
		}
	case <-time.After(10 * time.Second): // a hang guard, not timing
		t.Fatal("WaitEvents did not wake for a new event")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := e.a.WaitEvents(cctx, last+1); err == nil {
		t.Error("WaitEvents with a cancelled context returned no error")
	}
}

// TestAdvanceClockNeedsManual: AdvanceClock is refused on the real clock.
func TestAdvanceClockNeedsManual(t *testing.T) {
	e := newEnv(t, envOptions{})
	a, err := New(context.Background(), Options{Store: e.st, Pool: e.pool, Hypervisor: e.hv, Clock: clock.Real{}, RunDir: e.runDir, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	_, err = a.AdvanceClock(context.Background(), time.Hour)
	wantCode(t, err, "conflict")
	if now, err := e.a.AdvanceClock(context.Background(), time.Hour); err != nil || !now.Equal(t0.Add(time.Hour)) {
		t.Errorf("manual AdvanceClock = %v, %v", now, err)
	}
}

// TestMissedDaysCaughtUpOnce: days missed while the box was off cost one
// scheduled backup at the next start, not one per missed day, and the
// schedule goes on at the VM's daily offset.
func TestMissedDaysCaughtUpOnce(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("sleepy", 1000*model.Credit, 0)
	vm := e.vm(acct.ID)
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	e.close()
	e.clk.Advance(3*24*time.Hour + time.Hour) // the box is off: nothing runs
	e.open()
	if bks, _ := e.a.Backups(ctx, vm.ID); len(bks) != 0 {
		t.Fatalf("%d backups before the first pass", len(bks))
	}
	now := e.clk.Now()
	if err := e.a.runDue(ctx, now); err != nil { // Run's first pass
		t.Fatal(err)
	}
	bks, _ := e.a.Backups(ctx, vm.ID)
	if len(bks) != 1 || bks[0].Kind != model.Scheduled {
		t.Fatalf("after three missed days: %d backups, want one scheduled catch-up", len(bks))
	}
	if next := e.getVM(vm.ID).NextBackupAt; !next.After(now) || next.Sub(next.Truncate(24*time.Hour)) != backupOffset(vm.ID) {
		t.Errorf("next backup at %v: want the VM's offset after %v", next, now)
	}
	e.advance(24 * time.Hour)
	if bks, _ := e.a.Backups(ctx, vm.ID); len(bks) != 2 {
		t.Errorf("a day later: %d backups, want 2", len(bks))
	}
}

// TestGuestPowerOff: `poweroff` inside a guest (busybox signalling the
// agent, PID 1) is seen by the supervisor and the VM marked stopped, with
// the reason (not left "running" without a process); it keeps billing
// while stopped and starts again, and then says no more that it stopped.
func TestGuestPowerOff(t *testing.T) {
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("self-stopper", 100*model.Credit, 0)
	vm := e.vm(acct.ID)
	since := lastSeq(t, e)
	start := time.Now()
	// The agent may or may not answer before the machine goes down.
	_, _ = e.a.Exec(ctx, vm.ID, guestSh("poweroff"))
	ev := waitEvent(t, e, since, "vm.exited", 2*time.Minute)
	t.Logf("poweroff inside -> stopped in %v", time.Since(start).Round(time.Millisecond))
	got := e.getVM(vm.ID)
	if got.State != model.StateStopped || got.WantRunning || e.isRunning(vm.ID) {
		t.Fatalf("after the guest powered off: state %s want_running %v process %v", got.State, got.WantRunning, e.isRunning(vm.ID))
	}
	if got.StopReason != model.StopGuestPowerOff || got.StoppedAt.IsZero() || got.BootID != "" {
		t.Errorf("after the guest powered off: stop reason %q at %v, boot id %q; want %q", got.StopReason, got.StoppedAt, got.BootID, model.StopGuestPowerOff)
	}
	if !strings.Contains(ev.Message, "powered off from inside") {
		t.Errorf("event %q does not say the guest powered off", ev.Message)
	}

	// Stopped VMs bill.
	before, err := e.a.Account(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(time.Hour)
	after, err := e.a.Account(ctx, acct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.Balance >= before.Balance {
		t.Errorf("balance %v -> %v over an hour stopped: a stopped VM bills", before.Balance, after.Balance)
	}
	if e.getVM(vm.ID).State != model.StateStopped {
		t.Fatalf("state %s after an hour, want stopped", e.getVM(vm.ID).State)
	}

	started, err := e.a.StartVM(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if started.State != model.StateRunning || started.BootID == "" || !started.StoppedAt.IsZero() || started.StopReason != "" {
		t.Errorf("started again: state %s boot %q stopped at %v reason %q; want running, no stop left", started.State, started.BootID, started.StoppedAt, started.StopReason)
	}
	e.guestExec(vm.ID, "true")
}

// TestGuestReboot: `reboot` inside a guest resets the machine; the
// supervisor notices, the agent answers with a new boot id, the VM is
// still running with that boot id and a vm.rebooted event says so. Its
// disk is the same disk. A second reboot works the same way.
func TestGuestReboot(t *testing.T) {
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("rebooter", 100*model.Credit, 0)
	vm := e.vm(acct.ID)
	e.guestExec(vm.ID, "echo kept > /data/f && sync")
	boot := vm.BootID
	for i := range 2 {
		since := lastSeq(t, e)
		start := time.Now()
		_, err := e.a.Exec(ctx, vm.ID, guestSh("reboot"))
		t.Logf("reboot %d: exec returned after %v: %v", i+1, time.Since(start).Round(time.Millisecond), err)
		ev := waitEvent(t, e, since, "vm.rebooted", 2*time.Minute)
		took := time.Since(start)
		got := e.getVM(vm.ID)
		if got.State != model.StateRunning || got.BootID == "" || got.BootID == boot || !e.isRunning(vm.ID) {
			t.Fatalf("reboot %d: state %s boot id %q (was %q) process %v; want running with a new boot id", i+1, got.State, got.BootID, boot, e.isRunning(vm.ID))
		}
		if !strings.Contains(ev.Message, got.BootID) {
			t.Errorf("event %q does not name the new boot id %s", ev.Message, got.BootID)
		}
		res, err := e.a.Exec(ctx, vm.ID, guestSh("cat /data/f; cat /proc/sys/kernel/random/boot_id"))
		if err != nil {
			t.Fatalf("reboot %d: the agent does not answer: %v", i+1, err)
		}
		if out := strings.Fields(string(res.Stdout)); len(out) != 2 || out[0] != "kept" || strings.ReplaceAll(out[1], "-", "") != strings.ReplaceAll(got.BootID, "-", "") {
			t.Errorf("reboot %d: guest says %q; want the kept file and boot id %s", i+1, res.Stdout, got.BootID)
		}
		t.Logf("reboot %d: running again with a new boot id in %v", i+1, took.Round(time.Millisecond))
		boot = got.BootID
	}
	e.checkConsistent()
}

// waitEvent waits (up to limit, a hang guard) for an event of type typ
// after seq.
func waitEvent(t *testing.T, e *env, seq uint64, typ string, limit time.Duration) model.Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		evs, err := e.a.WaitEvents(ctx, seq)
		if err != nil {
			t.Fatalf("no %s event within %v: %v", typ, limit, err)
		}
		for _, ev := range evs {
			if ev.Type == typ {
				return ev
			}
		}
		seq = evs[len(evs)-1].Seq
	}
}

func lastSeq(t *testing.T, e *env) uint64 {
	t.Helper()
	evs, err := e.a.Events(context.Background(), 0, model.MaxListLimit)
	if err != nil || len(evs) == 0 {
		t.Fatalf("events: %v", err)
	}
	return evs[len(evs)-1].Seq
}

func hasEvent(evs []model.Event, typ string) bool {
	for _, ev := range evs {
		if ev.Type == typ {
			return true
		}
	}
	return false
}

// TestLastEvents: LastEvents returns the newest n events, oldest first,
// also after the oldest were pruned; all of them when there are fewer.
func TestLastEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	for i := range 5 {
		e.account(fmt.Sprintf("user-%d", i), model.Credit, 0)
	}
	all, err := e.a.Events(ctx, 0, model.MaxListLimit)
	if err != nil || len(all) < 5 {
		t.Fatalf("Events = %d events, %v", len(all), err)
	}
	seqs := func(evs []model.Event) []uint64 {
		out := []uint64{}
		for _, ev := range evs {
			out = append(out, ev.Seq)
		}
		return out
	}
	check := func(n int, want []model.Event) {
		t.Helper()
		got, err := e.a.LastEvents(ctx, n)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(seqs(got), seqs(want)) {
			t.Errorf("LastEvents(%d) = seqs %v, want %v", n, seqs(got), seqs(want))
		}
	}
	check(1, all[len(all)-1:])
	check(3, all[len(all)-3:])
	check(len(all), all)
	check(len(all)+10, all)
	if got, _ := e.a.LastEvents(ctx, 3); got[2].Object == "" || got[2].Object != all[len(all)-1].Object {
		t.Errorf("LastEvents(3) ends with %+v, want the newest event %+v", got[2], all[len(all)-1])
	}

	// The oldest events pruned: the newest are still found, and fewer
	// come back than asked when fewer are left.
	if err := e.st.Update(ctx, func(tx *store.Tx) error {
		_, err := tx.PruneEvents(all[len(all)-3].Seq, 0)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	check(2, all[len(all)-2:])
	check(10, all[len(all)-2:])
}
