package appliance

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/guest"
)

// holdAt makes the appliance's operations stop at point until release is
// closed (or their context ends); reached is closed when one gets there.
func holdAt(a *Appliance, point string) (reached, release chan struct{}) {
	reached, release = make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.testHook = func(ctx context.Context, p string) {
		first := false
		if p == point {
			once.Do(func() { first = true })
		}
		if !first {
			return
		}
		close(reached)
		select {
		case <-release:
		case <-ctx.Done():
		}
	}
	return reached, release
}

func waitClosed(t *testing.T, ch chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not happen within 30 s", what)
	}
}

// TestRealOperationOutlivesItsCaller is the bug that made operations the
// daemon's: a restore whose caller goes away while the guest boots again
// must still end done, with the guest running on the backed-up disk.
func TestRealOperationOutlivesItsCaller(t *testing.T) {
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("alice", 100*model.Credit, 5)
	vm := e.vm(acct.ID)
	if _, err := e.a.Exec(ctx, vm.ID, guest.ExecRequest{Path: "sh", Args: []string{"-c", "echo before > /root/data && sync"}}); err != nil {
		t.Fatal(err)
	}
	bk, err := e.a.CreateBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.Exec(ctx, vm.ID, guest.ExecRequest{Path: "sh", Args: []string{"-c", "echo after > /root/data && sync"}}); err != nil {
		t.Fatal(err)
	}

	// The caller gives up as soon as the old guest is stopped: the new one
	// has not booted yet.
	reached, release := holdAt(e.a, "restore:stopped")
	callerCtx, callerGone := context.WithCancel(ctx)
	returned := make(chan error, 1)
	go func() {
		_, err := e.a.RestoreVM(callerCtx, vm.ID, bk.ID)
		returned <- err
	}()
	waitClosed(t, reached, "the restore's stop")
	callerGone()
	if err := <-returned; !errors.Is(err, context.Canceled) {
		t.Fatalf("RestoreVM with its caller gone = %v, want context.Canceled", err)
	}
	close(release)

	ops, err := e.a.Operations(ctx, OpFilter{VMID: vm.ID, Running: true})
	if err != nil || len(ops) != 1 || ops[0].Kind != model.OpRestore {
		t.Fatalf("running operations of %s = %+v, %v; want the restore", vm.ID, ops, err)
	}
	final := followOp(t, e.a, ops[0].ID)
	if final.State != model.OpDone {
		t.Fatalf("restore ended %s (%s), want done", final.State, final.Error)
	}
	got := e.getVM(vm.ID)
	if got.State != model.StateRunning || got.BootID == "" || got.BootID == vm.BootID {
		t.Fatalf("after the restore the VM is %s with boot id %q (was %q); want running with a new boot", got.State, got.BootID, vm.BootID)
	}
	res, err := e.a.Exec(ctx, vm.ID, guest.ExecRequest{Path: "cat", Args: []string{"/root/data"}})
	if err != nil || string(res.Stdout) != "before\n" {
		t.Fatalf("after the restore the guest reads %q, %v; want the backed-up %q", res.Stdout, err, "before\n")
	}
	e.checkConsistent()
}

// followOp follows an operation the way the API's long poll does, checking
// that each answer shows a step the previous did not, and returns its end.
func followOp(t *testing.T, a *Appliance, id string) model.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	op, err := a.Operation(ctx, id)
	for err == nil && !op.State.Finished() {
		prev := op.Step
		wctx, wcancel := context.WithTimeout(ctx, 25*time.Second)
		op, err = a.WaitOperation(wctx, id, prev)
		wcancel()
		if ctx.Err() != nil {
			t.Fatalf("%s did not end within 2 minutes (step %s)", id, op.Step)
		}
	}
	if err != nil {
		t.Fatalf("following %s: %v", id, err)
	}
	return op
}

