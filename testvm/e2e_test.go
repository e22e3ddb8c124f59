package testvm_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/guest"
	"github.com/superjolt/superjolt/testvm"
)

func ctxT(t testing.TB, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// execAsync starts an exec and returns a channel with its outcome.
func execAsync(c *guest.Client, script string) <-chan error {
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		res, err := c.Exec(ctx, guest.ExecRequest{Path: "sh", Args: []string{"-c", script}, Timeout: 55 * time.Second})
		if err == nil && res.ExitCode != 0 {
			err = errors.New("exit " + string(res.Stderr))
		}
		done <- err
	}()
	return done
}

// TestFreeze boots one guest and checks freeze and thaw against real writes.
func TestFreeze(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	c := vm.Client()

	t.Run("write while frozen completes after thaw", func(t *testing.T) {
		res, err := c.Freeze(ctxT(t, 30*time.Second), 60*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Filesystems) == 0 || res.Filesystems[0] != "/" {
			t.Errorf("froze %v, want / among them", res.Filesystems)
		}
		write := execAsync(c, "echo frozen-write > /data/w")
		select {
		case err := <-write:
			c.Thaw(ctxT(t, 10*time.Second))
			t.Fatalf("write finished while frozen (err %v)", err)
		case <-time.After(1500 * time.Millisecond):
		}
		// The agent still answers while a request is stuck on the frozen filesystem.
		if _, err := c.Ping(ctxT(t, 5*time.Second)); err != nil {
			t.Errorf("ping while a write is blocked: %v", err)
		}
		if err := c.Thaw(ctxT(t, 10*time.Second)); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-write:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("write did not finish after thaw")
		}
		if got := vm.Exec(t, "cat", "/data/w"); got != "frozen-write\n" {
			t.Errorf("/data/w = %q", got)
		}
	})

	t.Run("agent thaws by itself at the deadline", func(t *testing.T) {
		// Measured on the guest's own clock, which is the one the agent's
		// deadline runs on: under TCG on a loaded host the guest's clock
		// and the host's can drift apart by more than a second.
		const deadline = 2 * time.Second
		before, err := c.Ping(ctxT(t, 10*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Freeze(ctxT(t, 30*time.Second), deadline); err != nil {
			t.Fatal(err)
		}
		done := make(chan guest.ExecResult, 1)
		failed := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			res, err := c.Exec(ctx, guest.ExecRequest{Path: "sh",
				Args: []string{"-c", "echo late > /data/late && cat /proc/uptime"}, Timeout: 55 * time.Second})
			if err == nil && res.ExitCode != 0 {
				err = errors.New("exit " + string(res.Stderr))
			}
			if err != nil {
				failed <- err
				return
			}
			done <- res
		}()
		var res guest.ExecResult
		select {
		case res = <-done:
		case err := <-failed:
			t.Fatal(err)
		case <-time.After(30 * time.Second):
			c.Thaw(ctxT(t, 10*time.Second))
			t.Fatal("the agent did not thaw by itself")
		}
		after, err := parseUptime(string(res.Stdout))
		if err != nil {
			t.Fatal(err)
		}
		// The auto-thaw is armed after `before` was read, so the write can
		// only have finished at least a deadline later (less /proc/uptime's
		// 10 ms resolution).
		if blocked := after - before.Uptime; blocked < deadline-20*time.Millisecond {
			t.Errorf("write finished %v (guest clock) after the freeze began, under its %v deadline: the filesystem was not frozen", blocked, deadline)
		}
		if err := c.Thaw(ctxT(t, 10*time.Second)); !errors.Is(err, guest.ErrNotFrozen) {
			t.Errorf("thaw after the deadline: %v, want ErrNotFrozen", err)
		}
	})
}

// parseUptime reads the first field of /proc/uptime ("12.34 5.67").
func parseUptime(s string) (time.Duration, error) {
	f := strings.Fields(s)
	if len(f) == 0 {
		return 0, errors.New("empty /proc/uptime output")
	}
	return time.ParseDuration(f[0] + "s")
}

