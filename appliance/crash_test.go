package appliance

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
)

// The crash tests re-run this test binary as a child that opens the same
// state directory and pool, starts an operation with CrashEnv set, and
// SIGKILLs itself at the chosen step. The parent then opens the appliance
// again, which must recover: consistent store and pool, no unfinished
// operation, no lost backup, a guest that is not frozen.

const childEnv = "SUPERJOLT_APPLIANCE_CRASH_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(crashChild())
	}
	// The pool logs every subvolume it makes at info level; in tests only
	// warnings are worth reading.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}

// crashChild is the child's main: it returns only when the crash point was
// not reached (exit 3) or something failed (exit 2).
func crashChild() int {
	fail := func(f string, a ...any) int {
		fmt.Fprintf(os.Stderr, "crash child: "+f+"\n", a...)
		return 2
	}
	ctx := context.Background()
	start, err := time.Parse(time.RFC3339Nano, os.Getenv("SJ_CLOCK"))
	if err != nil {
		return fail("clock: %v", err)
	}
	st, err := store.Open(ctx, store.Options{Dir: os.Getenv("SJ_DB")})
	if err != nil {
		return fail("store: %v", err)
	}
	pool, err := btrfs.Open(ctx, os.Getenv("SJ_POOL"))
	if err != nil {
		return fail("pool: %v", err)
	}
	var hv Hypervisor = &stubHypervisor{}
	if os.Getenv("SJ_HV") == "qemu" {
		hv = &QEMU{Config: vmm.Config{BootTimeout: 90 * time.Second}}
	}
	a, err := New(ctx, Options{Store: st, Pool: pool, Hypervisor: hv, Clock: clock.NewManual(start), RunDir: os.Getenv("SJ_RUN")})
	if err != nil {
		return fail("New: %v", err)
	}
	args := strings.Fields(os.Getenv("SJ_ACTION"))
	switch args[0] {
	case "backup":
		_, err = a.CreateBackup(ctx, args[1])
	case "restore":
		_, err = a.RestoreVM(ctx, args[1], args[2])
	case "destroy":
		_, err = a.DestroyVM(ctx, args[1])
	case "advance":
		var d time.Duration
		if d, err = time.ParseDuration(args[1]); err == nil {
			_, err = a.AdvanceClock(ctx, d)
		}
	case "create":
		_, err = a.CreateVM(ctx, CreateVMRequest{AccountID: args[1], Tier: "nano"})
	case "open": // New succeeded: that is all that was asked
		a.Close()
		st.Close()
		return 0
	default:
		return fail("unknown action %q", args[0])
	}
	fmt.Fprintf(os.Stderr, "crash child: %s returned %v without reaching the crash point\n", args[0], err)
	a.Close()
	st.Close()
	return 3
}

// crashAt runs action in a child that crashes at step, and reopens.
func (e *env) crashAt(step, action string) {
	e.t.Helper()
	e.crashOnly(step, action)
	e.open()
}

// child runs action in a child process on the appliance's state (closed
// first), with CrashEnv at crashStep and prefixed by the command wrap (nil
// for none), and returns how it ended and what it wrote.
func (e *env) child(wrap []string, crashStep, action string) (*os.ProcessState, error, string) {
	e.t.Helper()
	now := e.clk.Now()
	e.close()
	hv := "stub"
	if e.real {
		hv = "qemu"
	}
	argv := append(append([]string(nil), wrap...), os.Args[0], "-test.run=^$")
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"=1", CrashEnv+"="+crashStep,
		"SJ_CLOCK="+now.Format(time.RFC3339Nano), "SJ_DB="+e.stateDir+"/db", "SJ_POOL="+e.pool.Root(),
		"SJ_RUN="+e.runDir, "SJ_HV="+hv, "SJ_ACTION="+action)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return cmd.ProcessState, err, out.String()
}

// crashOnly runs action in a child that crashes at step, and leaves the
// appliance closed.
func (e *env) crashOnly(step, action string) {
	e.t.Helper()
	ps, err, out := e.child(nil, step, action)
	ws, _ := ps.Sys().(syscall.WaitStatus)
	if err == nil || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		e.t.Fatalf("child running %q did not die at %s: %v\n%s", action, step, err, out)
	}
	if d, ok := strings.CutPrefix(action, "advance "); ok {
		dd, _ := time.ParseDuration(d)
		e.clk.Advance(dd) // where the child's clock went
	}
}

