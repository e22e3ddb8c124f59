package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// A VM leaves the host two ways, and comes back or goes for good the same
// way from both: destroy_vm puts it in the graveyard, an account whose
// balance reached zero has its VMs archived (billing.go decides when);
// resume_vm brings either back; after RecoveryWindow the reaper reclaims
// it. This file holds those rules.
//
// The archive's recovery window does not slide. An archival opens an
// episode: ReclaimAt = now + RecoveryWindow, remembered as RecoveryDeadline.
// A resume clears ReclaimAt but keeps RecoveryDeadline. A VM archived (or
// destroyed) again before it has been back for a whole RecoveryWindow since
// its last resume is in the same episode: it gets that first deadline back,
// however many times it was resumed, even when the deadline has passed
// already (then the reaper's next pass reclaims it). Only a VM that stayed
// back, and billed, for RecoveryWindow ends its episode; its next archival
// opens a new one with a fresh 24 hours. So a top-up of a little runway
// cannot keep an unpaid disk for ever, and a VM that was put right gets its
// full window the next time. A destroy outside an episode is the
// operator's own decision and gets the full window every time, as the
// product promises ("a destroy_vm you regret is recoverable for a day");
// a destroy inside one cannot be used to escape it.

// retire takes a live VM off the host, into the graveyard (to is
// model.StateGraveyard: destroyed) or the archive (model.StateArchived: its
// account ran out of credits). Its process must be gone already. Both book
// its final charge, free its address (LastIP keeps it, given back on resume
// when still free) and keep its disk and backups until ReclaimAt, now +
// RecoveryWindow, or now for a VM destroyed within its first hour
// (reclaimNow: no graveyard for it). A VM that is not live is left as it
// is: recovery may retire it twice.
func (a *Appliance) retire(tx *store.Tx, id string, to model.VMState, reclaimNow bool) (model.VM, error) {
	vm, err := getVM(tx, id)
	if err != nil || !vm.State.Live() {
		return vm, err
	}
	now := a.clock.Now()
	if _, err := a.chargeInTx(tx, &vm, now, true); err != nil {
		return vm, err
	}
	if vm.IP.IsValid() {
		if err := releaseIP(tx, vm.IP, id); err != nil {
			return vm, err
		}
		vm.LastIP, vm.IP = vm.IP, netip.Addr{}
	}
	vm.BootID = ""
	vm.ReclaimAt, vm.RecoveryDeadline = recoveryDeadline(vm, to, now)
	again := ""
	if !vm.ReclaimAt.Equal(now.Add(RecoveryWindow)) {
		again = " (the deadline its recovery window began with: a resume does not extend it)"
	}
	var typ, msg string
	switch to {
	case model.StateGraveyard:
		// What a resume returns to: running or stopped.
		vm.WantRunning = vm.State == model.StateRunning
		vm.DestroyedAt = now
		typ = "vm.destroyed"
		msg = fmt.Sprintf("%s destroyed: in the graveyard until %s%s; `superjolt vm resume %s` brings it back", id, vm.ReclaimAt.UTC().Format(time.RFC3339), again, id)
		if reclaimNow {
			vm.ReclaimAt = now
			msg = fmt.Sprintf("%s destroyed within its first hour: reclaimed at once", id)
		}
	case model.StateArchived:
		// A resume from the archive boots it, whatever it was.
		vm.ArchivedAt = now
		typ = "vm.archived"
		msg = fmt.Sprintf("%s archived: account %s ran out of credits; top up with `superjolt account topup %s CREDITS` and `superjolt vm resume %s` before %s%s",
			id, vm.AccountID, vm.AccountID, id, vm.ReclaimAt.UTC().Format(time.RFC3339), again)
	default:
		return vm, fmt.Errorf("retire %s to %s: only the graveyard and the archive take VMs off the host", id, to)
	}
	vm.State = to
	if err := tx.PutVM(vm); err != nil {
		return vm, err
	}
	return vm, event(tx, now, typ, id, vm.AccountID, "%s", msg)
}