// TestCancelBackupBeforeItsSnapshot: a backup cancelled before its
// snapshot ends cancelled, leaves no snapshot and no row, and thaws the
// guest; one past its snapshot, a restore or a finished operation cannot
// be cancelled, and the refusal says why.
func TestCancelBackupBeforeItsSnapshot(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("alice", 100*model.Credit, 5)
	vm := e.vm(acct.ID)

	e.clk.Advance(time.Minute)
	reached, release := holdAt(e.a, "backup:cancellable")
	op, err := e.a.SubmitBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if op.State != model.OpRunning || op.Kind != model.OpBackup || op.VMID != vm.ID || op.BackupID == "" {
		t.Fatalf("SubmitBackup = %+v, want a running backup of %s", op, vm.ID)
	}
	frozen := func() bool {
		h := e.hv.(*stubHypervisor)
		h.mu.Lock()
		m := h.running[vm.ID]
		h.mu.Unlock()
		m.mu.Lock()
		defer m.mu.Unlock()
		return m.frozen
	}
	waitClosed(t, reached, "the backup's last moment before its snapshot")
	if !frozen() {
		t.Fatal("the guest is not frozen while the backup waits to snapshot")
	}
	final, err := e.a.CancelOperation(ctx, op.ID)
	if err != nil || final.State != model.OpCancelled {
		t.Fatalf("CancelOperation = %+v, %v; want cancelled", final, err)
	}
	close(release)
	if frozen() {
		t.Fatal("the guest stayed frozen after the backup was cancelled")
	}
	if bks, err := e.a.Backups(ctx, vm.ID); err != nil || len(bks) != 0 {
		t.Fatalf("backups after a cancelled backup = %+v, %v; want none", bks, err)
	}
	if _, snaps := e.poolHas(vm.ID); len(snaps) != 0 {
		t.Fatalf("snapshots after a cancelled backup: %v", snaps)
	}
	e.clk.Advance(time.Minute)
	if _, err := e.a.CreateBackup(ctx, vm.ID); err != nil {
		t.Fatalf("a backup after the cancelled one: %v (the VM's lock was kept?)", err)
	}

	// Too late, or never safe: refused with the reason.
	_, err = e.a.CancelOperation(ctx, op.ID)
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "already ended") {
		t.Fatalf("cancel of a cancelled operation = %v, want a conflict saying it ended", err)
	}
	bk, _ := e.a.CreateBackup(ctx, vm.ID)
	e.clk.Advance(time.Minute)
	reached, release = holdAt(e.a, "restore:stopped")
	rop, err := e.a.SubmitRestore(ctx, vm.ID, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, reached, "the restore's stop")
	_, err = e.a.CancelOperation(ctx, rop.ID)
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "cannot be cancelled safely") {
		t.Fatalf("cancel of a restore = %v, want a conflict saying why not", err)
	}
	close(release)
	if final := followOp(t, e.a, rop.ID); final.State != model.OpDone {
		t.Fatalf("the restore whose cancel was refused ended %s: %s", final.State, final.Error)
	}

	// A second operation on a VM under one is refused, naming it.
	e.clk.Advance(time.Minute)
	reached, release = holdAt(e.a, "backup:cancellable")
	bop, err := e.a.SubmitBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, reached, "the second backup")
	_, err = e.a.SubmitStopVM(ctx, vm.ID)
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), bop.ID) {
		t.Fatalf("stop during a backup = %v, want a conflict naming %s", err, bop.ID)
	}
	close(release)
	followOp(t, e.a, bop.ID)

	all, err := e.a.Operations(ctx, OpFilter{VMID: vm.ID})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range all {
		kinds = append(kinds, string(o.Kind)+":"+string(o.State))
	}
	want := "backup:done restore:done backup:done backup:done backup:cancelled create:done"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("op list of %s, newest first = %s; want %s", vm.ID, strings.Join(kinds, " "), want)
	}
	e.checkConsistent()
}