// recoveredOp returns the operation of kind that the last open recovered.
func (e *env) recoveredOp(kind model.OpKind) model.Operation {
	e.t.Helper()
	evs, err := e.a.Events(context.Background(), 0, model.MaxListLimit)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Type == "op.recovered" && strings.HasPrefix(evs[i].Message, string(kind)+" of ") {
			o, err := e.a.Operation(context.Background(), evs[i].Object)
			if err != nil {
				e.t.Fatal(err)
			}
			// The event says the step the crash interrupted, and names the
			// account of a VM that is still there.
			if strings.Contains(evs[i].Message, `step "recovered"`) {
				e.t.Errorf("op.recovered says %q, not the step the crash interrupted", evs[i].Message)
			}
			if vm, err := e.a.VM(context.Background(), o.VMID); err == nil && evs[i].Account != vm.AccountID {
				e.t.Errorf("op.recovered of %s names account %q, want %s", o.ID, evs[i].Account, vm.AccountID)
			}
			return o
		}
	}
	e.t.Fatalf("no recovered %s operation", kind)
	return model.Operation{}
}

// notFrozen fails unless the guest of a running VM can write to its disk.
func (e *env) notFrozen(id string) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	res, err := e.a.Exec(ctx, id, guestSh("echo probe > /data/probe && sync && cat /data/probe"))
	if err != nil || string(res.Stdout) != "probe\n" {
		e.t.Fatalf("guest of %s cannot write (frozen?): %v %q %s", id, err, res.Stdout, res.Stderr)
	}
}

func guestSh(script string) guest.ExecRequest {
	return guest.ExecRequest{Path: "sh", Args: []string{"-c", script}, Timeout: 30 * time.Second}
}

// TestCrashBackupRestore kills the appliance at every step of a backup and
// of a restore of a real guest.
func TestCrashBackupRestore(t *testing.T) {
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("crashy", 1000*model.Credit, 0)
	vm := e.vm(acct.ID)
	e.guestExec(vm.ID, "echo before > /data/f && sync")

	for _, step := range Steps(model.OpBackup)[:5] { // recorded … saved; "pruned" needs a scheduled backup
		t.Run("backup:"+step, func(t *testing.T) {
			e.t = t
			before, _ := e.a.Backups(ctx, vm.ID)
			e.crashAt("backup:"+step, "backup "+vm.ID)
			o := e.recoveredOp(model.OpBackup)
			if !o.State.Finished() {
				t.Fatalf("operation %s left %s", o.ID, o.State)
			}
			after, _ := e.a.Backups(ctx, vm.ID)
			snapshotTaken := step == "snapshot" || step == "thawed" || step == "saved"
			if snapshotTaken != (len(after) == len(before)+1) {
				t.Errorf("crash at %s: %d backups before, %d after (a snapshot taken must be kept, none made otherwise)", step, len(before), len(after))
			}
			kept := slices.ContainsFunc(after, func(b model.Backup) bool { return b.ID == o.BackupID })
			if snapshotTaken != kept {
				t.Errorf("crash at %s: backup %s kept %v, want %v", step, o.BackupID, kept, snapshotTaken)
			}
			if vm := e.getVM(vm.ID); vm.State != model.StateRunning {
				t.Fatalf("VM is %s after the restart", vm.State)
			}
			e.notFrozen(vm.ID)
			e.checkConsistent()
		})
	}
	e.t = t
	bks, err := e.a.Backups(ctx, vm.ID)
	if err != nil || len(bks) == 0 {
		t.Fatalf("no backup to restore from: %v", err)
	}
	bk := bks[len(bks)-1]
	for _, step := range Steps(model.OpRestore) {
		t.Run("restore:"+step, func(t *testing.T) {
			e.t = t
			e.guestExec(vm.ID, "echo after > /data/f && sync")
			e.crashAt("restore:"+step, "restore "+vm.ID+" "+bk.ID)
			o := e.recoveredOp(model.OpRestore)
			if o.State != model.OpDone {
				t.Errorf("restore left %s after the restart", o.State)
			}
			got := e.getVM(vm.ID)
			if got.State != model.StateRunning || got.IP != vm.IP {
				t.Fatalf("VM after the restart: %+v", got)
			}
			if out := e.guestExec(vm.ID, "cat /data/f"); out != "before\n" {
				t.Errorf("crash at %s: the guest reads %q, want the restored %q (a restore is finished, not half-done)", step, out, "before\n")
			}
			e.notFrozen(vm.ID)
			e.checkConsistent()
		})
	}
	e.t = t
}

