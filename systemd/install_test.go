package systemd

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/guest"
)

// fakeRelease makes a directory like make build's bin/: this test binary as
// superjoltd (TestMain makes it a stand-in daemon under that name), a static
// busybox as the agent and as the CLI. agent replaces the agent when set.
func fakeRelease(t *testing.T, agent string) string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if agent == "" {
		agent = staticBinary(t)
	}
	for name, src := range map[string]string{"superjoltd": self, "superjolt": agent, "superjolt-agent": agent} {
		if err := copyFileAtomic(src, filepath.Join(dir, name), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// staticBinary returns a statically linked executable of this machine.
func staticBinary(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"/bin/busybox", "/usr/bin/busybox", "/usr/lib/klibc/bin/sh.shared"} {
		if _, err := os.Stat(p); err == nil && guest.CheckStatic(p) == nil {
			return p
		}
	}
	t.Skip("no statically linked executable on this machine to stand in for the agent (apt-get install busybox-static)")
	return ""
}

func TestInstall(t *testing.T) {
	if !inSystemd(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var steps []string
	opts := InstallOptions{
		From:     fakeRelease(t, ""),
		BinDir:   "/opt/superjolt/bin", // /usr is the host's, read-only, in the container
		Progress: func(s string) { steps = append(steps, s) },
	}

	// A dynamically linked agent is refused before anything is written.
	bad := opts
	bad.From = fakeRelease(t, "/bin/sh")
	err := Install(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), "make agent") {
		t.Fatalf("Install with a dynamic agent: %v, want a refusal that says make agent", err)
	}
	if _, err := os.Stat(filepath.Join(opts.BinDir, "superjoltd")); err == nil {
		t.Fatal("a refused install copied binaries")
	}

	if err := Install(ctx, opts); err != nil {
		t.Fatalf("Install: %v\nsteps: %q\n%s", err, steps, journal(DaemonUnit))
	}
	t.Logf("install steps:\n%s", strings.Join(steps, "\n"))
	for _, f := range []string{"/etc/systemd/system/superjoltd.service", "/etc/systemd/system/superjolt.slice",
		"/etc/sysusers.d/superjolt.conf", "/etc/tmpfiles.d/superjolt.conf",
		"/opt/superjolt/bin/superjoltd", "/opt/superjolt/bin/superjolt", "/opt/superjolt/bin/superjolt-agent"} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if out := strings.TrimSpace(sh(t, "systemctl", "is-enabled", DaemonUnit)); out != "enabled" {
		t.Errorf("is-enabled: %q", out)
	}
	if out := sh(t, "getent", "group", "superjolt"); !strings.HasPrefix(out, "superjolt:") {
		t.Errorf("getent group superjolt: %q", out)
	}
	for dir, want := range map[string]string{
		"/run/superjolt":     "750 root superjolt",
		"/run/superjolt/vm":  "700 root root",
		"/var/lib/superjolt": "700 root root",
	} {
		if out := strings.TrimSpace(sh(t, "stat", "-c", "%a %U %G", dir)); out != want {
			t.Errorf("%s: %q, want %q", dir, out, want)
		}
	}
	p := show(t, DaemonUnit, "ActiveState", "SubState", "Type", "NotifyAccess", "WatchdogUSec", "Restart", "KillMode",
		"TimeoutStopUSec", "StatusText", "MainPID", "ExecStart")
	for k, want := range map[string]string{
		"ActiveState": "active", "SubState": "running", "Type": "notify", "NotifyAccess": "main", "WatchdogUSec": "30s",
		"Restart": "on-failure", "KillMode": "process", "TimeoutStopUSec": "3min",
	} {
		if p[k] != want {
			t.Errorf("%s: %s=%q, want %q", DaemonUnit, k, p[k], want)
		}
	}
	if !strings.HasPrefix(p["StatusText"], "stub serving") {
		t.Errorf("StatusText=%q: the stand-in daemon's Ready did not reach systemd", p["StatusText"])
	}
	if !strings.Contains(p["ExecStart"], "/opt/superjolt/bin/superjoltd --socket-group superjolt") {
		t.Errorf("ExecStart=%q", p["ExecStart"])
	}
	// The hardening gives the daemon no mount namespace of its own: it
	// mounts the pool where the VM units see it.
	pid := p["MainPID"]
	if self, daemon := readlink(t, "/proc/self/ns/mnt"), readlink(t, "/proc/"+pid+"/ns/mnt"); self != daemon {
		t.Errorf("superjoltd runs in mount namespace %s, the system in %s", daemon, self)
	}

	// A VM unit, then an upgrade: the daemon restarts, the VM does not.
	m, err := NewManager(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.StartVM(ctx, VMUnit{VMID: "vm-keep", Command: []string{"/usr/bin/sleep", "1000"}, After: []string{DaemonUnit}}); err != nil {
		t.Fatal(err)
	}
	vm, _ := m.VMStatus(ctx, "vm-keep")
	opts.From = fakeRelease(t, "")
	steps = nil
	if err := Install(ctx, opts); err != nil {
		t.Fatalf("upgrade: %v\n%s", err, journal(DaemonUnit))
	}
	if !strings.Contains(strings.Join(steps, "\n"), "restarted "+DaemonUnit) {
		t.Errorf("upgrade steps do not restart the daemon: %q", steps)
	}
	p2 := show(t, DaemonUnit, "ActiveState", "MainPID")
	if p2["ActiveState"] != "active" || p2["MainPID"] == pid {
		t.Errorf("after the upgrade: %v, was MainPID %s", p2, pid)
	}
	if vm2, _ := m.VMStatus(ctx, "vm-keep"); vm2.ActiveState != "active" || vm2.MainPID != vm.MainPID {
		t.Errorf("the upgrade touched the VM: %+v, was %+v", vm2, vm)
	}

	// --no-start after a stop enables only.
	sh(t, "systemctl", "stop", DaemonUnit)
	opts.NoStart = true
	if err := Install(ctx, opts); err != nil {
		t.Fatal(err)
	}
	if out, _ := exec.Command("systemctl", "is-active", DaemonUnit).CombinedOutput(); strings.TrimSpace(string(out)) != "inactive" {
		t.Errorf("--no-start: is-active %q", out)
	}
	sh(t, "systemctl", "start", DaemonUnit)

	// Uninstall: VMs stopped first, then the daemon; everything but the state goes.
	steps = nil
	os.WriteFile("/var/lib/superjolt/store", []byte("state"), 0o600)
	if err := Uninstall(ctx, opts); err != nil {
		t.Fatal(err)
	}
	t.Logf("uninstall steps:\n%s", strings.Join(steps, "\n"))
	if len(steps) < 2 || steps[0] != "stopped "+Slice || steps[1] != "stopped "+DaemonUnit {
		t.Errorf("uninstall steps: %q, want the slice stopped before the daemon", steps)
	}
	if !strings.Contains(steps[len(steps)-1], "/var/lib/superjolt") {
		t.Errorf("uninstall does not say where the state is: %q", steps[len(steps)-1])
	}
	if vm, err := m.VMStatus(ctx, "vm-keep"); err != nil || vm.Found {
		t.Errorf("after uninstall the VM unit is %+v, %v; want gone", vm, err)
	}
	for _, f := range []string{"/etc/systemd/system/superjoltd.service", "/etc/systemd/system/superjolt.slice",
		"/etc/sysusers.d/superjolt.conf", "/etc/tmpfiles.d/superjolt.conf", "/opt/superjolt/bin/superjoltd",
		"/opt/superjolt/bin/superjolt", "/opt/superjolt/bin/superjolt-agent"} {
		if _, err := os.Stat(f); !os.IsNotExist(err) {
			t.Errorf("%s after uninstall: %v", f, err)
		}
	}
	if _, err := os.Stat("/var/lib/superjolt/store"); err != nil {
		t.Errorf("uninstall removed the state: %v", err)
	}
	if out, _ := exec.Command("systemctl", "is-active", DaemonUnit).CombinedOutput(); strings.TrimSpace(string(out)) != "inactive" {
		t.Errorf("after uninstall: is-active %q", out)
	}
	if out, err := exec.Command("systemctl", "is-enabled", DaemonUnit).CombinedOutput(); err == nil {
		t.Errorf("after uninstall: is-enabled %q", out)
	}
	// Uninstalling again is fine.
	if err := Uninstall(ctx, opts); err != nil {
		t.Errorf("second uninstall: %v", err)
	}
}

func journal(unit string) string {
	out, _ := exec.Command("journalctl", "-u", unit, "--no-pager", "-n", "50").CombinedOutput()
	return string(out)
}

func readlink(t *testing.T, p string) string {
	t.Helper()
	s, err := os.Readlink(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
