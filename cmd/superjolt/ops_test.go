package main

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// TestCLIOperationsGoOnWithoutTheCLI: an operation belongs to superjoltd
// once it is accepted. For each long operation (create, backup, restore,
// destroy, resume), the CLI that started it is interrupted (SIGINT, as
// Ctrl-C) and, in a second round, killed (SIGKILL, as a dropped SSH
// session) while the operation is under way: the operation still ends
// done, `op show` tells it, and the VM is where it should be. The daemon
// holds each operation a few seconds at one of its steps (SlowEnv) so that
// the signal lands while it runs.
func TestCLIOperationsGoOnWithoutTheCLI(t *testing.T) {
	needVMs(t)
	d := startDaemonEnv(t, []string{appliance.SlowEnv + "=create:subvolume,backup:frozen,restore:stopped,destroy:stopped"}, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "detach", "--balance", "100")
	c := api.NewClient(d.socket)
	defer c.Close()

	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			op := d.detach(t, c, sig, model.OpCreate, "", "vm", "create", "--account", a.ID, "--tier", "nano")
			vm := okJSON[model.VM](t, d, "vm", "show", op.VMID)
			if vm.State != model.StateRunning || vm.BootID == "" {
				t.Fatalf("after its create went on alone, %s is %s with boot id %q; want running", vm.ID, vm.State, vm.BootID)
			}

			op = d.detach(t, c, sig, model.OpBackup, vm.ID, "backup", "create", vm.ID)
			bk := okJSON[model.Backup](t, d, "backup", "show", op.BackupID)
			if bk.VMID != vm.ID || bk.Consistency != model.Frozen {
				t.Fatalf("the backup that went on alone is %+v, want a frozen backup of %s", bk, vm.ID)
			}

			d.detach(t, c, sig, model.OpRestore, vm.ID, "backup", "restore", vm.ID, bk.ID, "--yes")
			restored := okJSON[model.VM](t, d, "vm", "show", vm.ID)
			if restored.State != model.StateRunning || restored.BootID == "" || restored.BootID == vm.BootID || restored.IP != vm.IP {
				t.Fatalf("after its restore went on alone, %s is %s, boot id %q (was %q), IP %s (was %s); want running on a new boot, same IP",
					vm.ID, restored.State, restored.BootID, vm.BootID, restored.IP, vm.IP)
			}

			// Old enough for the graveyard.
			okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "2h")
			d.detach(t, c, sig, model.OpDestroy, vm.ID, "vm", "destroy", vm.ID, "--yes")
			if got := okJSON[model.VM](t, d, "vm", "show", vm.ID); got.State != model.StateGraveyard {
				t.Fatalf("after its destroy went on alone, %s is %s, want graveyard", vm.ID, got.State)
			}

			d.detach(t, c, sig, model.OpResume, vm.ID, "vm", "resume", vm.ID)
			if got := okJSON[model.VM](t, d, "vm", "show", vm.ID); got.State != model.StateRunning || got.BootID == "" {
				t.Fatalf("after its resume went on alone, %s is %s, want running", vm.ID, got.State)
			}
		})
	}
	if ops := okJSON[[]model.Operation](t, d, "op", "list", "--running"); len(ops) != 0 {
		t.Fatalf("operations still running at the end: %+v", ops)
	}
}

// detach runs the CLI with args, waits until the operation of kind it
// starts (on vmID, or any VM when "") is under way, sends sig to the CLI,
// and checks what the CLI said: with SIGINT, exit 130 and how to follow
// the operation. It then follows the operation with `op show --follow`
// and returns it, failing the test unless it ended done.
func (d *daemon) detach(t *testing.T, c *api.Client, sig syscall.Signal, kind model.OpKind, vmID string, args ...string) model.Operation {
	t.Helper()
	cmd := exec.Command(filepath.Join(d.bin, "superjolt"), append([]string{"--socket", d.socket}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer cmd.Process.Kill()

	var op model.Operation
	deadline := time.Now().Add(2 * time.Minute)
	for op.ID == "" {
		ops, err := c.Operations(context.Background(), api.OpFilter{VMID: vmID, Running: true})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ops {
			if o.Kind == kind {
				op = o
			}
		}
		select {
		case err := <-exited:
			t.Fatalf("superjolt %s ended (%v) before its %s operation was seen under way\nstdout: %s\nstderr: %s",
				strings.Join(args, " "), err, kind, stdout.String(), stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %s operation under way 2 minutes after superjolt %s", kind, strings.Join(args, " "))
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The operation is recorded before its answer reaches the CLI; give the
	// answer a moment, well inside the daemon's hold (SlowFor).
	time.Sleep(300 * time.Millisecond)
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-exited:
	case <-time.After(30 * time.Second):
		t.Fatalf("superjolt %s did not end within 30 s of %s", strings.Join(args, " "), sig)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("superjolt %s after %s: %v, want it to end on the signal", strings.Join(args, " "), sig, err)
	}
	switch sig {
	case syscall.SIGINT:
		want := op.ID + " goes on; follow it with `superjolt op show " + op.ID + " --follow`"
		if ee.ExitCode() != exitCancelled || !strings.Contains(stderr.String(), want) {
			t.Fatalf("superjolt %s after Ctrl-C: exit %d, stderr %q; want exit %d and %q",
				strings.Join(args, " "), ee.ExitCode(), stderr.String(), exitCancelled, want)
		}
	case syscall.SIGKILL:
		if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
			t.Fatalf("superjolt %s: %v, want killed", strings.Join(args, " "), err)
		}
	}
	final := okJSON[model.Operation](t, d, "op", "show", op.ID, "--follow")
	if final.State != model.OpDone || final.Kind != kind {
		t.Fatalf("%s (%s) ended %s: %s; want done", op.ID, kind, final.State, final.Error)
	}
	if out := d.ok(t, "op", "show", op.ID); !hasField(out, "State:", "done") {
		t.Fatalf("op show %s:\n%s", op.ID, out)
	}
	return final
}

// hasField reports whether out, as `fields` prints it, has a line
// starting with label whose value is want.
func hasField(out, label, want string) bool {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(line, label); ok && strings.TrimSpace(rest) == want {
			return true
		}
	}
	return false
}
