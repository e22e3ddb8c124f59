package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/systemd"
	"github.com/superjolt/superjolt/systemd/nspawntest"
	"github.com/superjolt/superjolt/testvm"
)

// sdBox is superjoltd installed in a booted systemd (systemd-nspawn, its
// own network namespace), with its state directory and pool on the host,
// so that they outlive the container.
type sdBox struct {
	t        testing.TB
	c        *nspawntest.Container
	stateDir string // the host's side of /var/lib/superjolt
	upgrade  string // the host's side of /upgrade
}

const sdBin = "/opt/sj/bin"

// run runs a command in the container and fails the test unless it
// succeeds; it returns the output.
func (b *sdBox) run(args ...string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	out, err := b.c.Run(ctx, args...)
	if err != nil {
		b.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// sj runs the installed CLI in the container.
func (b *sdBox) sj(args ...string) string {
	b.t.Helper()
	return b.run(append([]string{sdBin + "/superjolt"}, args...)...)
}

func sdJSON[T any](b *sdBox, args ...string) T {
	b.t.Helper()
	out := b.sj(append(args, "-o", "json")...)
	var v T
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		b.t.Fatalf("superjolt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return v
}

// show returns properties of a unit, as systemctl show prints them.
func (b *sdBox) show(unit string, props ...string) map[string]string {
	b.t.Helper()
	out := b.run("systemctl", "show", unit, "-p", strings.Join(props, ","))
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if k, v, ok := strings.Cut(line, "="); ok {
			m[k] = v
		}
	}
	return m
}

// waitAPI waits until the daemon in the container answers (a hang guard).
func (b *sdBox) waitAPI() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(200 * time.Millisecond) {
		out, err := b.c.Run(ctx, sdBin+"/superjolt", "status")
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			b.t.Fatalf("superjoltd does not answer: %v\n%s\n%s", err, out, b.run("journalctl", "-u", systemd.DaemonUnit, "--no-pager", "-n", "80"))
		}
	}
}

