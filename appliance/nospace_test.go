package appliance

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/guest"
	"golang.org/x/sys/unix"
)

// wantNoSpace fails unless err is a no_space error naming the pool and how
// much of it is free.
func (e *env) wantNoSpace(err error, what string) {
	e.t.Helper()
	wantCode(e.t, err, "no_space")
	sp, serr := e.pool.Space(context.Background())
	if serr != nil {
		e.t.Fatal(serr)
	}
	msg := err.Error()
	if !strings.Contains(msg, sp.Pool) || !strings.Contains(msg, " free of "+btrfs.FormatBytes(sp.Size)) ||
		!strings.Contains(msg, "superjolt backup list") {
		e.t.Errorf("%s on a full pool: %q does not name the pool %s, its free bytes and what to do", what, msg, sp.Pool)
	}
}

// guestRun runs a shell script in a real guest with a long timeout and
// returns its output and exit code; a failure to run it at all fails the
// test.
func (e *env) guestRun(id, script string, timeout time.Duration) (string, int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout+30*time.Second)
	defer cancel()
	res, err := e.a.Exec(ctx, id, guest.ExecRequest{Path: "sh", Args: []string{"-c", script}, Timeout: timeout})
	if err != nil {
		e.t.Fatalf("exec %q in %s: %v", script, id, err)
	}
	return string(res.Stdout) + string(res.Stderr), res.ExitCode
}