// TestUnresponsiveGuest: a guest whose vCPUs are stopped never answers; the host call must fail within
// its timeout, and work again once the guest runs.
func TestUnresponsiveGuest(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	q := vm.QMP()
	if _, err := q.Execute(ctxT(t, 10*time.Second), "stop", nil); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := vm.Client().Ping(ctxT(t, 2*time.Second))
	took := time.Since(start)
	if err == nil {
		t.Fatal("a stopped guest answered a ping")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if took > 3*time.Second {
		t.Errorf("ping to a stopped guest took %v, timeout was 2s", took)
	}
	if _, err := q.Execute(ctxT(t, 10*time.Second), "cont", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := vm.Client().Ping(ctxT(t, 20*time.Second)); err != nil {
		t.Errorf("ping after cont: %v", err)
	}
}

// TestGuestRebootKeepsMachine: with set-action reboot=reset, a guest reboot resets the machine instead of
// ending QEMU (-no-reboot), and the agent comes back with a new boot id on the same connection.
func TestGuestRebootKeepsMachine(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	c := vm.Client()
	first := vm.BootID()
	start := time.Now()
	if err := c.Reboot(ctxT(t, 10*time.Second)); err != nil && !errors.Is(err, guest.ErrClosed) {
		t.Fatal(err)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		res, err := c.Ping(ctxT(t, 2*time.Second))
		if err == nil && res.BootID != first {
			t.Logf("rebooted in %v (guest uptime %v)", time.Since(start), res.Uptime)
			// The driver follows the reset too: it says so, with the new boot id.
			select {
			case <-vm.Rebooted():
			case <-time.After(30 * time.Second):
				t.Fatal("the driver did not report the reboot on Rebooted")
			}
			if got := vm.BootID(); got != res.BootID {
				t.Errorf("BootID() = %q after the reboot, the agent says %q", got, res.BootID)
			}
			if vm.Status() != vmm.StatusRunning {
				t.Errorf("status %v after the reboot, want running", vm.Status())
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new boot id after reboot (last: %+v, %v)\n%s", res, err, vm.Console())
		}
		if vm.Status() == vmm.StatusStopped {
			t.Fatalf("QEMU exited on guest reboot\n%s", vm.Console())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestGuestExitReasons: the driver tells a guest that powered itself off (busybox `poweroff`, which
// signals the agent as PID 1) from a QEMU killed unasked.
func TestGuestExitReasons(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	_, _ = vm.Client().Exec(ctxT(t, 10*time.Second), guest.ExecRequest{Path: "poweroff"})
	if err := vm.Wait(ctxT(t, 60*time.Second)); err != nil {
		t.Fatalf("Wait after poweroff inside: %v\n%s", err, vm.Console())
	}
	if got := vm.Exit(); got != vmm.ExitGuestPowerOff {
		t.Errorf("Exit() after poweroff inside = %v, want %v", got, vmm.ExitGuestPowerOff)
	}

	vm = testvm.Boot(t, testvm.Options{})
	if err := vm.Kill(); err != nil {
		t.Fatal(err)
	}
	if got := vm.Exit(); got != vmm.ExitUnasked {
		t.Errorf("Exit() after a kill = %v, want %v", got, vmm.ExitUnasked)
	}
}

// TestVsockLoopback runs the agent's vsock selftest inside the guest over CID 1 (vsock_loopback): this
// host has no /dev/vhost-vsock, so this is where vsock runs for real here.
func TestVsockLoopback(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	out := vm.Exec(t, "/sbin/superjolt-agent", "selftest", "vsock")
	if !strings.HasPrefix(out, "OK vsock boot_id="+vm.BootID()) {
		t.Errorf("selftest said %q, want OK with boot id %s", out, vm.BootID())
	}
}

// TestVsockFromHost talks to the agent over vhost-vsock, where the host has it.
func TestVsockFromHost(t *testing.T) {
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		t.Skip("host has no /dev/vhost-vsock (modprobe vhost_vsock): host-to-guest vsock not testable here")
	}
	vm := testvm.Boot(t, testvm.Options{Transport: vmm.TransportVsock})
	if vm.Transport() != vmm.TransportVsock {
		t.Fatalf("transport %q", vm.Transport())
	}
	if got := strings.TrimSpace(vm.Exec(t, "uname", "-r")); got != vm.Image.KernelRelease {
		t.Errorf("uname -r over vsock = %q", got)
	}
}

// TestKVMBoot boots under KVM where the driver's probe says KVM works, so that a probe that passes on
// a KVM which cannot run real guests is caught.
func TestKVMBoot(t *testing.T) {
	if h := vmm.ProbeHost(); !h.KVM {
		t.Skipf("no working KVM here (%v): guests run under TCG", h.KVMError)
	}
	vm := testvm.Boot(t, testvm.Options{Accel: vmm.AccelKVM})
	if vm.Accel() != vmm.AccelKVM {
		t.Errorf("booted with %q", vm.Accel())
	}
}

// TestTwoVMsInParallel boots two guests at once on this 2-core machine.
func TestTwoVMsInParallel(t *testing.T) {
	testvm.Require(t)
	var mu sync.Mutex
	ids := map[string]bool{}
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"a", "b"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				vm := testvm.Boot(t, testvm.Options{})
				if out := vm.Exec(t, "sh", "-c", "echo "+name+" > /data/n; cat /data/n"); out != name+"\n" {
					t.Errorf("guest %s read %q", name, out)
				}
				mu.Lock()
				ids[vm.BootID()] = true
				mu.Unlock()
			})
		}
	})
	if len(ids) != 2 {
		t.Errorf("boot ids %v, want two different ones", ids)
	}
}
