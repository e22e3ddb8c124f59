package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
)

// TestVMsOutliveTheDaemon: with superjoltd supervising QEMU itself (no
// systemd), a restart, a kill -9 of the daemon and an upgrade to another
// superjoltd binary leave every guest running: the same QEMU process, the
// same boot id, its network still answering, and a backup right after is
// frozen (the new daemon reconnected to the agent).
func TestVMsOutliveTheDaemon(t *testing.T) {
	needVMs(t)
	ns := newNetns(t, "sjsup")
	d := startDaemonIn(t, ns, nil, "--clock=manual", "--supervisor=self")
	a := okJSON[model.Account](t, d, "account", "create", "keep", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "keep-1")
	pid := d.runningVMs()[vm.ID]
	if pid == 0 {
		t.Fatalf("no QEMU of %s in the run directory", vm.ID)
	}
	d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo kept > /data/mark")

	same := func(t *testing.T, after string) {
		t.Helper()
		got := okJSON[model.VM](t, d, "vm", "show", vm.ID)
		if got.State != model.StateRunning || got.BootID != vm.BootID {
			t.Fatalf("after %s: %s with boot id %s, want running with %s (no reboot)", after, got.State, got.BootID, vm.BootID)
		}
		if now := d.runningVMs()[vm.ID]; now != pid {
			t.Fatalf("after %s: QEMU pid %d, want the same %d", after, now, pid)
		}
		bk := okJSON[model.Backup](t, d, "backup", "create", vm.ID)
		if bk.Consistency != model.Frozen {
			t.Fatalf("after %s: a backup is %s, want frozen (the agent was reconnected)", after, bk.Consistency)
		}
		if out := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/data/mark"); out != "kept\n" {
			t.Fatalf("after %s: the guest reads %q", after, out)
		}
		if out := d.ok(t, "vm", "exec", vm.ID, "--", "ip", "-4", "addr"); !strings.Contains(out, vm.IP.String()) {
			t.Fatalf("after %s: the guest lost its address %s:\n%s", after, vm.IP, out)
		}
	}

	if out := d.ok(t, "vm", "show", vm.ID); !regexp.MustCompile(`(?m)^Usage:\s+\S+ \S*B memory, \S+ CPU time .*from its QEMU process$`).MatchString(out) {
		t.Errorf("vm show of a running VM does not show its usage:\n%s", out)
	}
	t.Run("logs", func(t *testing.T) {
		// vm logs -f follows the guest's console as it is written.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		follow := exec.CommandContext(ctx, filepath.Join(d.bin, "superjolt"), "vm", "logs", vm.ID, "-n", "5", "-f")
		follow.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+d.socket)
		out := &syncBuf{}
		follow.Stdout = out
		if err := follow.Start(); err != nil {
			t.Fatal(err)
		}
		d.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo logs-marker > /dev/console")
		for !strings.Contains(out.String(), "console: logs-marker") {
			if ctx.Err() != nil {
				t.Fatalf("vm logs -f did not show what the guest wrote on its console:\n%s", out)
			}
			time.Sleep(100 * time.Millisecond)
		}
		cancel()
		follow.Wait()
	})
	t.Run("restart", func(t *testing.T) {
		start := time.Now()
		d.restart(t)
		t.Logf("restart until the API answered: %v", time.Since(start).Round(time.Millisecond))
		same(t, "a restart")
	})
	t.Run("kill -9", func(t *testing.T) {
		_ = d.cmd.Process.Signal(syscall.SIGKILL)
		<-d.exited
		if d.runningVMs()[vm.ID] != pid {
			t.Fatal("the guest's QEMU died with the daemon")
		}
		d.start(t)
		same(t, "kill -9 of superjoltd")
		if evs := d.ok(t, "events", "-n", "200"); strings.Contains(evs, "vm.takeover_failed") || strings.Contains(evs, "vm.stray") {
			t.Errorf("events after the takeover:\n%s", evs)
		}
	})
	t.Run("upgrade", func(t *testing.T) {
		// Another superjoltd binary, as an upgrade installs it: built with
		// another version, which the new daemon reports.
		newBin := t.TempDir()
		for _, b := range []string{"superjolt", "superjolt-agent"} {
			if out, err := exec.Command("cp", filepath.Join(d.bin, b), newBin).CombinedOutput(); err != nil {
				t.Fatalf("cp: %v\n%s", err, out)
			}
		}
		build := exec.Command("go", "build", "-ldflags", "-X github.com/superjolt/superjolt/version.version=upgraded-e2e", "-o", newBin+"/", "github.com/superjolt/superjolt/cmd/superjoltd")
		if out, err := build.CombinedOutput(); err != nil {
			t.Fatalf("build the new superjoltd: %v\n%s", err, out)
		}
		d.stop(t)
		d.bin = newBin
		d.start(t)
		if out := d.ok(t, "status"); !strings.Contains(out, "upgraded-e2e") {
			t.Fatalf("the new superjoltd does not run:\n%s", out)
		}
		same(t, "an upgrade")
	})
}

