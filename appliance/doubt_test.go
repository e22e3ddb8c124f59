package appliance

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// withoutDAC runs a command as root without the capabilities that let root
// read any file: a directory made unreadable (mode 0) is then unreadable
// to it, as it would be to any process. Root can otherwise not be kept out.
var withoutDAC = []string{"setpriv", "--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search", "--"}

// unfinished returns the operations the store says are unfinished, reading
// it while the appliance is closed.
func (e *env) unfinished() []model.Operation {
	e.t.Helper()
	st, err := store.Open(context.Background(), store.Options{Dir: filepath.Join(e.stateDir, "db"), Logger: testLogger(e.t)})
	if err != nil {
		e.t.Fatal(err)
	}
	defer st.Close()
	var ops []model.Operation
	if err := st.View(context.Background(), func(tx *store.Tx) error {
		var err error
		ops, err = tx.UnfinishedOperations()
		return err
	}); err != nil {
		e.t.Fatal(err)
	}
	return ops
}

// TestRecoveryOnDoubt: recovery changes nothing it has not proved. A
// backup's snapshot that recovery cannot look for (its directory
// unreadable) stops the start with an error naming the operation, and
// nothing is deleted; once readable, the same start recovers it. An intent
// record that does not parse stops the start too, before a create's undo
// could delete a live VM's disk. Subvolumes no row knows are set aside with
// an event, not deleted, and are deleted only after OrphanGrace.
func TestRecoveryOnDoubt(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Skip("setpriv (util-linux) is missing: cannot run a child without root's file access")
	}
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("doubt", 10_000*model.Credit, 5)
	vm := e.vm(acct.ID)

	// The pool's state cannot be read: refuse to start, delete nothing.
	e.crashOnly("backup:snapshot", "backup "+vm.ID)
	dir := filepath.Join(e.pool.Root(), "backups", vm.ID)
	snaps, err := e.pool.Backups(ctx, vm.ID)
	if err != nil || len(snaps) != 1 {
		t.Fatalf("after the crash the pool holds backups %v, %v; want the one snapshot", snaps, err)
	}
	if err := os.Chmod(dir, 0); err != nil {
		t.Fatal(err)
	}
	ps, err, out := e.child(withoutDAC, "", "open")
	if err == nil || ps.ExitCode() != 2 {
		t.Fatalf("open with %s unreadable: %v, want New to fail\n%s", dir, err, out)
	}
	ops := e.unfinished()
	if len(ops) != 1 || ops[0].Kind != model.OpBackup {
		t.Fatalf("unfinished operations after the refused start = %+v; want the backup, untouched", ops)
	}
	for _, want := range []string{ops[0].ID, "cannot list the backups of " + vm.ID, "nothing was deleted"} {
		if !strings.Contains(out, want) {
			t.Errorf("the refused start says:\n%s\nwant it to mention %q", out, want)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if after, err := e.pool.Backups(ctx, vm.ID); err != nil || !slices.Equal(after, snaps) {
		t.Fatalf("the refused start changed the backups: %v, %v; had %v", after, err, snaps)
	}
	e.open()
	bks, err := e.a.Backups(ctx, vm.ID)
	if err != nil || len(bks) != 1 || bks[0].ID != snaps[0] {
		t.Fatalf("once readable, recovery recorded %+v, %v; want the snapshot %s", bks, err, snaps[0])
	}

	// An intent that does not parse: a create's undo would delete the
	// disk of a VM that runs; recovery must not guess.
	e.close()
	st, err := store.Open(ctx, store.Options{Dir: filepath.Join(e.stateDir, "db"), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	var badID string
	if err := st.Update(ctx, func(tx *store.Tx) error {
		if badID, err = tx.NewID(model.KindOperation); err != nil {
			return err
		}
		return tx.PutOperation(model.Operation{ID: badID, Kind: model.OpCreate, VMID: vm.ID, State: model.OpRunning,
			Step: "recorded", StartedAt: e.clk.Now(), Intent: []byte(`{"steps":"recorded"}`)})
	}); err != nil {
		t.Fatal(err)
	}
	_, err = New(ctx, Options{Store: st, Pool: e.pool, Hypervisor: e.hv, Clock: e.clk, RunDir: e.runDir, Logger: testLogger(t)})
	if err == nil || !strings.Contains(err.Error(), badID) || !strings.Contains(err.Error(), "does not parse") {
		t.Fatalf("New with a damaged intent = %v; want an error naming %s and saying it does not parse", err, badID)
	}
	if has, _ := e.poolHas(vm.ID); !has {
		t.Fatalf("the refused start deleted the disk of %s", vm.ID)
	}
	if err := st.Update(ctx, func(tx *store.Tx) error { return tx.DeleteOperation(badID) }); err != nil {
		t.Fatal(err)
	}
	st.Close()
	e.open()
	if got := e.getVM(vm.ID); got.State != model.StateRunning {
		t.Fatalf("%s is %s after the damaged record was removed, want running", vm.ID, got.State)
	}

	// Subvolumes no row knows: set aside with an event, then deleted after
	// the grace period.
	if _, err := e.pool.CreateVM(ctx, "vm-zzzzzz", DefaultImage); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Backup(ctx, vm.ID, "bk-zzzzzzzzzz"); err != nil {
		t.Fatal(err)
	}
	e.reopen()
	aside := e.eventsOfType("pool.orphan_set_aside")
	if len(aside) != 2 || !strings.Contains(aside[0].Message+aside[1].Message, "vms/vm-zzzzzz") ||
		!strings.Contains(aside[0].Message+aside[1].Message, "backups/"+vm.ID+"/bk-zzzzzzzzzz") {
		t.Fatalf("set-aside events = %+v; want one for vms/vm-zzzzzz and one for the stray backup", aside)
	}
	q, err := e.pool.Quarantine(ctx)
	if err != nil || len(q) != 2 {
		t.Fatalf("set aside: %+v, %v; want the two strays, with their data", q, err)
	}
	if has, _ := e.poolHas("vm-zzzzzz"); has {
		t.Fatal("the stray VM disk is still listed as a VM")
	}
	e.checkConsistent()
	e.advance(OrphanGrace - time.Hour)
	if q, _ := e.pool.Quarantine(ctx); len(q) != 2 {
		t.Fatalf("an hour before the grace ends, %d things are still set aside, want 2", len(q))
	}
	if n := len(e.eventsOfType("pool.orphan_deleted")); n != 0 {
		t.Fatalf("%d orphans deleted before the grace ended", n)
	}
	e.advance(2 * time.Hour)
	if q, _ := e.pool.Quarantine(ctx); len(q) != 0 {
		t.Fatalf("after the grace, still set aside: %+v", q)
	}
	if n := len(e.eventsOfType("pool.orphan_deleted")); n != 2 {
		t.Fatalf("%d orphan_deleted events after the grace, want 2", n)
	}
	e.checkConsistent()
}
