package vmm_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/vmm"
)

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			m[k] = strings.Join(strings.Fields(v), " ")
		}
	}
	return m
}

// openAs tries, in a child running as uid:gid with no groups, to read one block of path. It returns
// the child's error (nil when it could read).
func openAs(t *testing.T, uid int, path string) error {
	t.Helper()
	dd, err := exec.LookPath("dd")
	if err != nil {
		t.Skip("needs dd (coreutils)")
	}
	cmd := exec.Command(dd, "if="+path, "of=/dev/null", "bs=4096", "count=1", "status=none")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{}}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("as uid %d, dd if=%s: %v: %s", uid, path, err, bytes.TrimSpace(out))
	}
	return err
}

// TestConfinedQEMU boots a real guest and checks how its QEMU runs: as a uid of its own (not root),
// under its seccomp sandbox, without capabilities, with its disk handed over to that uid; the guest
// boots, answers its agent and freezes and thaws. A second machine gets another uid, and neither
// machine's user can read the other's disk, by path or through /proc/PID/fd.
func TestConfinedQEMU(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: only a root daemon runs QEMU as a user of its own")
	}
	a := newMachine(t, context.Background(), nil)
	b := newMachine(t, context.Background(), func(c *vmm.Config) { c.Name += "-b"; c.Paused = true })
	if err := a.Start(ctxT(t, 3*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctxT(t, time.Minute)); err != nil {
		t.Fatal(err)
	}

	uidA, uidB := a.UID(), b.UID()
	t.Logf("uids: %s=%d %s=%d", a.Config().Name, uidA, b.Config().Name, uidB)
	for _, u := range []int{uidA, uidB} {
		if u < vmm.UIDBase || u >= vmm.UIDBase+vmm.UIDCount {
			t.Fatalf("uid %d is outside the range [%d, %d)", u, vmm.UIDBase, vmm.UIDBase+vmm.UIDCount)
		}
	}
	if uidA == uidB {
		t.Fatalf("two machines that run at once share uid %d", uidA)
	}

	// How the kernel sees QEMU.
	st := procStatus(t, a.PID())
	id := strconv.Itoa(uidA)
	want := map[string]string{
		"Uid":        strings.Repeat(id+" ", 3) + id, // real, effective, saved, filesystem
		"Gid":        strings.Repeat(id+" ", 3) + id,
		"Groups":     "",
		"Seccomp":    "2", // filter mode
		"NoNewPrivs": "1",
		"CapEff":     "0000000000000000",
		"CapPrm":     "0000000000000000",
	}
	for k, v := range want {
		if st[k] != v {
			t.Errorf("/proc/%d/status %s: %q, want %q", a.PID(), k, st[k], v)
		}
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(a.PID()) + "/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(cmdline, []byte("\x00-sandbox\x00on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny\x00")) {
		t.Errorf("QEMU's command line lacks the sandbox denials: %q", cmdline)
	}

	// The guest works: agent, freeze, thaw.
	ctx := ctxT(t, time.Minute)
	if _, err := a.Agent().Ping(ctx); err != nil {
		t.Fatalf("ping: %v", err)
	}
	fr, err := a.Agent().Freeze(ctx, 30*time.Second)
	if err != nil {
		t.Fatalf("freeze: %v", err)
	}
	if len(fr.Filesystems) == 0 {
		t.Error("freeze froze no filesystem")
	}
	if err := a.Agent().Thaw(ctx); err != nil {
		t.Fatalf("thaw: %v", err)
	}

	// Each disk belongs to its machine's user alone.
	for _, m := range []*vmm.QEMU{a, b} {
		fi, err := os.Stat(m.Config().Rootfs)
		if err != nil {
			t.Fatal(err)
		}
		sys := fi.Sys().(*syscall.Stat_t)
		if int(sys.Uid) != m.UID() || int(sys.Gid) != m.UID() || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: owner %d:%d mode %v, want %d:%d 0600", m.Config().Rootfs, sys.Uid, sys.Gid, fi.Mode().Perm(), m.UID(), m.UID())
		}
	}
	diskFD := func(m *vmm.QEMU) string {
		t.Helper()
		dir := "/proc/" + strconv.Itoa(m.PID()) + "/fd"
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if target, _ := os.Readlink(filepath.Join(dir, e.Name())); target == m.Config().Rootfs {
				return filepath.Join(dir, e.Name())
			}
		}
		t.Fatalf("QEMU pid %d has no descriptor of %s", m.PID(), m.Config().Rootfs)
		return ""
	}
	// A machine's own user can reach its disk through its QEMU (the control: the check below works).
	if err := openAs(t, uidA, diskFD(a)); err != nil {
		t.Errorf("uid %d cannot read its own QEMU's disk descriptor: %v", uidA, err)
	}
	// The other machine's user can reach it neither way.
	if openAs(t, uidB, diskFD(a)) == nil {
		t.Errorf("uid %d read the disk of %s through /proc", uidB, a.Config().Name)
	}
	if openAs(t, uidB, a.Config().Rootfs) == nil {
		t.Errorf("uid %d read the disk of %s by path", uidB, a.Config().Name)
	}
	if openAs(t, uidA, b.Config().Rootfs) == nil {
		t.Errorf("uid %d read the disk of %s by path", uidA, b.Config().Name)
	}
	// Even with the directories above it open to all, the disk's owner and mode keep another uid out.
	for dir := filepath.Dir(a.Config().Rootfs); dir != os.TempDir() && dir != "/"; dir = filepath.Dir(dir) {
		if err := os.Chmod(dir, 0o711); err != nil {
			t.Fatal(err)
		}
	}
	if err := openAs(t, uidA, a.Config().Rootfs); err != nil {
		t.Errorf("with the directories open, uid %d cannot read its own disk: %v", uidA, err)
	}
	if openAs(t, uidB, a.Config().Rootfs) == nil {
		t.Errorf("uid %d read the disk of %s through open directories", uidB, a.Config().Name)
	}
}
