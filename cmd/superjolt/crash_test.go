package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// The crash tests kill the real superjoltd with SIGKILL at every step of a
// backup, a restore, a destroy and a reclaim of a real guest, through the
// daemon's own crash hook (appliance.CrashEnv), then start it again without
// the hook on the same state directory and the same pool, which a crash
// leaves mounted (as systemd's Restart=on-failure would). What follows is
// checked as an operator sees it, through the CLI, and against the pool on
// disk: the operation was finished or rolled back as recover.go promises,
// the store and the subvolumes agree, no QEMU of the dead daemon lives on,
// a running guest is not frozen, and no backup taken before was lost.
//
// Each kind has one state directory, and its VM goes through all its steps
// where the outcome allows (a reclaimed VM does not).

// exitWithin bounds every command a recovered daemon must answer: a guest
// left frozen would hang a write until then.
const exitWithin = 60 * time.Second

// crashBox is a superjoltd whose state directory and pool live across the
// crashes of one kind of operation.
type crashBox struct {
	*daemon
	dir    string // holds the socket, the state directory and the run directory
	runDir string
	pool   string // the pool image's mount point
	image  string // the pool image
	seq    uint64 // the last event seen
}

// newCrashBox makes a box with a manual clock and a 1 GiB pool image in a
// short temporary directory (UNIX socket paths are limited to 108 bytes).
// It does not start the daemon. When the test ends the daemon is stopped,
// the VMs that outlive it ended, the pool unmounted (a daemon leaves it
// mounted for VMs that run) and its loop device checked to be detached.
func newCrashBox(t *testing.T) *crashBox {
	t.Helper()
	bin := binaries(t)
	dir, err := os.MkdirTemp("", "sjc")
	if err != nil {
		t.Fatal(err)
	}
	b := &crashBox{dir: dir, runDir: filepath.Join(dir, "run")}
	b.daemon = &daemon{socket: filepath.Join(dir, "api.sock"), stateDir: filepath.Join(dir, "state"), bin: bin, log: &bytes.Buffer{}}
	b.pool = filepath.Join(b.stateDir, "pool")
	b.image = filepath.Join(b.stateDir, "pool.img")
	b.args = []string{"--state-dir", b.stateDir, "--socket", b.socket, "--run-dir", b.runDir,
		"--log-level", "debug", "--pool-size", "1G", "--clock=manual"}
	t.Cleanup(func() { b.cleanup(t) })
	return b
}

func (b *crashBox) cleanup(t *testing.T) {
	if b.cmd != nil {
		_ = b.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-b.exited:
		case <-time.After(2 * time.Minute):
			_ = b.cmd.Process.Kill()
			<-b.exited
			t.Errorf("superjoltd did not stop within 2 minutes of SIGTERM")
		}
		b.cmd = nil
	}
	// VMs outlive the daemon (and keep the pool mounted): end them, and
	// unmount the pool.
	b.killVMs(t)
	// The kernel clears an autoclear loop device from a work queue after
	// the last unmount: give it a moment before calling it left behind.
	dev := loopOf(b.image)
	for wait := time.Now().Add(5 * time.Second); dev != "" && time.Now().Before(wait); dev = loopOf(b.image) {
		time.Sleep(100 * time.Millisecond)
	}
	if dev != "" {
		out, err := exec.Command("losetup", "-d", dev).CombinedOutput()
		t.Errorf("%s still attached to %s after the unmount (autoclear); losetup -d: %v %s", dev, b.image, err, out)
	}
	if t.Failed() {
		log := b.log.String()
		if len(log) > 64<<10 {
			log = "…" + log[len(log)-64<<10:]
		}
		t.Logf("superjoltd log:\n%s", log)
	}
	os.RemoveAll(b.dir)
}

// up starts superjoltd, with its crash hook set to crashAt unless that is
// empty, and waits until it serves.
func (b *crashBox) up(t *testing.T, crashAt string) {
	t.Helper()
	b.env = nil
	if crashAt != "" {
		b.env = []string{appliance.CrashEnv + "=" + crashAt}
	}
	b.start(t)
}