// recoveryDeadline returns the ReclaimAt of a VM retired to to at now, and
// the RecoveryDeadline of its archive episode: the episode's first deadline
// while the episode lasts; for an archival outside one, now +
// RecoveryWindow, opening a new one; for a destroy outside one, now +
// RecoveryWindow and no episode.
func recoveryDeadline(vm model.VM, to model.VMState, now time.Time) (reclaimAt, episode time.Time) {
	if !vm.RecoveryDeadline.IsZero() && now.Sub(vm.ResumedAt) < RecoveryWindow {
		return vm.RecoveryDeadline, vm.RecoveryDeadline
	}
	d := now.Add(RecoveryWindow)
	if to == model.StateArchived {
		return d, d
	}
	return d, time.Time{}
}

// DestroyVM destroys a running or stopped VM (SubmitDestroyVM) and says
// where it went.
func (a *Appliance) DestroyVM(ctx context.Context, id string) (DestroyResult, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return DestroyResult{}, err
	}
	o, err := a.submitDestroyVM(ctx, id)
	if _, err := await(ctx, o, err); err != nil {
		return DestroyResult{VM: vm}, err
	}
	after, err := a.VM(ctx, id)
	if errors.Is(err, model.ErrNotFound) {
		return DestroyResult{VM: vm, Reclaimed: true}, nil
	}
	return DestroyResult{VM: after}, err
}

// SubmitDestroyVM starts destroying a running or stopped VM. A VM at least
// an hour old goes to the graveyard: its process and address are freed, its
// disk and backups kept until ReclaimAt (24 h), and ResumeVM brings it
// back. A younger one is reclaimed at once, in the same operation: nothing
// is left.
func (a *Appliance) SubmitDestroyVM(ctx context.Context, id string) (model.Operation, error) {
	return accepted(a.submitDestroyVM(ctx, id))
}

func (a *Appliance) submitDestroyVM(ctx context.Context, id string) (*op, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return nil, err
	}
	switch vm.State {
	case model.StateRunning, model.StateStopped:
	case model.StateGraveyard:
		return nil, conflictf("%s is already destroyed: it is in the graveyard until %s; `superjolt vm resume %s` brings it back",
			id, vm.ReclaimAt.UTC().Format(time.RFC3339), id)
	default:
		return nil, stateError(vm, "destroy it")
	}
	reclaim := a.since(vm.CreatedAt) < GraveyardAge
	o, err := a.begin(ctx, model.OpDestroy, id, intent{Reclaim: reclaim}, nil)
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error {
		a.halt(ctx, id)
		if err := o.step("stopped", 50, nil); err != nil {
			return o.finish(err, nil)
		}
		if !reclaim {
			return o.finish(nil, func(tx *store.Tx) error {
				_, err := a.retire(tx, id, model.StateGraveyard, false)
				return err
			})
		}
		// Under an hour old: no graveyard. The VM passes through it (with
		// ReclaimAt now, so that the reaper finishes after a crash) and is
		// reclaimed by this same operation.
		if err := o.step("graveyard", 60, func(tx *store.Tx) error {
			_, err := a.retire(tx, id, model.StateGraveyard, true)
			return err
		}); err != nil {
			return o.finish(err, nil)
		}
		if err := a.reclaimDisks(ctx, o); err != nil {
			return o.finish(err, nil)
		}
		return o.finish(nil, func(tx *store.Tx) error { return a.dropVM(tx, id) })
	}), nil
}

// ResumeVM brings a VM back (SubmitResumeVM) and returns it once it is
// back (and, when it boots, once its agent answers).
func (a *Appliance) ResumeVM(ctx context.Context, id string) (model.VM, error) {
	o, err := a.submitResumeVM(ctx, id)
	return a.vmAfter(ctx, o, err)
}

// SubmitResumeVM starts bringing a VM back from the graveyard (to the
// state it was in: running or stopped) or from the archive (running). The
// balance must cover MinResumeRunway of the account's burn with the VM back
// (resumeRunway); the refusal says how much to top up. It gets its address
// back when still free, else a new one. Its recovery deadline is kept for
// a retire within RecoveryWindow of the resume.
func (a *Appliance) SubmitResumeVM(ctx context.Context, id string) (model.Operation, error) {
	return accepted(a.submitResumeVM(ctx, id))
}