// TestCrashedVMBootsAgain: a guest whose QEMU is killed (kill -9, as the
// OOM killer would) is noticed at once, recorded with the reason, and
// booted again with a new boot id, after a back-off that grows; killed
// again and again, it is left stopped, saying why.
func TestCrashedVMBootsAgain(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual", "--network=off")
	a := okJSON[model.Account](t, d, "account", "create", "crashy", "--balance", "100")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "crash-1")
	pid := d.runningVMs()[vm.ID]
	if pid == 0 {
		t.Fatalf("no QEMU of %s", vm.ID)
	}
	killed := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	var noticed time.Duration
	for deadline := time.Now().Add(10 * time.Second); noticed == 0; time.Sleep(100 * time.Millisecond) {
		if out := d.ok(t, "events", "-n", "50"); strings.Contains(out, "vm.crashed") && strings.Contains(out, "signal") {
			noticed = time.Since(killed)
		} else if time.Now().After(deadline) {
			t.Fatalf("no vm.crashed event naming the signal within 10 s of kill -9:\n%s", out)
		}
	}
	t.Logf("kill -9 of QEMU -> vm.crashed event in %v", noticed.Round(time.Millisecond))
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		got := okJSON[model.VM](t, d, "vm", "show", vm.ID)
		if got.State == model.StateRunning && got.BootID != "" && got.BootID != vm.BootID {
			t.Logf("running again with a new boot id %v after the kill", time.Since(killed).Round(time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not booted again 3 minutes after its crash: %+v", got)
		}
	}
	if out := d.ok(t, "vm", "exec", vm.ID, "--", "true"); out != "" {
		t.Errorf("exec after the crash: %q", out)
	}

	// A crash loop: four more crashes are booted again (1 s, 2 s, 4 s, 8 s
	// and 16 s after each); the sixth within ten minutes is not.
	boot := okJSON[model.VM](t, d, "vm", "show", vm.ID).BootID
	for i := 2; i <= appliance.DefaultCrashLimit+1; i++ {
		pid := d.runningVMs()[vm.ID]
		if pid == 0 {
			t.Fatalf("crash %d: no QEMU of %s", i, vm.ID)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		if i > appliance.DefaultCrashLimit {
			break
		}
		for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
			got := okJSON[model.VM](t, d, "vm", "show", vm.ID)
			if got.State == model.StateRunning && got.BootID != boot {
				boot = got.BootID
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("crash %d: not booted again within 3 minutes: %+v", i, got)
			}
		}
	}
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(250 * time.Millisecond) {
		got := okJSON[model.VM](t, d, "vm", "show", vm.ID)
		if got.State == model.StateStopped && got.StopReason == model.StopCrashLoop {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d crashes: %+v, want stopped after a crash loop", appliance.DefaultCrashLimit+1, got)
		}
	}
	if out := d.ok(t, "vm", "show", vm.ID); !strings.Contains(out, "kept crashing") {
		t.Errorf("vm show does not say why it stopped:\n%s", out)
	}
	if out := d.ok(t, "events", "-n", "20"); !strings.Contains(out, "vm.crash_loop") || !strings.Contains(out, "left stopped") {
		t.Errorf("no vm.crash_loop event:\n%s", out)
	}
	t.Logf("crash loop: left stopped %v after the first kill", time.Since(killed).Round(time.Second))
}

// syncBuf is a bytes.Buffer that a process writes while the test reads.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
