package appliance

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/vmm"
)

// TestRealBackupRestore: with a real guest, data written before a frozen
// backup comes back after a restore, data written after it is gone, the
// guest boots with a new boot id, keeps its id, address, ports and
// domains; a second operation meanwhile is refused; a stopped VM keeps
// billing; the daemon's restart boots the VM again.
func TestRealBackupRestore(t *testing.T) {
	e := newEnv(t, envOptions{realVMs: true})
	ctx := context.Background()
	acct := e.account("restorer", 1000*model.Credit, 0)
	vm := e.vm(acct.ID)
	if vm.State != model.StateRunning || vm.BootID == "" || !vm.IP.IsValid() {
		t.Fatalf("created VM: %+v", vm)
	}
	if _, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "tcp", Number: 443}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.AddDomain(ctx, vm.ID, "app.example.com", 0); err != nil {
		t.Fatal(err)
	}
	e.checkConfined(vm.ID)
	// The guest is called by the VM's name (its id when created without one).
	if got := strings.TrimSpace(e.guestExec(vm.ID, "hostname")); got != vm.Name {
		t.Errorf("guest hostname %q, want the VM's name %q", got, vm.Name)
	}
	e.guestExec(vm.ID, "echo before > /data/f && sync")
	// Its QEMU process's use: memory it holds, CPU on the first sample
	// (since it started) and on the next (since the first).
	for range 2 {
		u := e.usageOf(vm.ID)
		if u == nil || u.MemoryBytes <= 0 || u.CPUPercent < 0 {
			t.Fatalf("VMUsage of running %s = %+v, want memory > 0 and CPU >= 0", vm.ID, u)
		}
		t.Logf("VMUsage of %s: %d MiB, %.1f%% CPU", vm.ID, u.MemoryBytes>>20, u.CPUPercent)
		time.Sleep(minCPUWindow)
	}

	bk, err := e.a.CreateBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	// The backup, a snapshot of the VM's closed directory, is closed too.
	if p, err := e.pool.BackupPath(vm.ID, bk.ID); err != nil {
		t.Fatal(err)
	} else if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("backup directory %s: %v, %v; want mode 0700", p, fi.Mode(), err)
	}
	if bk.Consistency != model.Frozen || bk.Kind != model.OnDemand || bk.VMID != vm.ID {
		t.Fatalf("backup: %+v, want an on-demand frozen backup of %s", bk, vm.ID)
	}
	// Writing works again: the guest was thawed.
	e.guestExec(vm.ID, "echo after > /data/f && echo more > /data/g && sync")

	// Another operation on the VM meanwhile is refused, naming it.
	const holder = "op-0000000000"
	if err := e.a.lock(vm.ID, holder); err != nil {
		t.Fatal(err)
	}
	_, err = e.a.RestoreVM(ctx, vm.ID, bk.ID)
	wantCode(t, err, "conflict")
	if !strings.Contains(err.Error(), "superjolt op show "+holder) {
		t.Errorf("refusal does not name the running operation: %v", err)
	}
	e.a.unlock(vm.ID, holder)

	got, err := e.a.ResolveBackup(ctx, vm.ID, "latest", time.UTC)
	if err != nil || got.ID != bk.ID {
		t.Fatalf("ResolveBackup(latest) = %v, %v; want %s", got.ID, err, bk.ID)
	}
	if got, err := e.a.ResolveBackup(ctx, vm.ID, t0.Format("2006-01-02"), time.UTC); err != nil || got.ID != bk.ID {
		t.Fatalf("ResolveBackup(today) = %v, %v; want %s", got.ID, err, bk.ID)
	}
	_, err = e.a.ResolveBackup(ctx, vm.ID, "yesterday", time.UTC)
	wantCode(t, err, "not_found")

	restored, err := e.a.RestoreVM(ctx, vm.ID, bk.ID)
	if err != nil {
		t.Fatal(err)
	}
	if restored.BootID == "" || restored.BootID == vm.BootID {
		t.Errorf("boot id after restore %q, before %q: want a new one", restored.BootID, vm.BootID)
	}
	if restored.ID != vm.ID || restored.IP != vm.IP || len(restored.Ports) != 1 || len(restored.Domains) != 1 || restored.State != model.StateRunning {
		t.Errorf("restore changed the VM: %+v", restored)
	}
	e.checkConfined(vm.ID) // the restored disk, a copy made by root, was handed to QEMU's user again
	if out := e.guestExec(vm.ID, "cat /data/f; test -e /data/g && echo g-survived; true"); out != "before\n" {
		t.Errorf("after the restore the guest reads %q, want the backed-up %q", out, "before\n")
	}
	op := lastOp(t, e, model.OpRestore)
	if op.State != model.OpDone || op.BackupID != bk.ID {
		t.Errorf("restore operation: %+v", op)
	}

	// Stopped VMs keep billing.
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if u := e.usageOf(vm.ID); u != nil {
		t.Errorf("VMUsage lists stopped %s: %+v", vm.ID, u)
	}
	e.a.usageMu.Lock()
	if n := len(e.a.samples); n != 0 {
		t.Errorf("%d usage samples kept after the only VM process ended", n)
	}
	e.a.usageMu.Unlock()
	before, _ := e.a.Account(ctx, acct.ID)
	stoppedAt := e.clk.Now()
	e.advance(time.Hour)
	after, _ := e.a.Account(ctx, acct.ID)
	rate := model.DefaultTiers()[0].RatePerHour
	if spent := before.Balance - after.Balance; spent < rate-rate/100 || spent > rate {
		t.Errorf("a stopped VM spent %d in an hour, want about %d", spent, rate)
	}
	ledger, _ := e.a.Ledger(ctx, acct.ID, 10)
	if len(ledger) == 0 || ledger[0].VMID != vm.ID || !ledger[0].PeriodEnd.After(stoppedAt) {
		t.Errorf("no charge for the stopped VM after it stopped: %+v", ledger)
	}

	// A restore of a stopped VM rewinds the disk; the next start sees it.
	if _, err := e.a.StartVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	e.guestExec(vm.ID, "echo third > /data/f && sync")
	// The daemon going away and coming back boots the VM again.
	e.reopen()
	vm2 := e.getVM(vm.ID)
	if vm2.State != model.StateRunning || vm2.BootID == "" || vm2.BootID == restored.BootID {
		t.Errorf("after a restart: %+v", vm2)
	}
	e.checkConfined(vm.ID)
	if out := e.guestExec(vm.ID, "cat /data/f"); out != "third\n" {
		t.Errorf("after a restart the guest reads %q", out)
	}
	e.checkConsistent()
}

