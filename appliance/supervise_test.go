package appliance

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// The stub stands in for VM processes here: what is tested is the
// appliance's bookkeeping of processes that outlive it and of crashes.
// The real QEMU side is TestVMsOutliveTheDaemon and TestCrashedVMBootsAgain
// (cmd/superjolt), and vmm's attach tests.

func findEvent(evs []model.Event, typ string) (model.Event, bool) {
	for _, ev := range evs {
		if ev.Type == typ {
			return ev, true
		}
	}
	return model.Event{}, false
}

// TestRestartTakesOverVMs: an appliance that stops lets its VMs run; the
// next one takes over the running ones without booting them (same boot
// id, no launch), and ends a process the store does not say runs.
func TestRestartTakesOverVMs(t *testing.T) {
	e := newEnv(t, envOptions{})
	hv := e.hv.(*stubHypervisor)
	ctx := context.Background()
	acct := e.account("keep", 100*model.Credit, 0)
	run := e.vm(acct.ID)
	stopped := e.vm(acct.ID)
	if _, err := e.a.StopVM(ctx, stopped.ID); err != nil {
		t.Fatal(err)
	}
	// A process of the stopped VM that nobody should have left running.
	dir, _ := e.pool.VMPath(stopped.ID)
	if _, err := hv.Launch(ctx, ctx, MachineSpec{ID: stopped.ID, Kernel: filepath.Join(dir, KernelFile),
		Initrd: filepath.Join(dir, InitrdFile), Rootfs: filepath.Join(dir, RootfsFile)}); err != nil {
		t.Fatal(err)
	}
	launches := hv.launches

	e.restart()
	if got := e.getVM(run.ID); got.State != model.StateRunning || got.BootID != run.BootID {
		t.Errorf("after a restart %s is %s with boot %s, want running with the same %s", run.ID, got.State, got.BootID, run.BootID)
	}
	if hv.launches != launches || hv.attaches != 1 {
		t.Errorf("restart: %d launches and %d attaches, want no launch and 1 attach", hv.launches-launches, hv.attaches)
	}
	if !hv.isRunning(run.ID) {
		t.Error("the running VM's process was ended by the restart")
	}
	if hv.isRunning(stopped.ID) {
		t.Error("a process of a stopped VM was left running")
	}
	if ev, ok := findEvent(e.eventsAbout(stopped.ID), "vm.stray"); !ok || !strings.Contains(ev.Message, "ended") {
		t.Errorf("no vm.stray event saying the stray process was ended: %+v", e.eventsAbout(stopped.ID))
	}
	// The taken-over VM is supervised: its crash is noticed.
	hv.crash(run.ID)
	e.waitVM(run.ID, "its crash is noticed", func(vm model.VM) bool { return vm.BootID != run.BootID })
}

// waitVM polls the VM until ok holds (a hang guard of 10 s, not timing).
func (e *env) waitVM(id, what string, ok func(model.VM) bool) model.VM {
	e.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		vm := e.getVM(id)
		if ok(vm) {
			return vm
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("%s: %s is still %+v", what, id, vm)
		}
	}
}

// TestCrashPolicy: a VM whose process ends unasked is booted again, with
// an event saying why each time; after CrashLimit crashes within the
// window it is left stopped, saying so. A guest's own poweroff is not a
// crash: the VM stays stopped.
func TestCrashPolicy(t *testing.T) {
	e := newEnv(t, envOptions{crashBackoff: time.Millisecond})
	hv := e.hv.(*stubHypervisor)
	acct := e.account("crashy", 100*model.Credit, 0)
	vm := e.vm(acct.ID)

	boot := vm.BootID
	for i := 1; i <= DefaultCrashLimit; i++ {
		hv.crash(vm.ID)
		got := e.waitVM(vm.ID, "booted again after a crash", func(v model.VM) bool {
			return v.State == model.StateRunning && v.BootID != boot
		})
		boot = got.BootID
	}
	crashes := 0
	for _, ev := range e.eventsAbout(vm.ID) {
		if ev.Type == "vm.crashed" {
			crashes++
			if !strings.Contains(ev.Message, "exited unexpectedly") || !strings.Contains(ev.Message, "boots again in") {
				t.Errorf("vm.crashed says %q", ev.Message)
			}
		}
	}
	if crashes != DefaultCrashLimit {
		t.Errorf("%d vm.crashed events, want %d", crashes, DefaultCrashLimit)
	}

	hv.crash(vm.ID) // one too many within the window
	got := e.waitVM(vm.ID, "left stopped after a crash loop", func(v model.VM) bool { return v.State == model.StateStopped })
	if got.StopReason != model.StopCrashLoop || got.WantRunning {
		t.Errorf("after a crash loop: reason %q, wanted running %v", got.StopReason, got.WantRunning)
	}
	if ev, ok := findEvent(e.eventsAbout(vm.ID), "vm.crash_loop"); !ok || !strings.Contains(ev.Message, "left stopped") || !strings.Contains(ev.Message, "vm start") {
		t.Errorf("no vm.crash_loop event saying what to do: %+v", ev)
	}
	time.Sleep(50 * time.Millisecond) // longer than any back-off: nothing boots it
	if e.getVM(vm.ID).State != model.StateStopped {
		t.Error("a VM left stopped after its crash loop was booted again")
	}

	// A guest's poweroff: stopped, as the tenant asked; not booted again.
	if _, err := e.a.StartVM(context.Background(), vm.ID); err != nil {
		t.Fatal(err)
	}
	hv.powerOff(vm.ID)
	got = e.waitVM(vm.ID, "stopped by its guest", func(v model.VM) bool { return v.State == model.StateStopped })
	time.Sleep(50 * time.Millisecond)
	if got = e.getVM(vm.ID); got.State != model.StateStopped || got.StopReason != model.StopGuestPowerOff {
		t.Errorf("after a guest poweroff: %s (%s), want stopped, powered off from inside", got.State, got.StopReason)
	}
}

// TestHaltVM: the host's stop of a VM's unit shuts its guest down and
// leaves it stopped but wanted running, so that the next start boots it.
func TestHaltVM(t *testing.T) {
	e := newEnv(t, envOptions{})
	hv := e.hv.(*stubHypervisor)
	acct := e.account("host", 100*model.Credit, 0)
	vm := e.vm(acct.ID)
	got, err := e.a.HaltVM(context.Background(), vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.State != model.StateStopped || got.StopReason != model.StopHost || !got.WantRunning || hv.isRunning(vm.ID) {
		t.Fatalf("after HaltVM: %+v (process running: %v)", got, hv.isRunning(vm.ID))
	}
	e.restart()
	if got := e.getVM(vm.ID); got.State != model.StateRunning {
		t.Errorf("after the daemon's next start: %s, want running", got.State)
	}
}
