package appliance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/guest"
)

// bothHypervisors runs fn with real VMs (skipped, naming what is missing,
// when the host cannot boot them) and with the stub, so that every rule is
// exercised with real guests while staying testable without them.
func bothHypervisors(t *testing.T, fn func(t *testing.T, real bool)) {
	t.Run("qemu", func(t *testing.T) { fn(t, true) })
	t.Run("stub", func(t *testing.T) { fn(t, false) })
}

// isRunning reports whether the VM has a live process.
func (e *env) isRunning(id string) bool {
	return e.a.agent(id) != nil
}

// guestExec runs a shell script in a real guest and returns its stdout.
func (e *env) guestExec(id, script string) string {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := e.a.Exec(ctx, id, guest.ExecRequest{Path: "sh", Args: []string{"-c", script}, Timeout: 50 * time.Second})
	if err != nil {
		e.t.Fatalf("exec %q in %s: %v", script, id, err)
	}
	if res.ExitCode != 0 {
		e.t.Fatalf("exec %q in %s: exit %d, stderr %s", script, id, res.ExitCode, res.Stderr)
	}
	return string(res.Stdout)
}

// TestRetention: seven days of scheduled backups keep exactly the newest 5
// (2 for an account with retention 2); on-demand backups are untouched.
// The VMs are stopped, so the scheduled backups are offline ones.
func TestRetention(t *testing.T) {
	bothHypervisors(t, func(t *testing.T, real bool) {
		e := newEnv(t, envOptions{realVMs: real})
		ctx := context.Background()
		a5 := e.account("five", 1000*model.Credit, 0)
		a2 := e.account("two", 1000*model.Credit, 2)
		v5, v2 := e.vm(a5.ID), e.vm(a2.ID)
		od5, err := e.a.CreateBackup(ctx, v5.ID)
		if err != nil {
			t.Fatal(err)
		}
		if od5.Consistency != model.Frozen || od5.Kind != model.OnDemand {
			t.Errorf("backup of a running VM: %s %s, want on_demand frozen", od5.Kind, od5.Consistency)
		}
		for _, v := range []model.VM{v5, v2} {
			if _, err := e.a.StopVM(ctx, v.ID); err != nil {
				t.Fatal(err)
			}
		}
		od2, err := e.a.CreateBackup(ctx, v2.ID)
		if err != nil {
			t.Fatal(err)
		}
		if od2.Consistency != model.Offline {
			t.Errorf("backup of a stopped VM: %s, want offline", od2.Consistency)
		}

		e.advance(7 * 24 * time.Hour)

		evs, err := e.a.Events(ctx, 0, model.MaxListLimit)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			vm       model.VM
			onDemand model.Backup
			keep     int
		}{{v5, od5, 5}, {v2, od2, 2}} {
			var taken []string // scheduled, oldest first
			for _, ev := range evs {
				if ev.Type == "backup.taken" && strings.Contains(ev.Message, "scheduled") && strings.Contains(ev.Message, c.vm.ID) {
					taken = append(taken, ev.Object)
				}
			}
			if len(taken) != 7 {
				t.Errorf("%s: %d scheduled backups taken in 7 days, want 7", c.vm.ID, len(taken))
			}
			bks, err := e.a.Backups(ctx, c.vm.ID)
			if err != nil {
				t.Fatal(err)
			}
			var sched []string
			hasOnDemand := false
			for i, b := range bks {
				if i > 0 && b.TakenAt.After(bks[i-1].TakenAt) {
					t.Errorf("%s: backups not newest first: %v after %v", c.vm.ID, b.TakenAt, bks[i-1].TakenAt)
				}
				switch b.Kind {
				case model.Scheduled:
					sched = append(sched, b.ID)
					if b.Consistency != model.Offline {
						t.Errorf("scheduled backup of a stopped VM: %s", b.Consistency)
					}
					if off := b.TakenAt.Sub(b.TakenAt.Truncate(24 * time.Hour)); off != backupOffset(c.vm.ID) {
						t.Errorf("%s: scheduled backup at %v, not at the VM's offset %v", c.vm.ID, b.TakenAt, backupOffset(c.vm.ID))
					}
				case model.OnDemand:
					hasOnDemand = hasOnDemand || b.ID == c.onDemand.ID
				}
			}
			slices.Reverse(sched)
			if len(taken) >= c.keep && !slices.Equal(sched, taken[len(taken)-c.keep:]) {
				t.Errorf("%s kept scheduled %v, want the newest %d of %v", c.vm.ID, sched, c.keep, taken)
			}
			if !hasOnDemand {
				t.Errorf("%s: on-demand backup %s is gone", c.vm.ID, c.onDemand.ID)
			}
		}
		e.checkConsistent()
		// Deleting a scheduled backup is refused with the reason; an on-demand one goes.
		bks, _ := e.a.Backups(ctx, v2.ID)
		for _, b := range bks {
			err := e.a.DeleteBackup(ctx, b.ID)
			if b.Kind == model.Scheduled {
				wantCode(t, err, "conflict")
				if !strings.Contains(err.Error(), "retention") {
					t.Errorf("refusal does not say why: %v", err)
				}
			} else if err != nil {
				t.Errorf("delete on-demand: %v", err)
			}
		}
		if _, snaps := e.poolHas(v2.ID); len(snaps) != 2 {
			t.Errorf("after deleting the on-demand backup: %d snapshots, want the 2 scheduled", len(snaps))
		}
		e.checkConsistent()
	})
}