// TestReclaimLeavesNoRunDir: nothing of a reclaimed VM is left on the
// host, its run directory (console log, sockets) included.
func TestReclaimLeavesNoRunDir(t *testing.T) {
	e := newEnv(t, envOptions{})
	acct := e.account("alice", 100*model.Credit, 5)
	vm := e.vm(acct.ID)
	dir := e.a.vmRunDir(vm.ID)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "console.log"), []byte("boot\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	res, err := e.a.DestroyVM(context.Background(), vm.ID) // under an hour old: reclaimed at once
	if err != nil || !res.Reclaimed {
		t.Fatalf("DestroyVM = %+v, %v; want reclaimed", res, err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the run directory of reclaimed %s is still there: %v", vm.ID, err)
	}
}

// TestOperationEvents: an operation's events tell its whole life on the
// one event stream: op.started in the transaction that records it, op.step
// for each step as it is recorded, in order, then its end; every one names
// the operation and the VM's account, which a front end needs to refetch
// the operation and to filter by account.
func TestOperationEvents(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("alice", 100*model.Credit, 5)
	vm := e.vm(acct.ID)
	opEvents := func(after uint64, id string) []string {
		t.Helper()
		evs, err := e.a.Events(ctx, after, model.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, ev := range evs {
			if !strings.HasPrefix(ev.Type, "op.") {
				continue
			}
			if ev.Object != id {
				t.Errorf("%s event names %q (%s), want the operation %s", ev.Type, ev.Object, ev.Message, id)
			}
			if ev.Account != acct.ID {
				t.Errorf("%s event of %s names account %q, want %s", ev.Type, id, ev.Account, acct.ID)
			}
			out = append(out, ev.Type+" "+ev.Message)
		}
		return out
	}
	check := func(got []string, want ...string) {
		t.Helper()
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("op events:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
	last := func() uint64 {
		t.Helper()
		evs, err := e.a.LastEvents(ctx, 1)
		if err != nil || len(evs) != 1 {
			t.Fatalf("LastEvents(1) = %v, %v", evs, err)
		}
		return evs[0].Seq
	}

	// A create's op.started names the account of the VM it makes in the
	// same transaction.
	create := lastOp(t, e, model.OpCreate)
	check(opEvents(0, create.ID),
		"op.started create of "+vm.ID+" started",
		"op.step create of "+vm.ID+": subvolume (30%)",
		"op.step create of "+vm.ID+": grown (40%)",
		"op.done create of "+vm.ID+": done")

	// A backup: every step, in order, while a follower of the stream
	// could see it (the steps are events before the operation ends).
	e.clk.Advance(time.Minute)
	seq := last()
	reached, release := holdAt(e.a, "backup:saved")
	op, err := e.a.SubmitBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, reached, "the backup's save")
	check(opEvents(seq, op.ID),
		"op.started backup of "+vm.ID+" started",
		"op.step backup of "+vm.ID+": frozen (20%)",
		"op.step backup of "+vm.ID+": snapshot (50%)",
		"op.step backup of "+vm.ID+": thawed (60%)")
	close(release)
	if final := followOp(t, e.a, op.ID); final.State != model.OpDone {
		t.Fatalf("backup ended %s: %s", final.State, final.Error)
	}
	check(opEvents(seq, op.ID),
		"op.started backup of "+vm.ID+" started",
		"op.step backup of "+vm.ID+": frozen (20%)",
		"op.step backup of "+vm.ID+": snapshot (50%)",
		"op.step backup of "+vm.ID+": thawed (60%)",
		"op.step backup of "+vm.ID+": saved (80%)",
		"op.done backup of "+vm.ID+": done")

	// A restore, and a cancelled backup: the end names the account too.
	e.a.testHook = nil
	e.clk.Advance(time.Minute)
	seq = last()
	rop, err := e.a.SubmitRestore(ctx, vm.ID, op.BackupID)
	if err != nil {
		t.Fatal(err)
	}
	followOp(t, e.a, rop.ID)
	check(opEvents(seq, rop.ID),
		"op.started restore of "+vm.ID+" started",
		"op.step restore of "+vm.ID+": stopped (20%)",
		"op.step restore of "+vm.ID+": replaced (60%)",
		"op.done restore of "+vm.ID+": done")

	e.clk.Advance(time.Minute)
	seq = last()
	reached, release = holdAt(e.a, "backup:cancellable")
	cop, err := e.a.SubmitBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	waitClosed(t, reached, "the second backup's last moment before its snapshot")
	if _, err := e.a.CancelOperation(ctx, cop.ID); err != nil {
		t.Fatal(err)
	}
	close(release)
	check(opEvents(seq, cop.ID),
		"op.started backup of "+vm.ID+" started",
		"op.cancelled backup of "+vm.ID+": cancelled")
}