// TestCrashDestroyReclaim kills the appliance at every step of a destroy
// and of a reclaim. The stub stands in for VM processes: these operations
// touch the disk and the store, and a destroyed VM has no process left
// (TestGraveyard/qemu covers real destroys).
func TestCrashDestroyReclaim(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("crashy", 1000*model.Credit, 0)
	for _, step := range Steps(model.OpDestroy) {
		t.Run("destroy:"+step, func(t *testing.T) {
			e.t = t
			vm := e.vm(acct.ID)
			if _, err := e.a.CreateBackup(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
			e.advance(2 * time.Hour) // a scheduled backup may fall in these hours too
			kept, _ := e.a.Backups(ctx, vm.ID)
			e.crashAt("destroy:"+step, "destroy "+vm.ID)
			if o := e.recoveredOp(model.OpDestroy); o.State != model.OpDone {
				t.Errorf("destroy left %s", o.State)
			}
			got := e.getVM(vm.ID)
			if got.State != model.StateGraveyard || got.IP.IsValid() {
				t.Errorf("after the restart: state %s ip %v, want graveyard without address", got.State, got.IP)
			}
			if has, snaps := e.poolHas(vm.ID); !has || len(snaps) != len(kept) || len(kept) == 0 {
				t.Errorf("graveyard VM lost its disk (%v) or backups (%v)", has, snaps)
			}
			e.checkConsistent()
		})
	}
	e.t = t
	e = newEnv(t, envOptions{}) // no graveyard VMs of the destroy cases
	acct = e.account("crashy", 1000*model.Credit, 0)
	for _, step := range Steps(model.OpReclaim) {
		t.Run("reclaim:"+step, func(t *testing.T) {
			e.t = t
			vm := e.vm(acct.ID)
			if _, err := e.a.CreateBackup(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
			e.advance(2 * time.Hour)
			if _, err := e.a.DestroyVM(ctx, vm.ID); err != nil {
				t.Fatal(err)
			}
			e.crashAt("reclaim:"+step, "advance "+(RecoveryWindow+time.Minute).String())
			if o := e.recoveredOp(model.OpReclaim); o.State != model.OpDone {
				t.Errorf("reclaim left %s", o.State)
			}
			_, err := e.a.VM(ctx, vm.ID)
			wantCode(t, err, "not_found")
			if has, snaps := e.poolHas(vm.ID); has || len(snaps) > 0 {
				t.Errorf("reclaimed VM left subvolume %v, backups %v", has, snaps)
			}
			e.checkConsistent()
		})
	}
	e.t = t
}

// TestCrashCreateArchive kills the appliance at every step of a create
// (rolled back: nothing left) and of an archive (finished). The stub
// stands in for VM processes, as in TestCrashDestroyReclaim.
func TestCrashCreateArchive(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("crashy", 1000*model.Credit, 0)
	for _, step := range Steps(model.OpCreate) {
		t.Run("create:"+step, func(t *testing.T) {
			e.t = t
			e.crashAt("create:"+step, "create "+acct.ID)
			if o := e.recoveredOp(model.OpCreate); o.State != model.OpRolledBack {
				t.Errorf("create left %s, want rolled_back", o.State)
			}
			if vms, _ := e.a.VMs(ctx, VMFilter{AccountID: acct.ID}); len(vms) != 0 {
				t.Errorf("a crashed create left %d VMs", len(vms))
			}
			if disk, _ := e.pool.VMs(ctx); len(disk) != 0 {
				t.Errorf("a crashed create left subvolumes %v", disk)
			}
			e.checkConsistent()
		})
	}
	e.t = t
	for _, step := range Steps(model.OpArchive) {
		t.Run("archive:"+step, func(t *testing.T) {
			e.t = t
			poor := e.account("poor-"+step, 100, 0)
			vm := e.vm(poor.ID)
			e.crashAt("archive:"+step, "advance "+BillingPeriod.String())
			if o := e.recoveredOp(model.OpArchive); o.State != model.OpDone {
				t.Errorf("archive left %s", o.State)
			}
			got := e.getVM(vm.ID)
			if got.State != model.StateArchived || got.IP.IsValid() {
				t.Errorf("after the restart: state %s ip %v, want archived without address", got.State, got.IP)
			}
			e.checkConsistent()
		})
	}
	e.t = t
}

// TestCrashPrune kills the appliance after retention deleted the old
// scheduled backup's snapshot and before its row went: recovery finishes
// the pruning, keeping the new backup.
func TestCrashPrune(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("pruned", 1000*model.Credit, 1)
	vm := e.vm(acct.ID)
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	e.advance(24 * time.Hour)
	old, err := e.a.Backups(ctx, vm.ID)
	if err != nil || len(old) != 1 {
		t.Fatalf("after a day: %d backups (%v), want 1", len(old), err)
	}
	e.crashAt("backup:pruned", "advance 24h0m0s")
	o := e.recoveredOp(model.OpBackup)
	if o.State != model.OpDone {
		t.Errorf("backup left %s", o.State)
	}
	bks, _ := e.a.Backups(ctx, vm.ID)
	if len(bks) != 1 || bks[0].ID != o.BackupID || bks[0].ID == old[0].ID {
		t.Errorf("after the restart: backups %+v; want only the new %s", bks, o.BackupID)
	}
	e.checkConsistent()
}

// TestCrashSchedulerBatch kills the appliance in the middle of a daily pass
// that backs up several VMs in one batch: after the first VM's snapshot
// (the others are not taken yet), after every snapshot of the batch and
// before their records, and after the batch's pruning and before its rows
// went. Each backup is recovered alone: a snapshot taken is kept, one not
// taken is rolled back and taken at the next pass, pruning planned is
// finished, and nothing is left unfinished or inconsistent.
func TestCrashSchedulerBatch(t *testing.T) {
	for _, step := range []string{"snapshot", "saved", "pruned"} {
		t.Run("backup:"+step, func(t *testing.T) {
			e := newEnv(t, envOptions{})
			ctx := context.Background()
			acct := e.account("batch", 1000*model.Credit, 1)
			var vms []model.VM
			for range 4 {
				vm := e.vm(acct.ID)
				if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
					t.Fatal(err)
				}
				vms = append(vms, vm)
			}
			e.advance(24 * time.Hour) // one scheduled backup each
			// All due at once (as after a day the box was off), so that
			// one pass backs them up in one batch.
			day := e.clk.Now()
			if err := e.st.Update(ctx, func(tx *store.Tx) error {
				for _, vm := range vms {
					cur, err := tx.VM(vm.ID)
					if err != nil {
						return err
					}
					cur.NextBackupAt = day.Add(time.Hour)
					if err := tx.PutVM(cur); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			e.crashAt("backup:"+step, "advance 2h0m0s")
			ops, err := e.a.Operations(ctx, OpFilter{Running: true})
			if err != nil || len(ops) != 0 {
				t.Fatalf("after the restart: operations still running %+v (%v)", ops, err)
			}
			kept := 0
			for _, vm := range vms {
				bks, _ := e.a.Backups(ctx, vm.ID)
				if len(bks) == 0 {
					t.Fatalf("%s lost its backups in the crash", vm.ID)
				}
				if bks[0].TakenAt.After(day) {
					kept++
				}
			}
			// At "snapshot" the first VM's snapshot is taken; at the
			// later steps every one is.
			if want := map[string]int{"snapshot": 1, "saved": 4, "pruned": 4}[step]; kept != want {
				t.Errorf("crash at %s: %d of 4 VMs kept the day's backup, want %d", step, kept, want)
			}
			e.checkConsistent()
			// The next pass takes what was rolled back; retention then
			// keeps one scheduled backup each.
			e.advance(time.Minute)
			e.advance(24 * time.Hour)
			for _, vm := range vms {
				bks, _ := e.a.Backups(ctx, vm.ID)
				if len(bks) != 1 || !bks[0].TakenAt.After(day.Add(2*time.Hour)) {
					t.Errorf("%s a day after the crash: backups %+v, want one from that day", vm.ID, bks)
				}
			}
			e.checkConsistent()
		})
	}
}
