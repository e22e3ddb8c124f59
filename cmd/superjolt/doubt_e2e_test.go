package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestDaemonRefusesToStartOnDoubt: superjoltd killed right after a backup's
// snapshot, then started where it cannot list that VM's backups (the
// directory made unreadable, and superjoltd run without root's power to read
// anything): it refuses to start, says which operation and why, and deletes
// nothing. Once the directory is readable again, it starts and records the
// backup that the snapshot holds.
func TestDaemonRefusesToStartOnDoubt(t *testing.T) {
	needVMs(t)
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is missing: cannot run superjoltd without root's file access")
	}
	b := newCrashBox(t)
	b.up(t, "")
	a := okJSON[model.Account](t, b.daemon, "account", "create", "doubt", "--balance", "100")
	vm := okJSON[model.VM](t, b.daemon, "vm", "create", "--account", a.ID, "--tier", "nano")

	// Killed right after the snapshot, before it is recorded.
	b.down(t)
	b.up(t, "backup:snapshot")
	b.sj(t, "backup", "create", vm.ID)
	select {
	case <-b.exited:
		b.cmd = nil
	case <-time.After(30 * time.Second):
		t.Fatal("superjoltd did not die at backup:snapshot")
	}
	dir := filepath.Join(b.pool, "backups", vm.ID)
	snaps, _ := os.ReadDir(dir)
	if len(snaps) != 1 {
		t.Fatalf("after the crash %s holds %d entries, want the one snapshot", dir, len(snaps))
	}
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(dir, 0o755)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "setpriv", append([]string{"--inh-caps=-dac_override,-dac_read_search",
		"--bounding-set=-dac_override,-dac_read_search", "--", filepath.Join(b.bin, "superjoltd")}, b.args...)...)
	ownNetns(cmd)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("superjoltd with %s unreadable: %v, want it to refuse to start\n%s", dir, err, out.String())
	}
	for _, want := range []string{"cannot recover op-", "backup of " + vm.ID, "cannot list the backups of " + vm.ID, "nothing was deleted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the refusal does not say %q:\n%s", want, out.String())
		}
	}
	if _, err := os.Stat(b.socket); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a superjoltd that refused to start left its socket: %v", err)
	}

	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if after, _ := os.ReadDir(dir); len(after) != 1 || after[0].Name() != snaps[0].Name() {
		t.Fatalf("the refused start changed %s: %v, had %v", dir, after, snaps)
	}
	b.up(t, "")
	bks := okJSON[[]model.Backup](t, b.daemon, "backup", "list", vm.ID)
	if len(bks) != 1 || bks[0].ID != snaps[0].Name() {
		t.Fatalf("once readable, the start recorded %+v; want the snapshot %s", bks, snaps[0].Name())
	}
	if r := b.sj(t, "vm", "exec", vm.ID, "--", "sh", "-c", "echo ok > /root/after && sync"); r.code != 0 {
		t.Fatalf("the guest cannot write after the recovery: exit %d %s", r.code, r.stderr)
	}
}
