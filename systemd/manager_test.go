package systemd

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/systemd/nspawntest"
)

// inSystemd runs the calling test inside a freshly booted systemd: outside,
// it boots a container, re-runs the test there and returns false (the
// caller returns); inside, it returns true and the test goes on against the
// container's systemd.
func inSystemd(t *testing.T) bool {
	t.Helper()
	if nspawntest.Inside() {
		if !Booted() {
			t.Fatal("inside the container, but PID 1 is not systemd")
		}
		return true
	}
	c := nspawntest.Boot(t, nspawntest.Options{PrivateNetwork: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c.RunTest(ctx, t, t.Name())
	return false
}

// systemctl runs systemctl (or journalctl) and returns its output.
func sh(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// show returns the unit's properties as systemctl show prints them.
func show(t *testing.T, unit string, props ...string) map[string]string {
	t.Helper()
	out := sh(t, "systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		k, v, _ := strings.Cut(line, "=")
		m[k] = v
	}
	return m
}

// eventually polls cond every 50ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestManager(t *testing.T) {
	if !inSystemd(t) {
		return
	}
	ctx := context.Background()
	m, err := NewManager(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()

	const id = "vm-test1"
	unit := UnitName(id)
	dir := t.TempDir()
	stopLog := filepath.Join(dir, "stop.log")
	u := VMUnit{
		VMID:        id,
		Description: "superjolt VM vm-test1 (web, account acme)",
		// The stand-in for QEMU: says hello, then execs into a long sleep,
		// as the real runner execs QEMU.
		Command: []string{"/bin/sh", "-c", `echo "hello from $SJ_NAME"; exec /usr/bin/sleep 1000`},
		// ExecStop notes whether the main process still lived when it ran.
		StopCommand: []string{"/bin/sh", "-c", `if kill -0 "$MAINPID" 2>/dev/null; then echo alive >> ` + stopLog + `; else echo gone >> ` + stopLog + `; fi`},
		Env:         []string{"SJ_NAME=web"},
		MemoryMax:   512 << 20,
		CPUQuota:    2 * time.Second,
		TasksMax:    64,
		IOWeight:    50,
		StopTimeout: 10 * time.Second,
		After:       []string{DaemonUnit},
	}
	start := time.Now()
	if err := m.StartVM(ctx, u); err != nil {
		t.Fatal(err)
	}
	t.Logf("StartVM took %v", time.Since(start))

	p := show(t, unit, "ActiveState", "SubState", "Slice", "Type", "Restart", "KillMode", "MemoryMax",
		"CPUQuotaPerSecUSec", "TasksMax", "IOWeight", "Description", "TimeoutStopUSec", "After", "CollectMode", "MemoryAccounting", "CPUAccounting")
	for k, want := range map[string]string{
		"ActiveState": "active", "SubState": "running", "Slice": Slice, "Type": "exec", "Restart": "no",
		"KillMode": "mixed", "MemoryMax": strconv.Itoa(512 << 20), "CPUQuotaPerSecUSec": "2s", "TasksMax": "64",
		"IOWeight": "50", "Description": u.Description, "TimeoutStopUSec": "10s", "CollectMode": "inactive",
		"MemoryAccounting": "yes", "CPUAccounting": "yes",
	} {
		if p[k] != want {
			t.Errorf("systemctl show %s: %s=%q, want %q", unit, k, p[k], want)
		}
	}
	if !strings.Contains(p["After"], DaemonUnit) {
		t.Errorf("After=%q, want it to hold %s", p["After"], DaemonUnit)
	}

	st, err := m.VMStatus(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Found || st.ActiveState != "active" || st.SubState != "running" || st.MainPID <= 0 || !st.Running() {
		t.Fatalf("VMStatus = %+v, want a running unit with a main PID", st)
	}
	if comm, _ := os.ReadFile("/proc/" + strconv.Itoa(st.MainPID) + "/comm"); strings.TrimSpace(string(comm)) != "sleep" {
		t.Errorf("the main process is %q, want sleep (the command's exec)", comm)
	}
	t.Logf("usage known: %v (memory %d, CPU %v)", st.UsageKnown, st.MemoryCurrent, st.CPUUsage)
	if !st.UsageKnown && (st.MemoryCurrent != 0 || st.CPUUsage != 0) {
		t.Errorf("usage unknown but reported: %+v", st)
	}

	// The journal: by unit, and by the VM's own field.
	eventually(t, "the VM's output in its journal", func() bool {
		out, _ := exec.Command("journalctl", "-u", unit, "-o", "cat", "--no-pager").CombinedOutput()
		return strings.Contains(string(out), "hello from web")
	})
	if out := sh(t, "journalctl", "SUPERJOLT_VM="+id, "-o", "cat", "--no-pager"); !strings.Contains(out, "hello from web") {
		t.Errorf("journalctl SUPERJOLT_VM=%s lacks the VM's output:\n%s", id, out)
	}

	vms, err := m.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 1 || vms[0].VMID != id || vms[0].Unit != unit || vms[0].MainPID != st.MainPID {
		t.Errorf("ListVMs = %+v, want just %s", vms, id)
	}

	// A second start of a running VM fails and says so.
	if err := m.StartVM(ctx, u); err == nil || !strings.Contains(err.Error(), "already loaded") {
		t.Errorf("StartVM of a running VM: %v, want an error saying it is loaded", err)
	}

	// Limits change without a restart.
	if err := m.SetVMLimits(ctx, id, Limits{MemoryMax: 768 << 20, TasksMax: 100}); err != nil {
		t.Fatal(err)
	}
	p = show(t, unit, "MemoryMax", "TasksMax", "CPUQuotaPerSecUSec", "MainPID")
	if p["MemoryMax"] != strconv.Itoa(768<<20) || p["TasksMax"] != "100" || p["CPUQuotaPerSecUSec"] != "2s" {
		t.Errorf("after SetVMLimits: %v", p)
	}
	if p["MainPID"] != strconv.Itoa(st.MainPID) {
		t.Errorf("SetVMLimits restarted the unit: MainPID %s, was %d", p["MainPID"], st.MainPID)
	}

	// A crash: kill -9 of the main process leaves a failed unit that says
	// why, and WatchVMs reports it at once.
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	seen := make(chan VMStatus, 100)
	watched := make(chan error, 1)
	go func() { watched <- m.WatchVMs(wctx, func(st VMStatus) { seen <- st }) }()
	// It reports the running VM first: it is subscribed.
	select {
	case ws := <-seen:
		if ws.VMID != id || ws.ActiveState != "active" {
			t.Fatalf("WatchVMs reported %+v first, want %s running", ws, id)
		}
	case err := <-watched:
		t.Fatalf("WatchVMs: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("WatchVMs did not report the running VM")
	}
	killed := time.Now()
	if err := syscall.Kill(st.MainPID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	timeout := time.After(10 * time.Second)
watch:
	for {
		select {
		case ws := <-seen:
			if ws.VMID == id && ws.ActiveState == "failed" {
				if ws.Result != "signal" || !strings.Contains(ws.ExitReason(), "KILL") {
					t.Errorf("WatchVMs reported %+v", ws)
				}
				t.Logf("WatchVMs saw the crash after %v", time.Since(killed))
				break watch
			}
		case <-timeout:
			t.Fatal("WatchVMs did not report the crash within 10s")
		}
	}
	stopWatch()
	if err := <-watched; !errors.Is(err, context.Canceled) {
		t.Errorf("WatchVMs returned %v, want context.Canceled", err)
	}
	eventually(t, "the unit to fail", func() bool {
		st, err = m.VMStatus(ctx, id)
		return err == nil && st.ActiveState == "failed"
	})
	if !st.Found || st.Result != "signal" || st.ExecMainCode != CLDKilled || st.ExecMainStatus != 9 ||
		!strings.Contains(st.ExitReason(), "KILL") {
		t.Errorf("after kill -9: %+v (%q), want failed by signal KILL", st, st.ExitReason())
	}
	vms, err = m.ListVMs(ctx)
	if err != nil || len(vms) != 1 || vms[0].ActiveState != "failed" {
		t.Errorf("ListVMs after the crash = %+v, %v; want the failed unit", vms, err)
	}

	// Start again on the failed unit: it is reset first.
	os.Remove(stopLog)
	if err := m.StartVM(ctx, u); err != nil {
		t.Fatalf("StartVM after a crash: %v", err)
	}
	st2, err := m.VMStatus(ctx, id)
	if err != nil || st2.ActiveState != "active" || st2.MainPID == st.MainPID || st2.Result != "success" {
		t.Fatalf("after the restart: %+v, %v", st2, err)
	}

	if m.SystemStopping(ctx) {
		t.Error("SystemStopping is true on a running system")
	}

	// A start while the unit of the previous run is still stopping (its
	// main process ended and its stop command runs, here for 1 s): StartVM
	// waits for it to go instead of failing.
	slow := u
	slow.StopCommand = []string{"/bin/sleep", "1"}
	if err := m.StopVM(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := m.StartVM(ctx, slow); err != nil {
		t.Fatal(err)
	}
	st, _ = m.VMStatus(ctx, id)
	if err := syscall.Kill(st.MainPID, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unit to be stopping", func() bool {
		st, err = m.VMStatus(ctx, id)
		return err == nil && st.ActiveState == "deactivating"
	})
	if err := m.StartVM(ctx, u); err != nil {
		t.Fatalf("StartVM while the previous run's unit stops: %v", err)
	}
	if st, err := m.VMStatus(ctx, id); err != nil || st.ActiveState != "active" {
		t.Fatalf("after StartVM on a stopping unit: %+v, %v", st, err)
	}
	if err := m.StartVM(ctx, u); err == nil || !strings.Contains(err.Error(), "already running") {
		t.Errorf("StartVM of a running unit: %v, want already running", err)
	}
	os.Remove(stopLog)

	// A stop runs ExecStop while the main process still lives.
	if err := m.StopVM(ctx, id); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(stopLog); err != nil || strings.TrimSpace(string(b)) != "alive" {
		t.Errorf("ExecStop's log = %q, %v; want alive (it runs before the main process is signalled)", b, err)
	}
	st, err = m.VMStatus(ctx, id)
	if err != nil || st.Found {
		t.Errorf("after StopVM: %+v, %v; want no unit", st, err)
	}
	if err := m.StopVM(ctx, id); err != nil {
		t.Errorf("StopVM of a stopped VM: %v", err)
	}
	if vms, err := m.ListVMs(ctx); err != nil || len(vms) != 0 {
		t.Errorf("ListVMs after the stop = %+v, %v; want none", vms, err)
	}

	// A command that cannot start: the error names the result and the journal.
	bad := VMUnit{VMID: "vm-bad", Command: []string{"/nonexistent/qemu"}}
	err = m.StartVM(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "journalctl -u "+UnitName("vm-bad")) {
		t.Errorf("StartVM of a missing command: %v, want an error pointing at the journal", err)
	}
	st, _ = m.VMStatus(ctx, "vm-bad")
	if st.ActiveState != "failed" || !strings.Contains(st.ExitReason(), "could not be executed") {
		t.Errorf("a missing command: %+v, %q", st, st.ExitReason())
	}

	for _, bad := range []string{"nope", "vm-A", "../x"} {
		if _, err := m.VMStatus(ctx, bad); err == nil {
			t.Errorf("VMStatus(%q) accepted", bad)
		}
		if err := m.StopVM(ctx, bad); err == nil {
			t.Errorf("StopVM(%q) accepted", bad)
		}
		if err := m.SetVMLimits(ctx, bad, Limits{TasksMax: 1}); err == nil {
			t.Errorf("SetVMLimits(%q) accepted", bad)
		}
	}
}