func (a *Appliance) submitResumeVM(ctx context.Context, id string) (*op, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return nil, err
	}
	if vm.State != model.StateGraveyard && vm.State != model.StateArchived {
		return nil, conflictf("%s is %s, not in the graveyard or archived: nothing to resume", id, vm.State)
	}
	now := a.clock.Now()
	var wantRunning bool
	o, err := a.begin(ctx, model.OpResume, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if cur.State != model.StateGraveyard && cur.State != model.StateArchived {
			return conflictf("%s is %s, not in the graveyard or archived: nothing to resume", id, cur.State)
		}
		acct, err := getAccount(tx, cur.AccountID)
		if err != nil {
			return err
		}
		if err := resumeRunway(tx, acct, cur); err != nil {
			return err
		}
		if err := checkVMLimit(tx, acct); err != nil {
			return err
		}
		tier, err := tx.Tier(cur.Tier)
		if err != nil {
			return notFoundIs(err, "tier %s of %s no longer exists", cur.Tier, id)
		}
		if err := a.reserveMemory(tx, id, acct.ID, tier, false); err != nil {
			return err
		}
		ip, err := a.allocIP(tx, id, cur.LastIP)
		if err != nil {
			return err
		}
		wantRunning = cur.WantRunning || cur.State == model.StateArchived
		from := cur.State
		cur.State, cur.IP, cur.LastIP = model.StateStopped, ip, ip
		// RecoveryDeadline stays: a retire within RecoveryWindow of this
		// resume gives the VM that deadline back rather than a new one.
		cur.ReclaimAt, cur.ResumedAt, cur.WantRunning, cur.BilledUntil = time.Time{}, now, wantRunning, now
		if cur.NextBackupAt.Before(now) {
			cur.NextBackupAt = nextBackupAt(id, now)
		}
		if !wantRunning {
			cur.StoppedAt = now
		}
		vm = cur
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		kept := ""
		if !cur.RecoveryDeadline.IsZero() {
			// A retire within RecoveryWindow from now is in this episode.
			kept = fmt.Sprintf("; if it is archived or destroyed again before %s, it keeps its recovery deadline, %s",
				now.Add(RecoveryWindow).UTC().Format(time.RFC3339), cur.RecoveryDeadline.UTC().Format(time.RFC3339))
		}
		return event(tx, now, "vm.resumed", id, cur.AccountID, "%s resumed from %s at %s%s", id, from, ip, kept)
	})
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error {
		if !wantRunning {
			return o.finish(nil, nil)
		}
		bootID, err := a.boot(ctx, vm)
		if err != nil {
			return o.finish(err, func(tx *store.Tx) error {
				_, err := a.setStopped(tx, id, model.StopBootFailed, "vm.boot_failed", "%s was resumed but did not boot; try `superjolt vm start %s`", id, id)
				return err
			})
		}
		return o.finish(nil, func(tx *store.Tx) error {
			cur, err := getVM(tx, id)
			if err != nil {
				return err
			}
			cur.State, cur.BootID = model.StateRunning, bootID
			if err := tx.PutVM(cur); err != nil {
				return err
			}
			return event(tx, a.clock.Now(), "vm.started", id, cur.AccountID, "%s booted after its resume (boot %s)", id, bootID)
		})
	}), nil
}

