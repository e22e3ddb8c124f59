package appliance

import (
	"context"
	"fmt"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs"
)

// OrphanGrace is how long a subvolume that no row of the store knows
// (an orphan) is kept aside before it is deleted: time for an operator to
// notice the event and look, in case the store, not the pool, is wrong.
const OrphanGrace = 7 * 24 * time.Hour

// sweepOrphans sets aside (see btrfs's Quarantine) the VM subvolumes and
// backup snapshots that no row of the store knows: what a crash between a
// row's deletion and its subvolume's can leave, or what a store restored
// from an older copy no longer knows. Nothing is deleted here; each is an
// event, and purgeOrphans deletes them after OrphanGrace. Only what is
// proved unknown is touched: any listing that fails stops the sweep with
// its error, before anything is moved.
func (a *Appliance) sweepOrphans(ctx context.Context) error {
	vms := map[string]bool{}
	bks := map[string]bool{}
	if err := a.view(ctx, func(tx *store.Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			vms[vm.ID] = true
			list, err := tx.Backups(vm.ID)
			for _, b := range list {
				bks[b.ID] = true
			}
			return err
		})
	}); err != nil {
		return fmt.Errorf("read the store: %w", err)
	}
	disk, err := a.pool.VMs(ctx)
	if err != nil {
		return err
	}
	withBackups, err := a.pool.BackupVMs(ctx)
	if err != nil {
		return err
	}
	snaps := map[string][]string{}
	for _, id := range withBackups {
		if vms[id] {
			if snaps[id], err = a.pool.Backups(ctx, id); err != nil {
				return err
			}
		}
	}

	// Everything is read: now set aside what is proved unknown.
	var aside []btrfs.Quarantined
	for _, id := range disk {
		if model.ValidateID(model.KindVM, id) == nil && !vms[id] {
			q, err := a.pool.QuarantineVM(ctx, id, a.clock.Now())
			if err != nil {
				return err
			}
			aside = append(aside, q)
		}
	}
	for _, id := range withBackups {
		if model.ValidateID(model.KindVM, id) != nil {
			continue
		}
		if !vms[id] {
			q, err := a.pool.QuarantineBackups(ctx, id, a.clock.Now())
			if err != nil {
				return err
			}
			aside = append(aside, q)
			continue
		}
		for _, b := range snaps[id] {
			if model.ValidateID(model.KindBackup, b) == nil && !bks[b] {
				q, err := a.pool.QuarantineBackup(ctx, id, b, a.clock.Now())
				if err != nil {
					return err
				}
				aside = append(aside, q)
			}
		}
	}
	if len(aside) == 0 {
		return nil
	}
	return a.update(ctx, func(tx *store.Tx) error {
		for _, q := range aside {
			if err := event(tx, a.clock.Now(), "pool.orphan_set_aside", "", "",
				"%s is in the pool but no VM or backup of the store names it: set aside as %s, not deleted; it is deleted after %s unless an operator moves it back",
				q.Was, q.Path, q.At.Add(OrphanGrace).UTC().Format(time.RFC3339)); err != nil {
				return err
			}
		}
		return nil
	})
}

// purgeOrphans deletes what sweepOrphans set aside more than OrphanGrace
// before now, with an event each.
func (a *Appliance) purgeOrphans(ctx context.Context, now time.Time) error {
	done, err := a.pool.PurgeQuarantine(ctx, now.Add(-OrphanGrace))
	if len(done) > 0 {
		uerr := a.update(ctx, func(tx *store.Tx) error {
			for _, q := range done {
				if err := event(tx, now, "pool.orphan_deleted", "", "", "%s, set aside at %s as unknown to the store, is deleted after %s",
					q.Was, q.At.UTC().Format(time.RFC3339), OrphanGrace); err != nil {
					return err
				}
			}
			return nil
		})
		if err == nil {
			err = uerr
		}
	}
	return err
}