// newSDBox installs superjoltd (and a drop-in with the test's flags) in a
// fresh container, starts it and waits until it answers.
func newSDBox(t testing.TB) *sdBox {
	needVMs(t)
	bin := binaries(t)
	img := testvm.Require(t)
	stateDir := t.TempDir()
	// The pool: a loop-backed Btrfs made on the host (the container has
	// no loop devices), with the built-in image in it already (the image
	// build needs the network to fetch a kernel, and the container has
	// none).
	pool := btrfstest.NewPool(t, 2<<30)
	ctx := context.Background()
	if err := pool.CreateImage(ctx, appliance.DefaultImage, func(dir string) error {
		for _, f := range []struct{ src, dst string }{{img.Kernel, appliance.KernelFile}, {img.Initrd, appliance.InitrdFile}, {img.Rootfs, appliance.RootfsFile}} {
			if err := images.CopyDisk(filepath.Join(dir, f.dst), f.src); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(stateDir, "pool"), 0o700); err != nil {
		t.Fatal(err)
	}
	b := &sdBox{t: t, stateDir: stateDir, upgrade: t.TempDir()}
	b.c = nspawntest.Boot(t, nspawntest.Options{
		PrivateNetwork: true,
		Binds: []string{stateDir + ":/var/lib/superjolt", pool.Root() + ":/var/lib/superjolt/pool",
			b.upgrade + ":/upgrade"},
		BindsRO: []string{bin},
	})
	b.run(filepath.Join(bin, "superjolt"), "install", "--bin-dir", sdBin, "--no-start")
	// The operator's own flags go in a drop-in, as they would on a box:
	// the pool on the host's Btrfs, the run directory in the state
	// directory (its console logs outlive the container), a manual clock.
	dropIn := filepath.Join(b.c.Root(), "etc/systemd/system", systemd.DaemonUnit+".d")
	if err := os.MkdirAll(dropIn, 0o755); err != nil {
		t.Fatal(err)
	}
	conf := "[Service]\nExecStart=\nExecStart=" + sdBin + "/superjoltd --socket-group superjolt --pool /var/lib/superjolt/pool " +
		"--run-dir /var/lib/superjolt/run --clock=manual --log-level=debug\n"
	if err := os.WriteFile(filepath.Join(dropIn, "test.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	b.run("systemctl", "daemon-reload")
	b.run("systemctl", "start", systemd.DaemonUnit)
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := b.c.Run(context.Background(), "journalctl", "--no-pager", "-n", "150")
			t.Logf("the container's journal:\n%s", out)
		}
	})
	b.waitAPI()
	return b
}

// TestSystemdSupervision runs superjoltd as installed, under a real
// systemd: every VM is its own transient unit with its limits; restarting
// the daemon, killing it (systemd restarts it) and upgrading it leave the
// guests running; a killed QEMU is noticed and booted again; a guest's
// poweroff stops its VM; and powering the machine off shuts every guest
// down through its agent before QEMU ends.
func TestSystemdSupervision(t *testing.T) {
	b := newSDBox(t)
	begin := time.Now()
	step := func(what string) { t.Logf("%-58s %6.1fs", what, time.Since(begin).Seconds()) }
	if out := strings.TrimSpace(b.run("systemctl", "is-active", systemd.DaemonUnit)); out != "active" {
		t.Fatalf("superjoltd is %s", out)
	}
	acct := sdJSON[model.Account](b, "account", "create", "sd", "--balance", "100")
	vm := sdJSON[model.VM](b, "vm", "create", "--account", acct.ID, "--tier", "nano", "--name", "unit-1")
	step("VM created: " + vm.ID)
	unit := systemd.UnitName(vm.ID)

	// Its unit: active, in the slice, with the tier's limits.
	var tier model.Tier
	for _, tr := range sdJSON[[]model.Tier](b, "tier", "list") {
		if tr.Name == "nano" {
			tier = tr
		}
	}
	p := b.show(unit, "ActiveState", "Slice", "MemoryMax", "CPUQuotaPerSecUSec", "TasksMax", "IOWeight", "MainPID", "Description")
	wantMem := fmt.Sprint((uint64(tier.MemoryMiB) + 128 + 128) << 20) // guest RAM + QEMU + its TCG cache
	if p["ActiveState"] != "active" || p["Slice"] != systemd.Slice || p["MemoryMax"] != wantMem ||
		p["CPUQuotaPerSecUSec"] != fmt.Sprintf("%ds", tier.VCPUs) || p["TasksMax"] != fmt.Sprint(96+tier.VCPUs) ||
		!strings.Contains(p["Description"], vm.ID) || !strings.Contains(p["Description"], "unit-1") {
		t.Fatalf("systemctl show %s: %v (want MemoryMax %s for %d MiB)", unit, p, wantMem, tier.MemoryMiB)
	}
	mainPID := p["MainPID"]
	if cmd := b.run("cat", "/proc/"+mainPID+"/comm"); !strings.HasPrefix(cmd, "qemu-system") {
		t.Fatalf("the unit's main process %s is %q, not QEMU", mainPID, cmd)
	}
	journal := b.run("journalctl", "-u", unit, "--no-pager")
	if !strings.Contains(journal, "starting QEMU for "+vm.ID) || !strings.Contains(journal, "console: ") {
		t.Errorf("journalctl -u %s has neither the launch nor the guest's console:\n%s", unit, journal)
	}
	if out := b.run("journalctl", "SUPERJOLT_VM="+vm.ID, "--no-pager"); !strings.Contains(out, "console: ") {
		t.Errorf("journalctl SUPERJOLT_VM=%s finds nothing", vm.ID)
	}
	if out := b.sj("vm", "logs", vm.ID, "-n", "1000"); !strings.Contains(out, "starting QEMU for "+vm.ID) || !strings.Contains(out, "console: ") {
		t.Errorf("superjolt vm logs shows neither the launch nor the console:\n%s", out)
	}
	step("unit checked: MemoryMax " + p["MemoryMax"] + ", main pid " + mainPID)

	same := func(after string) {
		t.Helper()
		b.waitAPI()
		got := sdJSON[model.VM](b, "vm", "show", vm.ID)
		if got.State != model.StateRunning || got.BootID != vm.BootID {
			t.Fatalf("after %s: %s with boot id %s, want running with %s", after, got.State, got.BootID, vm.BootID)
		}
		if now := b.show(unit, "MainPID")["MainPID"]; now != mainPID {
			t.Fatalf("after %s: QEMU's pid is %s, want %s", after, now, mainPID)
		}
		if bk := sdJSON[model.Backup](b, "backup", "create", vm.ID); bk.Consistency != model.Frozen {
			t.Fatalf("after %s: backup is %s, want frozen", after, bk.Consistency)
		}
		step("after " + after + ": same QEMU, same boot, frozen backup")
	}

	b.run("systemctl", "restart", systemd.DaemonUnit)
	same("systemctl restart superjoltd")

	before := b.show(systemd.DaemonUnit, "MainPID", "NRestarts")
	b.run("systemctl", "kill", "-s", "KILL", systemd.DaemonUnit)
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		now := b.show(systemd.DaemonUnit, "MainPID", "NRestarts", "ActiveState")
		if now["ActiveState"] == "active" && now["MainPID"] != before["MainPID"] && now["MainPID"] != "0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("systemd did not restart superjoltd after kill -9: %v", now)
		}
	}
	same("kill -9 of superjoltd (restarted by systemd)")

	// An upgrade: a new superjoltd, installed over the running one.
	for _, f := range []string{"superjolt", "superjolt-agent"} {
		if out, err := exec.Command("cp", filepath.Join(binaries(t), f), b.upgrade).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
	}
	build := exec.Command("go", "build", "-ldflags", "-X github.com/superjolt/superjolt/version.version=upgraded-sd", "-o", b.upgrade+"/", "github.com/superjolt/superjolt/cmd/superjoltd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the new superjoltd: %v\n%s", err, out)
	}
	b.run(sdBin+"/superjolt", "install", "--from", "/upgrade", "--bin-dir", sdBin)
	b.waitAPI()
	if out := b.sj("status"); !strings.Contains(out, "upgraded-sd") {
		t.Fatalf("after the upgrade superjoltd reports:\n%s", out)
	}
	same("an upgrade of superjoltd")

	// kill -9 of QEMU: noticed, recorded with the reason, booted again.
	killed := time.Now()
	b.run("kill", "-9", mainPID)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out := b.sj("events", "-n", "30"); strings.Contains(out, "vm.crashed") && strings.Contains(out, "KILL") {
			t.Logf("kill -9 of QEMU -> vm.crashed in %v", time.Since(killed).Round(time.Millisecond))
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("no vm.crashed event naming SIGKILL within 10 s:\n%s", out)
		}
	}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		got := sdJSON[model.VM](b, "vm", "show", vm.ID)
		if got.State == model.StateRunning && got.BootID != vm.BootID {
			vm = got
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not running again 3 minutes after QEMU was killed: %+v", got)
		}
	}
	if p := b.show(unit, "ActiveState", "MainPID"); p["ActiveState"] != "active" || p["MainPID"] == mainPID {
		t.Fatalf("after the crash the unit is %v", p)
	}
	step("QEMU killed: booted again in its unit")

	// poweroff inside: stopped as the tenant asked, and it keeps billing.
	// The exec's own answer may not make it out of a guest that powers off.
	_, _ = b.c.Run(context.Background(), sdBin+"/superjolt", "vm", "exec", vm.ID, "--", "poweroff")
	for deadline := time.Now().Add(2 * time.Minute); ; time.Sleep(250 * time.Millisecond) {
		got := sdJSON[model.VM](b, "vm", "show", vm.ID)
		if got.State == model.StateStopped {
			if got.StopReason != model.StopGuestPowerOff {
				t.Fatalf("after poweroff inside: stopped because %q", got.StopReason)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not stopped 2 minutes after poweroff inside: %+v", got)
		}
	}
	bal := sdJSON[model.Account](b, "account", "show", acct.ID).Balance
	b.sj("debug", "clock", "advance", "2h")
	if now := sdJSON[model.Account](b, "account", "show", acct.ID).Balance; now >= bal {
		t.Errorf("balance %s -> %s over 2 h powered off: a stopped VM bills", bal, now)
	}
	vm = sdJSON[model.VM](b, "vm", "start", vm.ID)
	if vm.State != model.StateRunning {
		t.Fatalf("vm start after poweroff: %s", vm.State)
	}
	step("poweroff inside: stopped, billing; vm start boots it")

	// A second VM, and the machine powers off: each guest's agent is asked
	// to power off (the units' stop command, through the daemon) before
	// QEMU ends.
	vm2 := sdJSON[model.VM](b, "vm", "create", "--account", acct.ID, "--tier", "nano", "--name", "unit-2")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := b.c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	step("container powered off")
	// The state, on the host: each VM was shut down for the host by the
	// daemon (its unit's stop command asked it), and stays wanted running.
	st, err := store.Open(ctx, store.Options{Dir: filepath.Join(b.stateDir, "state")})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{vm.ID, vm2.ID} {
		var got model.VM
		if err := st.View(ctx, func(tx *store.Tx) error { got, err = tx.VM(id); return err }); err != nil {
			t.Fatal(err)
		}
		if got.State != model.StateStopped || got.StopReason != model.StopHost || !got.WantRunning {
			t.Errorf("after the host's shutdown %s is %s (%s), wanted running %v: want stopped with the host, still wanted running", id, got.State, got.StopReason, got.WantRunning)
		}
	}
	st.Close()
	for _, id := range []string{vm.ID, vm2.ID} {
		console, err := os.ReadFile(filepath.Join(b.stateDir, "run", id, "console.log"))
		if err != nil {
			t.Fatal(err)
		}
		tail := string(console)
		if i := strings.LastIndex(tail, "agent"); i > 2000 {
			tail = tail[i-2000:]
		}
		if !strings.Contains(string(console), "goodbye") || !strings.Contains(string(console), "action=poweroff") {
			t.Errorf("the console of %s does not show its agent powering off at the host's shutdown:\n%s", id, tail)
		}
	}
}