// archive stops a VM whose account ran out of credits, frees its address
// and keeps its disk and backups until ReclaimAt.
func (a *Appliance) archive(ctx context.Context, id string) error {
	o, err := a.begin(ctx, model.OpArchive, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		vm, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if vm.State != model.StateRunning && vm.State != model.StateStopped {
			return conflictf("%s is %s", id, vm.State)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.launch(o, func(ctx context.Context) error {
		a.halt(ctx, id)
		if err := o.step("stopped", 50, nil); err != nil {
			return o.finish(err, nil)
		}
		return o.finish(nil, func(tx *store.Tx) error {
			_, err := a.retire(tx, id, model.StateArchived, false)
			return err
		})
	})
	_, err = await(ctx, o, nil)
	return err
}

// reaperPass reclaims every graveyard or archived VM whose ReclaimAt has come.
func (a *Appliance) reaperPass(ctx context.Context, now time.Time) error {
	due, err := a.vmIDsWhere(ctx, func(vm model.VM) bool {
		return (vm.State == model.StateGraveyard || vm.State == model.StateArchived) && !vm.ReclaimAt.After(now)
	})
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range due {
		if err := a.reclaim(ctx, id); err != nil && !errors.Is(err, model.ErrConflict) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// reclaim removes a graveyard or archived VM for good: its disk, its
// backups, its rows, its address, ports and domains.
func (a *Appliance) reclaim(ctx context.Context, id string) error {
	o, err := a.begin(ctx, model.OpReclaim, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		vm, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if vm.State != model.StateGraveyard && vm.State != model.StateArchived {
			return conflictf("%s is %s: only graveyard and archived VMs are reclaimed", id, vm.State)
		}
		return nil
	})
	if err != nil {
		return err
	}
	a.launch(o, func(ctx context.Context) error {
		a.halt(ctx, id) // none expected
		if err := a.reclaimDisks(ctx, o); err != nil {
			return o.finish(err, nil)
		}
		return o.finish(nil, func(tx *store.Tx) error { return a.dropVM(tx, id) })
	})
	_, err = await(ctx, o, nil)
	return err
}

// reclaimDisks deletes a VM's subvolume, backups and run directory,
// recording each step.
func (a *Appliance) reclaimDisks(ctx context.Context, o *op) error {
	id := o.rec.VMID
	ctx = context.WithoutCancel(ctx)
	if err := a.pool.DeleteVM(ctx, id); err != nil && !isPoolNotFound(err) {
		return unavailablef("cannot delete the disk of %s: %v; the reaper tries again", id, err)
	}
	if err := o.step("vm-deleted", 40, nil); err != nil {
		return err
	}
	if err := a.pool.DeleteBackups(ctx, id); err != nil && !isPoolNotFound(err) {
		return unavailablef("cannot delete the backups of %s: %v; the reaper tries again", id, err)
	}
	// Its run directory (console log, sockets) goes too: nothing of a
	// reclaimed VM is left on the host.
	if err := os.RemoveAll(a.vmRunDir(id)); err != nil {
		o.log.Warn("cannot remove the run directory of a reclaimed VM", "dir", a.vmRunDir(id), "err", err)
	}
	return o.step("backups-deleted", 80, nil)
}

// dropVM deletes a reclaimed VM's rows: its backups, itself, its address.
func (a *Appliance) dropVM(tx *store.Tx, id string) error {
	vm, err := tx.VM(id)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	bks, err := tx.Backups(id)
	if err != nil {
		return err
	}
	for _, b := range bks {
		if err := tx.DeleteBackup(b.ID); err != nil {
			return err
		}
	}
	// DeleteVM also frees the addresses (IP, LastIP) the VM still owns.
	if err := tx.DeleteVM(id); err != nil {
		return err
	}
	return event(tx, a.clock.Now(), "vm.reclaimed", id, vm.AccountID, "%s reclaimed: its disk, %s, address, ports and domains are gone", id, model.Count(len(bks), "backup"))
}

// recoverRetire finishes a destroy or an archive: the VM's process died
// with the daemon, so it goes where it was going (a destroy within the
// VM's first hour into the graveyard with ReclaimAt now: the reaper
// reclaims it, whatever step the reclaim had reached).
func (a *Appliance) recoverRetire(rec model.Operation, in intent) (recovery, error) {
	to := model.StateGraveyard
	if rec.Kind == model.OpArchive {
		to = model.StateArchived
	}
	return recovery{final: model.OpDone, also: func(tx *store.Tx) error {
		_, err := a.retire(tx, rec.VMID, to, in.Reclaim)
		return ignoreNotFound(err)
	}}, nil
}

// recoverResume ends a resume as far as the store says: done when the VM
// is back (it boots with the others at start if it should run), rolled back
// when it is still in the graveyard or the archive.
func (a *Appliance) recoverResume(ctx context.Context, rec model.Operation) (recovery, error) {
	r := recovery{final: model.OpDone}
	err := a.view(ctx, func(tx *store.Tx) error {
		vm, err := tx.VM(rec.VMID)
		if err == nil && !vm.State.Live() {
			r.final = model.OpRolledBack
		}
		return ignoreNotFound(err)
	})
	return r, err
}

// recoverReclaim finishes a reclaim: disk, backups and rows are deleted.
func (a *Appliance) recoverReclaim(ctx context.Context, rec model.Operation, in intent, log *slog.Logger) (recovery, error) {
	o := &op{a: a, rec: rec, in: in, log: log, ctx: ctx}
	if err := a.reclaimDisks(ctx, o); err != nil {
		return recovery{}, err
	}
	return recovery{final: model.OpDone, also: func(tx *store.Tx) error { return a.dropVM(tx, rec.VMID) }}, nil
}