// TestArchive: a balance reaching zero archives every VM of the account; a
// resume is refused until a top-up; a top-up and a resume bring one back
// (running, on its old address); 24 h later the other is reclaimed, from
// the pool and the store.
func TestArchive(t *testing.T) {
	bothHypervisors(t, func(t *testing.T, real bool) {
		e := newEnv(t, envOptions{realVMs: real})
		ctx := context.Background()
		// nano costs 0.005 credits an hour: two VMs spend 0.05 in 5 hours.
		acct := e.account("thrifty", 50_000, 0)
		other := e.account("other", 1000*model.Credit, 0)
		v1, v2 := e.vm(acct.ID), e.vm(acct.ID)
		bystander := e.vm(other.ID)
		if _, err := e.a.StopVM(ctx, v2.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.CreateBackup(ctx, v2.ID); err != nil {
			t.Fatal(err)
		}
		ip1 := v1.IP

		e.advance(6 * time.Hour)
		for _, id := range []string{v1.ID, v2.ID} {
			vm := e.getVM(id)
			if vm.State != model.StateArchived || vm.IP.IsValid() || e.isRunning(id) {
				t.Fatalf("%s after the balance ran out: state %s, ip %v, running %v; want archived, no ip, no process", id, vm.State, vm.IP, e.isRunning(id))
			}
			if !vm.ReclaimAt.Equal(vm.ArchivedAt.Add(RecoveryWindow)) {
				t.Errorf("%s: reclaim at %v, archived at %v", id, vm.ReclaimAt, vm.ArchivedAt)
			}
		}
		if vm := e.getVM(bystander.ID); vm.State != model.StateRunning {
			t.Errorf("another account's VM is %s", vm.State)
		}
		got, _ := e.a.Account(ctx, acct.ID)
		if got.Balance > 0 {
			t.Fatalf("balance %s, want zero or less", got.Balance)
		}
		archivedAt := e.getVM(v1.ID)

		_, err := e.a.ResumeVM(ctx, v1.ID)
		wantCode(t, err, "insufficient_funds")
		if !strings.Contains(err.Error(), "superjolt account topup "+acct.ID) {
			t.Errorf("refusal does not say how to top up: %v", err)
		}
		if vm := e.getVM(v1.ID); vm.State != model.StateArchived || !vm.ReclaimAt.Equal(archivedAt.ReclaimAt) {
			t.Errorf("refused resume changed the VM: %+v", vm)
		}

		if _, err := e.a.TopUp(ctx, acct.ID, 10*model.Credit); err != nil {
			t.Fatal(err)
		}
		vm, err := e.a.ResumeVM(ctx, v1.ID)
		if err != nil {
			t.Fatal(err)
		}
		if vm.State != model.StateRunning || vm.IP != ip1 || !e.isRunning(v1.ID) || !vm.ReclaimAt.IsZero() {
			t.Fatalf("resumed: state %s ip %v (had %v) running %v reclaim %v", vm.State, vm.IP, ip1, e.isRunning(v1.ID), vm.ReclaimAt)
		}
		if real {
			if out := e.guestExec(v1.ID, "echo alive"); out != "alive\n" {
				t.Errorf("resumed guest says %q", out)
			}
		}

		e.advance(RecoveryWindow)
		_, err = e.a.VM(ctx, v2.ID)
		wantCode(t, err, "not_found")
		if has, snaps := e.poolHas(v2.ID); has || len(snaps) > 0 {
			t.Errorf("reclaimed %s still on disk: subvolume %v, backups %v", v2.ID, has, snaps)
		}
		if vm := e.getVM(v1.ID); vm.State != model.StateRunning {
			t.Errorf("resumed VM is %s a day later", vm.State)
		}
		e.checkConsistent()
	})
}

// TestGraveyard: destroying a VM older than an hour puts it in the
// graveyard (address freed, disk kept), a second destroy is refused,
// resume brings it back with its data; a VM younger than an hour is
// reclaimed at once and leaves nothing on disk; the reaper reclaims the
// graveyard after 24 h.
func TestGraveyard(t *testing.T) {
	bothHypervisors(t, func(t *testing.T, real bool) {
		e := newEnv(t, envOptions{realVMs: real})
		ctx := context.Background()
		acct := e.account("graves", 1000*model.Credit, 0)
		old := e.vm(acct.ID)
		if real {
			e.guestExec(old.ID, "echo precious > /data/keep && sync")
		}
		if _, err := e.a.CreateBackup(ctx, old.ID); err != nil {
			t.Fatal(err)
		}
		e.advance(2 * time.Hour) // a scheduled backup may fall in these hours too
		kept, err := e.a.Backups(ctx, old.ID)
		if err != nil || len(kept) == 0 {
			t.Fatalf("backups before the destroy: %v %v", kept, err)
		}

		res, err := e.a.DestroyVM(ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		if res.Reclaimed || res.VM.State != model.StateGraveyard || res.VM.IP.IsValid() || e.isRunning(old.ID) {
			t.Fatalf("destroy of a 2h-old VM: %+v, running %v", res, e.isRunning(old.ID))
		}
		if has, snaps := e.poolHas(old.ID); !has || len(snaps) != len(kept) {
			t.Fatalf("graveyard VM must keep its disk and backups: subvolume %v backups %v", has, snaps)
		}
		_, err = e.a.DestroyVM(ctx, old.ID)
		wantCode(t, err, "conflict")
		_, err = e.a.CreateBackup(ctx, old.ID)
		wantCode(t, err, "conflict")

		young := e.vm(acct.ID)
		e.advance(59 * time.Minute)
		res, err = e.a.DestroyVM(ctx, young.ID)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Reclaimed {
			t.Fatalf("destroy of a 59-minute-old VM went to the graveyard")
		}
		if has, snaps := e.poolHas(young.ID); has || len(snaps) > 0 {
			t.Errorf("young VM left subvolume %v, backups %v", has, snaps)
		}
		_, err = e.a.VM(ctx, young.ID)
		wantCode(t, err, "not_found")

		vm, err := e.a.ResumeVM(ctx, old.ID)
		if err != nil {
			t.Fatal(err)
		}
		if vm.State != model.StateRunning || vm.IP != old.IP {
			t.Fatalf("resumed: state %s ip %v, want running at %v", vm.State, vm.IP, old.IP)
		}
		if real {
			if out := e.guestExec(old.ID, "cat /data/keep"); out != "precious\n" {
				t.Errorf("resumed guest lost its data: %q", out)
			}
		}
		// Back to the graveyard, stopped this time: resume returns it stopped.
		if _, err := e.a.StopVM(ctx, old.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := e.a.DestroyVM(ctx, old.ID); err != nil {
			t.Fatal(err)
		}
		e.advance(RecoveryWindow - time.Minute)
		if vm := e.getVM(old.ID); vm.State != model.StateGraveyard {
			t.Fatalf("reclaimed before its 24 h: %s", vm.State)
		}
		e.advance(time.Minute)
		_, err = e.a.VM(ctx, old.ID)
		wantCode(t, err, "not_found")
		if has, snaps := e.poolHas(old.ID); has || len(snaps) > 0 {
			t.Errorf("reclaimed VM left subvolume %v, backups %v", has, snaps)
		}
		e.checkConsistent()
	})
}
