package vmm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
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

// newMachine returns a machine for the test image with its own disk and a deliberately long run
// directory (so that every test here also exercises the short socket directory).
func newMachine(t *testing.T, life context.Context, change func(*vmm.Config)) *vmm.QEMU {
	t.Helper()
	img := testvm.Require(t)
	disk := filepath.Join(t.TempDir(), "rootfs.img")
	if err := images.CopyDisk(disk, img.Rootfs); err != nil {
		t.Fatal(err)
	}
	cfg := vmm.Config{
		Name:      "vm-" + strings.ToLower(strings.ReplaceAll(t.Name(), "/", "-")),
		MemoryMiB: 192,
		Kernel:    img.Kernel,
		Initrd:    img.Initrd,
		Rootfs:    disk,
		RunDir:    filepath.Join(t.TempDir(), strings.Repeat("long-run-directory-", 6)),
		Logger:    slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo})),
	}
	if change != nil {
		change(&cfg)
	}
	m, err := vmm.New(life, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		pid := m.PID()
		if err := m.Kill(); err != nil {
			t.Errorf("kill: %v", err)
		}
		if pid != 0 && syscall.Kill(pid, 0) == nil {
			t.Errorf("qemu pid %d still alive after the test", pid)
		}
	})
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	defer func() { recover() }()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func qmpStatus(t *testing.T, m *vmm.QEMU) string {
	t.Helper()
	ret, err := m.QMP().Execute(ctxT(t, 10*time.Second), "query-status", nil)
	if err != nil {
		t.Fatal(err)
	}
	var st struct{ Status string }
	json.Unmarshal(ret, &st)
	return st.Status
}