// TestRealPoolFull: a real guest (the hog) fills a small pool by writing
// into its disk. It keeps running (the write fails in the guest as an I/O
// error; QEMU does not pause it) and answers its agent, as does the other
// guest. On the full pool a backup, a restore of the other guest, a new VM
// and the scheduled backups fail with no_space naming the pool and its free
// bytes, leaving no subvolume, row or running operation behind, and the
// guest that was to be restored keeps running. Restoring the hog from its
// backup (which writes no data) frees the space; then a backup and a
// restore of the other guest work again.
func TestRealPoolFull(t *testing.T) {
	requireE2fs(t)
	start := time.Now()
	e := newEnv(t, envOptions{realVMs: true, poolSize: 512 << 20})
	ctx := context.Background()
	acct := e.account("filler", 1000*model.Credit, 0)
	vm, hog := e.vm(acct.ID), e.vm(acct.ID)
	e.guestExec(vm.ID, "echo before > /data/f && sync")
	bk, err := e.a.CreateBackup(ctx, vm.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.guestExec(vm.ID, "echo after > /data/f && sync")
	hogBk, err := e.a.CreateBackup(ctx, hog.ID)
	if err != nil {
		t.Fatal(err)
	}
	st0, err := e.a.PoolStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("before filling (%s in): %+v", time.Since(start).Round(time.Millisecond), st0)

	// The hog fills the pool: 16 MiB files, each fsynced, until a write
	// fails.
	fillStart := time.Now()
	out, code := e.guestRun(hog.ID, `i=0; while dd if=/dev/zero of=/data/big$i bs=1M count=16 conv=fsync 2>/tmp/dd.err; do i=$((i+1)); done; echo files=$i; cat /tmp/dd.err`, 5*time.Minute)
	t.Logf("guest fill took %s, exit %d: %s", time.Since(fillStart).Round(time.Millisecond), code, strings.TrimSpace(out))
	if !strings.Contains(out, "Input/output error") { // EIO, from werror=report
		t.Errorf("the guest's write did not fail with an I/O error: %s", out)
	}
	sp, err := e.pool.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("full pool: %s free of %s (%d of %d bytes), metadata %d free, reserve %d",
		btrfs.FormatBytes(sp.Free), btrfs.FormatBytes(sp.Size), sp.Free, sp.Size, sp.MetadataFree, sp.Reserve)
	if full, meta := sp.Full(); !full || meta {
		t.Fatalf("the guest's writes did not fill the pool's data space: %+v", sp)
	}

	// Both guests run and answer their agents.
	for _, v := range []model.VM{hog, vm} {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ping, err := e.a.agent(v.ID).Ping(pctx)
		cancel()
		if err != nil || ping.BootID != v.BootID {
			t.Fatalf("%s on a full pool: ping %+v, %v; want boot %s", v.ID, ping, err, v.BootID)
		}
		if got := e.guestExec(v.ID, "echo alive"); got != "alive\n" {
			t.Fatalf("exec in %s on a full pool: %q", v.ID, got)
		}
	}

	// Everything that needs space fails with no_space, leaving nothing.
	_, err = e.a.CreateBackup(ctx, vm.ID)
	e.wantNoSpace(err, "backup create")
	_, err = e.a.RestoreVM(ctx, vm.ID, bk.ID)
	e.wantNoSpace(err, "backup restore")
	if cur := e.getVM(vm.ID); cur.State != model.StateRunning || cur.BootID != vm.BootID || !e.isRunning(vm.ID) {
		t.Errorf("a refused restore touched the guest: %+v", cur)
	}
	_, err = e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano"})
	e.wantNoSpace(err, "vm create")
	if vms, _ := e.a.VMs(ctx, VMFilter{}); len(vms) != 2 {
		t.Errorf("a refused create left VMs: %+v", vms)
	}
	if o := lastOp(t, e, model.OpCreate); o.State != model.OpFailed || o.ErrorCode != "no_space" {
		t.Errorf("the refused create's operation: %s %q", o.State, o.ErrorCode)
	}
	// The scheduler: the day's backups fail, say why, and are retried.
	e.advance(24 * time.Hour)
	failed := e.eventsOfType("backup.failed")
	if len(failed) == 0 || !strings.Contains(failed[len(failed)-1].Message, sp.Pool) || !strings.Contains(failed[len(failed)-1].Message, "is full") {
		t.Errorf("scheduled backups on a full pool: events %+v, want backup.failed naming the pool", failed)
	} else {
		t.Logf("%d scheduled backups refused; the last: %s", len(failed), failed[len(failed)-1].Message)
	}
	for _, v := range []model.VM{vm, hog} {
		if bks, _ := e.a.Backups(ctx, v.ID); len(bks) != 1 {
			t.Errorf("backups of %s after the refusals: %+v, want one", v.ID, bks)
		}
	}
	e.checkConsistent()
	st, err := e.a.PoolStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Full || st.VMs.Count != 2 || st.Backups.Count != 2 || st.VMs.Exclusive < st0.VMs.Exclusive+(256<<20) {
		t.Errorf("status of the full pool: %+v", st)
	}
	t.Logf("full pool status: %+v", st)

	// The hog's guest cannot free the space itself (its ext4 went read-only
	// when its journal could not be written); restoring it from its backup
	// can: it writes no data, and the disk it replaces held the space.
	restoredHog, err := e.a.RestoreVM(ctx, hog.ID, hogBk.ID)
	if err != nil {
		t.Fatalf("restore of the guest that filled the pool: %v", err)
	}
	if restoredHog.BootID == hog.BootID {
		t.Errorf("the hog's restore kept boot id %s", hog.BootID)
	}
	waitFree(t, e)
	sp, _ = e.pool.Space(ctx)
	t.Logf("after restoring the hog: %s free of %s", btrfs.FormatBytes(sp.Free), btrfs.FormatBytes(sp.Size))
	if got := e.guestExec(hog.ID, "ls /data | grep -c big; echo ok > /data/g && sync && cat /data/g"); got != "0\nok\n" {
		t.Errorf("the restored hog: %q, want no big files and a working disk", got)
	}

	// Space is back: a backup and a restore of the other guest work.
	if _, err := e.a.CreateBackup(ctx, vm.ID); err != nil {
		t.Fatalf("backup after freeing space: %v", err)
	}
	restored, err := e.a.RestoreVM(ctx, vm.ID, bk.ID)
	if err != nil {
		t.Fatalf("restore after freeing space: %v", err)
	}
	if restored.BootID == vm.BootID {
		t.Errorf("restore kept boot id %s", vm.BootID)
	}
	if got := e.guestExec(vm.ID, "cat /data/f"); got != "before\n" {
		t.Errorf("after the restore the guest reads %q, want %q", got, "before\n")
	}
	e.checkConsistent()
	t.Logf("whole test: %s", time.Since(start).Round(time.Millisecond))
}

// waitFree waits (up to a minute) until the pool is above its reserve again:
// freed extents come back after a commit and the cleaner.
func waitFree(t *testing.T, e *env) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		sp, err := e.pool.Space(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if full, _ := sp.Full(); !full {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pool is still full: %+v", sp)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestPoolStatus: the appliance's pool status counts its images, VMs and
// backups, with what each kind holds.
func TestPoolStatus(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	acct := e.account("counted", 100*model.Credit, 0)
	vm := e.vm(acct.ID)
	for range 2 {
		if _, err := e.a.CreateBackup(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	st, err := e.a.PoolStatus(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Images.Count != 1 || st.VMs.Count != 1 || st.Backups.Count != 2 || st.Full ||
		st.Size != 1<<30 || st.Used != st.Size-st.Free || st.Images.Referenced < 64<<10 ||
		st.VMs.Referenced < st.Images.Referenced || st.Backups.Referenced < 2*st.Images.Referenced {
		t.Errorf("pool status: %+v", st)
	}
}

// TestNoSpaceErr: what counts as the pool being full, and what the
// operator reads then.
func TestNoSpaceErr(t *testing.T) {
	e := newEnv(t, envOptions{poolSize: 256 << 20})
	ctx := context.Background()
	sp, err := e.pool.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		err   error
		space bool
	}{
		{"ENOSPC", fmt.Errorf("truncate: %w", &os.PathError{Op: "truncate", Path: "/x", Err: unix.ENOSPC}), true},
		{"EDQUOT", fmt.Errorf("write: %w", unix.EDQUOT), true},
		{"tool output", errors.New("resize2fs /x: exit status 1: resize2fs: No space left on device while trying to resize /x"), true},
		{"pool error", &btrfs.NoSpaceError{Op: "back up vm-abc123", Space: sp}, true},
		{"other", errors.New("e2fsck: exit status 8"), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := e.a.noSpaceErr(ctx, tt.err, "grow the disk of vm-abc123")
			if !tt.space {
				if got != nil {
					t.Fatalf("noSpaceErr(%v) = %v, want nil", tt.err, got)
				}
				return
			}
			want := fmt.Sprintf("no space: cannot grow the disk of vm-abc123: the pool %s is full (%s free of 256.0 MiB): delete on-demand backups",
				sp.Pool, btrfs.FormatBytes(sp.Free))
			if model.Code(got) != "no_space" || !strings.HasPrefix(got.Error(), want) {
				t.Errorf("noSpaceErr(%v) = %v, want %q…", tt.err, got, want)
			}
		})
	}
	// categorised recognises a pool error that reached it wrapped.
	err = categorised(fmt.Errorf("x: %w", &btrfs.NoSpaceError{Op: "y", Space: sp, Metadata: true}), "make the disk")
	if model.Code(err) != "no_space" || !strings.Contains(err.Error(), "has no room left for metadata") {
		t.Errorf("categorised: %v", err)
	}
}