// checkConfined checks that the QEMU of a running VM runs as a user of its
// own (not root) under its seccomp sandbox, that its disk belongs to that
// user alone and that the VM's directory is closed to all but root.
func (e *env) checkConfined(id string) {
	e.t.Helper()
	e.a.mu.Lock()
	mc := e.a.machines[id]
	e.a.mu.Unlock()
	if mc == nil {
		e.t.Fatalf("%s has no machine", id)
	}
	q, ok := mc.m.(qemuMachine)
	if !ok {
		e.t.Fatalf("%s runs on %T, not QEMU", id, mc.m)
	}
	uid := q.UID()
	if os.Geteuid() == 0 && (uid < vmm.UIDBase || uid >= vmm.UIDBase+vmm.UIDCount) {
		e.t.Errorf("QEMU of %s runs as uid %d, want one of its own from the range", id, uid)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", q.PID()))
	if err != nil {
		e.t.Fatal(err)
	}
	for _, want := range []string{fmt.Sprintf("\nUid:\t%d\t%d\t%d\t%d\n", uid, uid, uid, uid), "\nSeccomp:\t2\n", "\nNoNewPrivs:\t1\n"} {
		if os.Geteuid() == 0 && !strings.Contains(string(status), want) {
			e.t.Errorf("/proc/%d/status of %s's QEMU lacks %q", q.PID(), id, want)
		}
	}
	dir, err := e.pool.VMPath(id)
	if err != nil {
		e.t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 0 {
		e.t.Errorf("%s: %v, %v; want root's, mode 0700", dir, fi.Mode(), err)
	}
	disk := filepath.Join(dir, RootfsFile)
	fi, err := os.Stat(disk)
	if err != nil {
		e.t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid || fi.Mode().Perm() != 0o600 {
		e.t.Errorf("%s: owner %d mode %v, want %d and 0600", disk, st.Uid, fi.Mode().Perm(), uid)
	}
}

// usageOf returns VMUsage's entry for VM id, or nil.
func (e *env) usageOf(id string) *model.VMUsage {
	e.t.Helper()
	us, err := e.a.VMUsage(context.Background())
	if err != nil {
		e.t.Fatalf("VMUsage: %v", err)
	}
	for i := range us {
		if us[i].VMID == id {
			return &us[i]
		}
	}
	return nil
}

// lastOp returns the newest operation of kind, found through the
// op.done / op.failed events.
func lastOp(t *testing.T, e *env, kind model.OpKind) model.Operation {
	t.Helper()
	evs, err := e.a.Events(context.Background(), 0, model.MaxListLimit)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(evs) - 1; i >= 0; i-- {
		ev := evs[i]
		if strings.HasPrefix(ev.Type, "op.") && strings.HasPrefix(ev.Message, string(kind)+" of ") {
			o, err := e.a.Operation(context.Background(), ev.Object)
			if err != nil {
				t.Fatal(err)
			}
			return o
		}
	}
	t.Fatalf("no %s operation in the events", kind)
	return model.Operation{}
}