// TestBootAndShutdown boots through the driver alone and checks what it leaves and cleans up.
func TestBootAndShutdown(t *testing.T) {
	m := newMachine(t, context.Background(), nil)
	if err := m.Wait(ctxT(t, time.Second)); !errors.Is(err, vmm.ErrNotRunning) {
		t.Errorf("Wait before Start: %v, want ErrNotRunning", err)
	}
	if err := m.Start(ctxT(t, 3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if m.Status() != vmm.StatusRunning || m.BootID() == "" || m.Agent() == nil {
		t.Fatalf("after Start: status %v, boot id %q, agent %v", m.Status(), m.BootID(), m.Agent())
	}
	if err := m.Start(ctxT(t, time.Minute)); !errors.Is(err, vmm.ErrAlreadyStarted) {
		t.Errorf("second Start: %v, want ErrAlreadyStarted", err)
	}
	if m.Accel() != vmm.AccelTCG && m.Accel() != vmm.AccelKVM || m.Transport() == "" {
		t.Errorf("accel %q transport %q", m.Accel(), m.Transport())
	}
	sock := m.AgentSocket()
	if m.Transport() == vmm.TransportSerial {
		if len(sock) > 107 || strings.HasPrefix(sock, m.Config().RunDir) {
			t.Errorf("agent socket %s: want a short path outside the long run dir", sock)
		}
	}
	pidFile, err := os.ReadFile(filepath.Join(m.Config().RunDir, "qemu.pid"))
	if err != nil || strings.TrimSpace(string(pidFile)) == "" {
		t.Errorf("pid file: %q, %v", pidFile, err)
	}
	if st := qmpStatus(t, m); st != "running" {
		t.Errorf("QMP status %q", st)
	}

	// The serial console is interactive (a shell of the guest's agent) and still logged.
	consoleSock := m.ConsoleSocket()
	conn, err := net.Dial("unix", consoleSock)
	if err != nil {
		t.Fatalf("console socket %q: %v", consoleSock, err)
	}
	out := make(chan string, 1)
	go func() {
		var got []byte
		buf := make([]byte, 4096)
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		for !bytes.Contains(got, []byte("hi-4")) {
			n, err := conn.Read(buf)
			got = append(got, buf[:n]...)
			if err != nil {
				break
			}
		}
		out <- string(got)
	}()
	if _, err := conn.Write([]byte("\necho hi-$((2+2))\n")); err != nil {
		t.Fatal(err)
	}
	if got := <-out; !strings.Contains(got, "hi-4") {
		t.Errorf("the serial console did not answer echo hi-$((2+2)): %q", got)
	}
	conn.Close()
	// QEMU writes its log just after the socket: give it a moment.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		b, _ := os.ReadFile(m.ConsoleLog())
		if bytes.Contains(b, []byte("hi-4")) {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("console.log lacks the console session: %q", b)
			break
		}
	}

	start := time.Now()
	if err := m.Shutdown(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	t.Logf("shutdown took %v", time.Since(start))
	if m.Status() != vmm.StatusStopped {
		t.Errorf("status after Shutdown: %v", m.Status())
	}
	if err := m.Wait(ctxT(t, time.Second)); err != nil {
		t.Errorf("Wait after a clean poweroff: %v, want nil (exit 0)", err)
	}
	if sock != "" {
		if _, err := os.Stat(sock); !os.IsNotExist(err) {
			t.Errorf("agent socket left behind: %v", err)
		}
		if _, err := os.Stat(filepath.Dir(sock)); !os.IsNotExist(err) {
			t.Errorf("short socket dir left behind: %v", err)
		}
	}
	if b, _ := os.ReadFile(m.ConsoleLog()); len(b) == 0 {
		t.Error("console.log is empty")
	}
	if err := m.Shutdown(ctxT(t, time.Second)); err != nil {
		t.Errorf("Shutdown of a stopped machine: %v", err)
	}
}

// TestPausedGuestNeverAnswers: QEMU started with -S runs no guest code; an agent call over its socket
// must fail within the call's timeout, not hang.
func TestPausedGuestNeverAnswers(t *testing.T) {
	m := newMachine(t, context.Background(), func(c *vmm.Config) {
		c.Paused = true
		c.Transport = vmm.TransportSerial
	})
	if err := m.Start(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	if st := qmpStatus(t, m); st != "prelaunch" {
		t.Errorf("QMP status %q, want prelaunch", st)
	}
	conn, err := guest.DialSerial(ctxT(t, 5*time.Second), m.AgentSocket())
	if err != nil {
		t.Fatal(err)
	}
	c := guest.NewClient(conn)
	defer c.Close()
	start := time.Now()
	_, err = c.Ping(ctxT(t, 2*time.Second))
	if took := time.Since(start); err == nil || took > 3*time.Second {
		t.Errorf("ping to a paused guest: %v after %v, want a timeout after about 2s", err, took)
	}
}

// TestShutdownLadder: a guest without an agent connection that ignores the power button is killed,
// and Shutdown still reports the machine down.
func TestShutdownLadder(t *testing.T) {
	m := newMachine(t, context.Background(), func(c *vmm.Config) { c.Paused = true })
	if err := m.Start(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	pid := m.PID()
	start := time.Now()
	if err := m.Shutdown(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	if took < 4*time.Second || took > 30*time.Second {
		t.Errorf("shutdown took %v, want the ACPI wait (5s) then a kill", took)
	}
	if m.Status() != vmm.StatusStopped || syscall.Kill(pid, 0) == nil {
		t.Errorf("status %v, pid %d alive=%v", m.Status(), pid, syscall.Kill(pid, 0) == nil)
	}
	if err := m.Wait(ctxT(t, time.Second)); err == nil {
		t.Error("Wait after a kill returned nil, want the signal")
	}
}

// TestMachineOutlivesItsDriver: a request's context ending does not touch the machine; a driver
// that lets go of it (Detach, and its life context ending: a daemon that stops) leaves QEMU running,
// and Attach takes it over: the same QEMU process, the same boot id, QMP and the agent answering.
// Attach of a machine that does not run says so with ErrNoMachine.
func TestMachineOutlivesItsDriver(t *testing.T) {
	life, end := context.WithCancel(context.Background())
	defer end()
	var cfg vmm.Config
	m := newMachine(t, life, func(c *vmm.Config) { cfg = *c })
	boot, cancelBoot := context.WithCancel(context.Background())
	if err := m.Start(boot); err != nil {
		t.Fatal(err)
	}
	cancelBoot() // a request's context ending must not touch the machine
	pid, bootID := m.PID(), m.BootID()
	m.Detach()
	end()
	time.Sleep(300 * time.Millisecond)
	if syscall.Kill(pid, 0) != nil {
		t.Fatal("QEMU ended with its driver")
	}

	start := time.Now()
	m2, err := vmm.Attach(context.Background(), ctxT(t, 30*time.Second), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m2.Kill() })
	t.Logf("reattached in %v", time.Since(start).Round(time.Millisecond))
	if m2.PID() != pid || m2.BootID() != bootID || m2.Status() != vmm.StatusRunning {
		t.Fatalf("after Attach: pid %d boot %s %v, want pid %d boot %s running", m2.PID(), m2.BootID(), m2.Status(), pid, bootID)
	}
	if qmpStatus(t, m2) != "running" {
		t.Error("QMP does not say running after Attach")
	}
	if res, err := m2.Agent().Exec(ctxT(t, 20*time.Second), guest.ExecRequest{Path: "true"}); err != nil || res.ExitCode != 0 {
		t.Fatalf("exec through the reattached agent: %+v %v", res, err)
	}
	// Its end is noticed by the new driver, though QEMU is not its child.
	if err := m2.Shutdown(ctxT(t, 60*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := m2.Wait(ctxT(t, 5*time.Second)); errors.Is(err, context.DeadlineExceeded) {
		t.Fatal("Wait did not see the reattached QEMU end")
	}
	if m2.Exit() != vmm.ExitGuestPowerOff {
		t.Errorf("exit %v, want guest-poweroff (the agent powered it off)", m2.Exit())
	}
	if _, err := vmm.Attach(context.Background(), ctxT(t, 5*time.Second), cfg); !errors.Is(err, vmm.ErrNoMachine) {
		t.Errorf("Attach of a machine that does not run: %v, want ErrNoMachine", err)
	}
}

// TestBootDeadlineKillsAndRetries: a boot deadline no guest can meet fails every attempt, kills each
// QEMU, and says so.
func TestBootDeadlineKillsAndRetries(t *testing.T) {
	m := newMachine(t, context.Background(), func(c *vmm.Config) {
		c.BootTimeout = 1500 * time.Millisecond
		c.BootAttempts = 2
		c.Accel = vmm.AccelTCG
	})
	start := time.Now()
	err := m.Start(ctxT(t, time.Minute))
	if !errors.Is(err, vmm.ErrBootTimeout) {
		t.Fatalf("Start: %v, want ErrBootTimeout", err)
	}
	if !strings.Contains(err.Error(), "attempt 2") {
		t.Errorf("error does not show the retry: %v", err)
	}
	if took := time.Since(start); took < 3*time.Second || took > 40*time.Second {
		t.Errorf("two 1.5s attempts took %v", took)
	}
	if m.Status() != vmm.StatusStopped {
		t.Errorf("status %v", m.Status())
	}
	if pid := m.PID(); pid != 0 && syscall.Kill(pid, 0) == nil {
		t.Errorf("qemu pid %d survived the failed boot", pid)
	}
}