// down stops a running superjoltd with SIGTERM: it must exit 0 and remove
// its socket.
func (b *crashBox) down(t *testing.T) {
	t.Helper()
	if b.cmd == nil {
		return
	}
	_ = b.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-b.exited:
		b.cmd = nil
		if err != nil {
			t.Fatalf("superjoltd after SIGTERM: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatalf("superjoltd did not stop within 2 minutes of SIGTERM")
	}
	if _, err := os.Stat(b.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("socket %s left behind: %v", b.socket, err)
	}
}

// crash starts superjoltd with its crash hook set to at ("kind:step"), runs
// `superjolt args…` and fails the test unless the daemon killed itself
// there (the VMs' processes live on), then starts
// superjoltd again without the hook. It returns the VMs as the crashing
// daemon showed them before the command.
func (b *crashBox) crash(t *testing.T, at string, args ...string) map[string]model.VM {
	t.Helper()
	b.syncEvents(t)
	b.down(t)
	mark := b.log.Len()
	b.up(t, at)
	pre := map[string]model.VM{}
	for _, vm := range okJSON[[]model.VM](t, b.daemon, "vm", "list") {
		pre[vm.ID] = vm
	}
	r := b.sj(t, args...)
	var err error
	select {
	case err = <-b.exited:
		b.cmd = nil
	case <-time.After(10 * time.Second): // the hook fires inside the request: the CLI returns only once it has
		t.Fatalf("the crash point %s never fired: `superjolt %s` exited %d (stdout %q, stderr %q) and superjoltd still runs",
			at, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("superjoltd running `superjolt %s` ended with %v, want killed by SIGKILL at %s", strings.Join(args, " "), err, at)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Fatalf("superjoltd running `superjolt %s` ended with %v, want killed by SIGKILL at %s", strings.Join(args, " "), err, at)
	}
	if !crashedAt(b.log.String()[mark:], at) {
		t.Fatalf("superjoltd was killed, but its log does not say its crash hook fired at %s", at)
	}
	if r.code == 0 {
		t.Errorf("`superjolt %s` succeeded though the daemon died in it: %s", strings.Join(args, " "), r.stdout)
	}
	// The VMs' processes outlived the killed daemon; the next start takes
	// them over, or ends the one whose operation was cut short.
	b.up(t, "")
	return pre
}

// crashedAt reports whether log has the crash hook's line for at.
func crashedAt(log, at string) bool {
	for _, line := range strings.Split(log, "\n") {
		if strings.Contains(line, "test crash point reached") && strings.Contains(line, "step="+at) {
			return true
		}
	}
	return false
}

// qemuPIDs returns the live QEMU processes whose command line has s in
// it, or one of whose open files has s in its path. QEMU is handed its
// files as descriptors, so its run directory shows only there.
func qemuPIDs(s string) []int {
	var pids []int
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		argv0, _, _ := bytes.Cut(b, []byte{0})
		if !strings.Contains(filepath.Base(string(argv0)), "qemu") {
			continue
		}
		match := bytes.Contains(b, []byte(s))
		fds, _ := filepath.Glob(filepath.Join(filepath.Dir(p), "fd", "*"))
		for _, fd := range fds {
			if target, err := os.Readlink(fd); err == nil && strings.Contains(target, s) {
				match = true
			}
		}
		if match {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// mounted reports whether something is mounted on dir.
func mounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// loopOf returns the loop device image is attached to, or "".
func loopOf(image string) string {
	want, err := os.Stat(image)
	if err != nil {
		return ""
	}
	files, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if fi, err := os.Stat(strings.TrimSpace(string(b))); err == nil && os.SameFile(fi, want) {
			return "/dev/" + filepath.Base(filepath.Dir(filepath.Dir(f)))
		}
	}
	return ""
}

// within runs the CLI and fails the test unless it exits 0 within
// exitWithin.
func (b *crashBox) within(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), exitWithin)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.bin, "superjolt"), args...)
	cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+b.socket)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("`superjolt %s` did not finish within %s (a frozen guest?)", strings.Join(args, " "), exitWithin)
	}
	if err != nil {
		t.Fatalf("`superjolt %s`: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// events returns the events after the last one seen, and moves past them.
func (b *crashBox) events(t *testing.T) []model.Event {
	t.Helper()
	var all []model.Event
	for {
		page := okJSON[[]model.Event](t, b.daemon, "events", "--after", strconv.FormatUint(b.seq, 10), "--limit", strconv.Itoa(model.MaxListLimit))
		all = append(all, page...)
		if len(page) == 0 {
			return all
		}
		b.seq = page[len(page)-1].Seq
	}
}

// syncEvents moves past every event so far.
func (b *crashBox) syncEvents(t *testing.T) { t.Helper(); b.events(t) }

// recovered checks what the last start did with the operation the crash
// left unfinished: there was exactly one, of kind on vmID, and it is over
// now, in state want; no operation seen since the crash is still running.
func (b *crashBox) recovered(t *testing.T, kind model.OpKind, vmID string, want model.OpState) model.Operation {
	t.Helper()
	var recovered []string
	ops := map[string]bool{}
	for _, ev := range b.events(t) {
		if ev.Type == "op.recovered" {
			recovered = append(recovered, ev.Object)
		}
		if model.ValidateID(model.KindOperation, ev.Object) == nil {
			ops[ev.Object] = true
		}
	}
	if len(recovered) != 1 {
		t.Fatalf("the restart recovered %d operations (%v), want the one the crash interrupted", len(recovered), recovered)
	}
	o := okJSON[model.Operation](t, b.daemon, "op", "show", recovered[0])
	if o.Kind != kind || o.VMID != vmID {
		t.Fatalf("the restart recovered %s, a %s of %s; want a %s of %s", o.ID, o.Kind, o.VMID, kind, vmID)
	}
	if o.State != want {
		t.Errorf("%s of %s is %s after the restart (step %q, error %q), want %s", o.Kind, vmID, o.State, o.Step, o.Error, want)
	}
	for id := range ops {
		if op := okJSON[model.Operation](t, b.daemon, "op", "show", id); !op.State.Finished() {
			t.Errorf("operation %s (%s of %s) still %s after the restart", id, op.Kind, op.VMID, op.State)
		}
	}
	return o
}

// onDisk returns the VM subvolumes of the pool and the backup snapshots of
// each VM, as directory names.
func (b *crashBox) onDisk(t *testing.T) (vms []string, backups map[string][]string) {
	t.Helper()
	vms = readNames(t, filepath.Join(b.pool, "vms"))
	backups = map[string][]string{}
	for _, id := range readNames(t, filepath.Join(b.pool, "backups")) {
		backups[id] = readNames(t, filepath.Join(b.pool, "backups", id))
	}
	return vms, backups
}

func readNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("read the pool: %v", err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// consistent fails unless the store, as `vm list` and `backup list` show
// it, and the pool agree: every VM has its subvolume and every subvolume
// its VM, the same for backups; no subvolume outside that layout, nothing
// in trash/, no half-made restore file; live VMs hold distinct addresses
// and the others none.
func (b *crashBox) consistent(t *testing.T) {
	t.Helper()
	vms := okJSON[[]model.VM](t, b.daemon, "vm", "list")
	diskVMs, diskBackups := b.onDisk(t)
	listed := map[string]bool{}
	known := map[string]bool{} // subvolume paths the store accounts for
	ips := map[string]string{}
	for _, vm := range vms {
		listed[vm.ID] = true
		known["vms/"+vm.ID] = true
		if !slices.Contains(diskVMs, vm.ID) {
			t.Errorf("%s (%s) has no subvolume vms/%s", vm.ID, vm.State, vm.ID)
		}
		var ids []string
		for _, bk := range okJSON[[]model.Backup](t, b.daemon, "backup", "list", vm.ID) {
			ids = append(ids, bk.ID)
			known["backups/"+vm.ID+"/"+bk.ID] = true
		}
		slices.Sort(ids)
		if disk := diskBackups[vm.ID]; !slices.Equal(ids, disk) {
			t.Errorf("backups of %s: `backup list` has %v, the pool %v", vm.ID, ids, disk)
		}
		live := vm.State == model.StateRunning || vm.State == model.StateStopped
		switch {
		case live && !vm.IP.IsValid():
			t.Errorf("%s is %s without an address", vm.ID, vm.State)
		case !live && vm.IP.IsValid():
			t.Errorf("%s is %s but holds %s", vm.ID, vm.State, vm.IP)
		case live:
			if other, ok := ips[vm.IP.String()]; ok {
				t.Errorf("%s and %s both hold %s", vm.ID, other, vm.IP)
			}
			ips[vm.IP.String()] = vm.ID
		}
		leftovers, _ := filepath.Glob(filepath.Join(b.pool, "vms", vm.ID, ".*.restore-*"))
		if len(leftovers) > 0 {
			t.Errorf("half-made restore files left in vms/%s: %v", vm.ID, leftovers)
		}
	}
	for _, id := range diskVMs {
		if !listed[id] {
			t.Errorf("orphan subvolume vms/%s: no such VM in `vm list`", id)
		}
	}
	for id := range diskBackups {
		if !listed[id] {
			t.Errorf("orphan backups/%s: no such VM in `vm list`", id)
		}
	}
	if trash := readNames(t, filepath.Join(b.pool, "trash")); len(trash) > 0 {
		t.Errorf("trash/ not emptied after the restart: %v", trash)
	}
	out, err := exec.Command("btrfs", "subvolume", "list", b.pool).CombinedOutput()
	if err != nil {
		t.Fatalf("btrfs subvolume list %s: %v\n%s", b.pool, err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		_, path, ok := strings.Cut(line, " path ")
		if !ok {
			continue
		}
		if !known[path] && !strings.HasPrefix(path, "images/") {
			t.Errorf("subvolume %s is neither an image nor a VM or backup the store knows", path)
		}
	}
}

// vmShow returns `vm show ID`.
func (b *crashBox) vmShow(t *testing.T, id string) model.VM {
	t.Helper()
	return okJSON[model.VM](t, b.daemon, "vm", "show", id)
}

// running checks a VM that was running when the daemon crashed (as pre):
// it runs again, on its address, in a new boot, as exactly one QEMU (the
// pid file's), its guest can write and sync, and the file it wrote before
// the crashes reads want.
func (b *crashBox) running(t *testing.T, pre model.VM, want string) {
	t.Helper()
	got := b.vmShow(t, pre.ID)
	if got.State != model.StateRunning || got.IP != pre.IP || got.BootID == "" || got.BootID == pre.BootID {
		t.Errorf("after the restart %s is %s on %v in boot %q; want running on %v in a new boot (was %q)",
			pre.ID, got.State, got.IP, got.BootID, pre.IP, pre.BootID)
	}
	b.oneQEMU(t, pre.ID)
	b.within(t, "vm", "exec", pre.ID, "--", "sh", "-c", "echo x > /data/after-crash && sync")
	if out := b.within(t, "vm", "exec", pre.ID, "--", "cat", "/data/after-crash", "/data/f"); out != "x\n"+want+"\n" {
		t.Errorf("the guest of %s reads %q, want %q", pre.ID, out, "x\n"+want+"\n")
	}
}

// oneQEMU fails unless exactly one QEMU runs the VM: the one its pid file
// names.
func (b *crashBox) oneQEMU(t *testing.T, id string) {
	t.Helper()
	pids := qemuPIDs("superjolt-" + id)
	raw, err := os.ReadFile(filepath.Join(b.runDir, id, "qemu.pid"))
	pid, _ := strconv.Atoi(strings.TrimSpace(string(raw)))
	if len(pids) != 1 || err != nil || pids[0] != pid {
		t.Errorf("QEMU processes of %s: %v, pid file %d (%v); want exactly the pid file's", id, pids, pid, err)
	}
}

// noQEMU fails if any QEMU runs the VM.
func (b *crashBox) noQEMU(t *testing.T, id string) {
	t.Helper()
	if pids := qemuPIDs("superjolt-" + id); len(pids) > 0 {
		t.Errorf("%s is not running, but QEMU processes %v run it", id, pids)
	}
}

// scheduleClear moves the clock past the VM's scheduled backup when it
// falls within the next half hour, so that no scheduled backup runs into
// a crash meant for another operation (a restart takes the manual clock to
// the wall clock's time when that is later).
func (b *crashBox) scheduleClear(t *testing.T, id string) {
	t.Helper()
	next := b.vmShow(t, id).NextBackupAt
	now := okJSON[api.Status](t, b.daemon, "debug", "clock", "show").Now
	if d := next.Sub(now); d < 30*time.Minute {
		okJSON[api.ClockResult](t, b.daemon, "debug", "clock", "advance", (d + time.Minute).Round(time.Second).String())
	}
}

// setUp starts the box's daemon and makes an account and a running VM
// whose guest wrote "before" to /data/f, with an on-demand backup of that.
func (b *crashBox) setUp(t *testing.T, name string, acctArgs ...string) (model.VM, model.Backup) {
	t.Helper()
	b.up(t, "")
	acct := okJSON[model.Account](t, b.daemon, append([]string{"account", "create", name, "--balance", "1000"}, acctArgs...)...)
	vm := okJSON[model.VM](t, b.daemon, "vm", "create", "--account", acct.ID, "--tier", "nano")
	b.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo before > /data/f && sync")
	bk := okJSON[model.Backup](t, b.daemon, "backup", "create", vm.ID)
	return vm, bk
}

// hasBackup fails unless bk is in `backup list` and on disk.
func (b *crashBox) hasBackup(t *testing.T, bk model.Backup) {
	t.Helper()
	bks := okJSON[[]model.Backup](t, b.daemon, "backup", "list", bk.VMID)
	if !slices.ContainsFunc(bks, func(x model.Backup) bool { return x.ID == bk.ID }) {
		t.Errorf("backup %s, taken before the crash, is gone from `backup list %s`", bk.ID, bk.VMID)
	}
	if _, err := os.Stat(filepath.Join(b.pool, "backups", bk.VMID, bk.ID)); err != nil {
		t.Errorf("backup %s, taken before the crash, is gone from the pool: %v", bk.ID, err)
	}
}

// steps runs one subtest per step of kind, in order, and stops at the
// first that fails: the next ones would start from an unknown state.
func steps(t *testing.T, kind string, list []string, run func(t *testing.T, step string)) {
	t.Helper()
	for _, step := range list {
		if !t.Run(kind+":"+step, func(t *testing.T) { run(t, step) }) {
			t.Fatalf("%s:%s failed; the steps after it were not run", kind, step)
		}
	}
}

// TestCrashBackup kills superjoltd at every step of a backup of a running
// guest. The core promises: a snapshot that exists is kept and recorded,
// none made means the operation is rolled back; retention pruning planned
// before the crash is finished; the guest is not left frozen. Nothing is
// written to the store while the guest is frozen, so the steps frozen,
// snapshot and thawed are written together after the thaw: a crash after
// the snapshot and before that write keeps the backup as crash-consistent
// (the freeze held, but recovery cannot prove it and claims no more than
// it can); from the write on it is frozen.
func TestCrashBackup(t *testing.T) {
	needVMs(t)
	b := newCrashBox(t)
	vm, first := b.setUp(t, "crash-backup", "--retention", "1")
	snapshotTaken := map[string]bool{"recorded": false, "frozen": false, "snapshot": true, "thawed": true, "saved": true, "pruned": true}
	freezeRecorded := map[string]bool{"saved": true, "pruned": true}
	steps(t, "backup", appliance.Steps(model.OpBackup), func(t *testing.T, step string) {
		taken, ok := snapshotTaken[step]
		if !ok {
			t.Fatalf("no expectation for the backup step %q: add it to this test", step)
		}
		before := okJSON[[]model.Backup](t, b.daemon, "backup", "list", vm.ID)
		args := []string{"backup", "create", vm.ID}
		var pruned []model.Backup
		if step == "pruned" {
			// Retention 1: the next scheduled backup prunes the last one.
			for _, bk := range before {
				if bk.Kind == model.Scheduled {
					pruned = append(pruned, bk)
				}
			}
			if len(pruned) == 0 {
				next := b.vmShow(t, vm.ID).NextBackupAt
				now := okJSON[api.Status](t, b.daemon, "debug", "clock", "show").Now
				okJSON[api.ClockResult](t, b.daemon, "debug", "clock", "advance", (next.Sub(now) + time.Minute).Round(time.Second).String())
				before = okJSON[[]model.Backup](t, b.daemon, "backup", "list", vm.ID)
				pruned = slices.DeleteFunc(slices.Clone(before), func(bk model.Backup) bool { return bk.Kind != model.Scheduled })
			}
			if len(pruned) != 1 {
				t.Fatalf("want one scheduled backup to prune, have %+v", pruned)
			}
			args = []string{"debug", "clock", "advance", "24h"}
		} else {
			b.scheduleClear(t, vm.ID)
		}
		pre := b.crash(t, "backup:"+step, args...)
		want := model.OpRolledBack
		if taken {
			want = model.OpDone
		}
		o := b.recovered(t, model.OpBackup, vm.ID, want)
		after := okJSON[[]model.Backup](t, b.daemon, "backup", "list", vm.ID)
		i := slices.IndexFunc(after, func(bk model.Backup) bool { return bk.ID == o.BackupID })
		_, diskErr := os.Stat(filepath.Join(b.pool, "backups", vm.ID, o.BackupID))
		switch {
		case taken && (i < 0 || diskErr != nil):
			t.Errorf("the snapshot %s was taken before the crash; `backup list` has it: %v, the pool: %v", o.BackupID, i >= 0, diskErr)
		case !taken && (i >= 0 || diskErr == nil):
			t.Errorf("no snapshot was taken before the crash, yet %s is listed (%v) or on disk (%v)", o.BackupID, i >= 0, diskErr)
		case taken && freezeRecorded[step] && after[i].Consistency != model.Frozen:
			t.Errorf("backup %s is %s, want frozen: the freeze was recorded before the crash", o.BackupID, after[i].Consistency)
		case taken && !freezeRecorded[step] && after[i].Consistency != model.Crash:
			t.Errorf("backup %s is %s, want crash: the crash came before the freeze was recorded, so it cannot be proven", o.BackupID, after[i].Consistency)
		}
		for _, bk := range before {
			if slices.ContainsFunc(pruned, func(p model.Backup) bool { return p.ID == bk.ID }) {
				if slices.ContainsFunc(after, func(x model.Backup) bool { return x.ID == bk.ID }) {
					t.Errorf("backup %s was to be pruned by the crashed scheduled backup, and is still listed", bk.ID)
				}
				continue
			}
			b.hasBackup(t, bk)
		}
		if step == "pruned" && (i < 0 || after[i].Kind != model.Scheduled) {
			t.Errorf("the crashed scheduled backup %s: %+v", o.BackupID, after)
		}
		b.hasBackup(t, first)
		b.running(t, pre[vm.ID], "before")
		b.consistent(t)
	})
}

// TestCrashRestore kills superjoltd at every step of a restore of a running
// guest. The core promises the restore is finished (the disk replaced again
// from the backup, atomically) and the VM booted: the guest reads the
// backed-up data, on the same address, in a new boot.
func TestCrashRestore(t *testing.T) {
	needVMs(t)
	b := newCrashBox(t)
	vm, bk := b.setUp(t, "crash-restore")
	steps(t, "restore", appliance.Steps(model.OpRestore), func(t *testing.T, step string) {
		b.ok(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo after > /data/f && sync")
		b.scheduleClear(t, vm.ID)
		pre := b.crash(t, "restore:"+step, "backup", "restore", vm.ID, bk.ID, "--yes")
		if o := b.recovered(t, model.OpRestore, vm.ID, model.OpDone); o.BackupID != bk.ID {
			t.Errorf("the recovered restore is from %s, want %s", o.BackupID, bk.ID)
		}
		b.running(t, pre[vm.ID], "before")
		b.hasBackup(t, bk)
		b.consistent(t)
	})
}

// TestCrashDestroy kills superjoltd at every step of a destroy of a running
// VM older than an hour. The core promises the destroy is finished: the VM
// is in the graveyard (no process, no address, its disk and backups kept
// for RecoveryWindow), never back as it was. Each step resumes it for the
// next.
func TestCrashDestroy(t *testing.T) {
	needVMs(t)
	b := newCrashBox(t)
	vm, bk := b.setUp(t, "crash-destroy")
	okJSON[api.ClockResult](t, b.daemon, "debug", "clock", "advance", "2h")
	steps(t, "destroy", appliance.Steps(model.OpDestroy), func(t *testing.T, step string) {
		pre := b.crash(t, "destroy:"+step, "vm", "destroy", vm.ID, "--yes")[vm.ID]
		b.recovered(t, model.OpDestroy, vm.ID, model.OpDone)
		now := okJSON[api.Status](t, b.daemon, "debug", "clock", "show").Now
		got := b.vmShow(t, vm.ID)
		if got.State != model.StateGraveyard || got.IP.IsValid() || got.LastIP != pre.IP || !got.WantRunning ||
			!got.ReclaimAt.After(now) || got.ReclaimAt.After(now.Add(appliance.RecoveryWindow)) {
			t.Errorf("after the restart %+v; want it in the graveyard until about %s, without an address (last %v), to resume running",
				got, now.Add(appliance.RecoveryWindow), pre.IP)
		}
		b.noQEMU(t, vm.ID)
		if _, err := os.Stat(filepath.Join(b.pool, "vms", vm.ID)); err != nil {
			t.Errorf("a graveyard VM lost its disk: %v", err)
		}
		b.hasBackup(t, bk)
		b.consistent(t)

		resumed := okJSON[model.VM](t, b.daemon, "vm", "resume", vm.ID)
		if resumed.State != model.StateRunning || resumed.IP != pre.IP {
			t.Fatalf("vm resume after the recovered destroy: %s on %v, want running on %v", resumed.State, resumed.IP, pre.IP)
		}
		b.running(t, pre, "before")
	})
}

// TestCrashReclaim kills superjoltd at every step of the reaper's reclaim
// of a graveyard VM whose 24 hours are up. The core promises the reclaim is
// finished: nothing of the VM is left, on disk or in the store. A
// reclaimed VM is gone, so each step destroys a new one.
func TestCrashReclaim(t *testing.T) {
	needVMs(t)
	b := newCrashBox(t)
	b.up(t, "")
	acct := okJSON[model.Account](t, b.daemon, "account", "create", "crash-reclaim", "--balance", "1000")
	steps(t, "reclaim", appliance.Steps(model.OpReclaim), func(t *testing.T, step string) {
		vm := okJSON[model.VM](t, b.daemon, "vm", "create", "--account", acct.ID, "--tier", "nano")
		okJSON[model.Backup](t, b.daemon, "backup", "create", vm.ID)
		okJSON[api.ClockResult](t, b.daemon, "debug", "clock", "advance", "2h")
		if res := okJSON[api.DestroyResult](t, b.daemon, "vm", "destroy", vm.ID, "--yes"); res.Reclaimed || res.VM.State != model.StateGraveyard {
			t.Fatalf("destroy of a VM 2 h old: %+v, want it in the graveyard", res)
		}
		b.crash(t, "reclaim:"+step, "debug", "clock", "advance", "25h")
		b.recovered(t, model.OpReclaim, vm.ID, model.OpDone)
		if r := b.sj(t, "vm", "show", vm.ID); r.code != exitNotFound {
			t.Errorf("vm show of the reclaimed %s: exit %d (%s), want %d", vm.ID, r.code, r.stdout, exitNotFound)
		}
		if out := b.ok(t, "vm", "list"); strings.Contains(out, vm.ID) {
			t.Errorf("vm list still shows the reclaimed %s:\n%s", vm.ID, out)
		}
		for _, p := range []string{"vms/" + vm.ID, "backups/" + vm.ID} {
			if _, err := os.Stat(filepath.Join(b.pool, p)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("pool/%s still exists after the recovered reclaim: %v", p, err)
			}
		}
		b.noQEMU(t, vm.ID)
		b.consistent(t)
	})
}
