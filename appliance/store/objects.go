package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// Account returns the account with id.
func (tx *Tx) Account(id string) (model.Account, error) {
	var a model.Account
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return a, err
	}
	if err := tx.get(accountKey(id), "account "+id, &a); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return a, notFound("account", id, "`superjolt account list` shows the accounts")
		}
		return a, err
	}
	return a, nil
}

// PutAccount creates or replaces an account.
func (tx *Tx) PutAccount(a model.Account) error {
	if err := model.ValidateID(model.KindAccount, a.ID); err != nil {
		return err
	}
	return tx.put(accountKey(a.ID), "account "+a.ID, a)
}

// Accounts returns every account, ordered by id.
func (tx *Tx) Accounts() ([]model.Account, error) {
	return scanValues[model.Account](tx, []byte(pAccount), nil, "account", 0)
}

// DeleteAccount deletes an account's row. It refuses (model.ErrConflict)
// while any VM of the account is still stored, whatever its state: the
// appliance reclaims the VMs first. The account's ledger stays, as the record
// of what was paid and charged; its id is never handed out again.
func (tx *Tx) DeleteAccount(id string) error {
	if _, err := tx.Account(id); err != nil {
		return err
	}
	var vms int
	err := tx.scan(vmAccountPrefix(id), nil, false, func(*badger.Item) error {
		vms++
		return nil
	})
	if err != nil {
		return err
	}
	if vms > 0 {
		return fmt.Errorf("%w: account %s still has %d VMs (graveyard and archived ones included); destroy and reclaim them first", model.ErrConflict, id, vms)
	}
	return tx.del(accountKey(id), "account "+id)
}

// Tier returns the tier called name.
func (tx *Tx) Tier(name string) (model.Tier, error) {
	var t model.Tier
	if err := model.ValidateTierName(name); err != nil {
		return t, err
	}
	if err := tx.get(tierKey(name), "tier "+name, &t); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return t, notFound("tier", name, "`superjolt tier list` shows the tiers")
		}
		return t, err
	}
	return t, nil
}

// PutTier creates or replaces a tier.
func (tx *Tx) PutTier(t model.Tier) error {
	if err := model.ValidateTierName(t.Name); err != nil {
		return err
	}
	return tx.put(tierKey(t.Name), "tier "+t.Name, t)
}

// Tiers returns every tier, ordered by name.
func (tx *Tx) Tiers() ([]model.Tier, error) {
	return scanValues[model.Tier](tx, []byte(pTier), nil, "tier", 0)
}

// Image returns the image called name.
func (tx *Tx) Image(name string) (model.Image, error) {
	var im model.Image
	if err := model.ValidateImageName(name); err != nil {
		return im, err
	}
	if err := tx.get(imageKey(name), "image "+name, &im); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return im, notFound("image", name, "`superjolt image list` shows the images")
		}
		return im, err
	}
	return im, nil
}

// PutImage creates or replaces an image.
func (tx *Tx) PutImage(im model.Image) error {
	if err := model.ValidateImageName(im.Name); err != nil {
		return err
	}
	return tx.put(imageKey(im.Name), "image "+im.Name, im)
}

// Images returns every image, ordered by name.
func (tx *Tx) Images() ([]model.Image, error) {
	return scanValues[model.Image](tx, []byte(pImage), nil, "image", 0)
}

// DeleteImage deletes an image's row (not its subvolume).
func (tx *Tx) DeleteImage(name string) error {
	if _, err := tx.Image(name); err != nil {
		return err
	}
	return tx.del(imageKey(name), "image "+name)
}

// VM returns the VM with id.
func (tx *Tx) VM(id string) (model.VM, error) {
	vm, _, err := tx.vm(id)
	return vm, err
}

// vm returns the VM with id, its BilledUntil from its billing row, and
// whether it has one (a VM put by a superjolt before schema 2, not yet
// migrated, has not: its v/ row still holds its BilledUntil).
func (tx *Tx) vm(id string) (model.VM, bool, error) {
	var vm model.VM
	if err := model.ValidateID(model.KindVM, id); err != nil {
		return vm, false, err
	}
	if err := tx.get(vmKey(id), "VM "+id, &vm); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return vm, false, notFound("VM", id, "it may have been reclaimed; `superjolt vm list` shows the VMs")
		}
		return vm, false, err
	}
	if model.ValidateID(model.KindAccount, vm.AccountID) != nil {
		return vm, false, fmt.Errorf("store: VM %s has a malformed account id %q (the state directory is damaged)", id, vm.AccountID)
	}
	b, err := tx.billing(vm.AccountID, id)
	switch {
	case errors.Is(err, errNoBilling):
		return vm, false, nil
	case err != nil:
		return vm, false, err
	}
	vm.BilledUntil = b.BilledUntil
	return vm, true, nil
}

// PutVM creates or replaces a VM and keeps its account and state index
// entries in step with it. What no longer applies to the VM's state (the
// time and reason of a stop, once it runs again) is dropped
// (model.VM.DropStale), whichever verb changed the state.
func (tx *Tx) PutVM(vm model.VM) error {
	if err := model.ValidateID(model.KindVM, vm.ID); err != nil {
		return err
	}
	if err := model.ValidateID(model.KindAccount, vm.AccountID); err != nil {
		return fmt.Errorf("VM %s: %w", vm.ID, err)
	}
	if _, err := model.ParseVMState(string(vm.State)); err != nil {
		return fmt.Errorf("VM %s: %w", vm.ID, err)
	}
	vm.DropStale()
	old, hasBilling, err := tx.vm(vm.ID)
	isNew := errors.Is(err, model.ErrNotFound)
	if err != nil && !isNew {
		return err
	}
	// BilledUntil lives in the billing row (vb/), which billing rewrites
	// alone each period; the v/ row holds it zeroed, so there is one truth.
	// Reading the old row above put it in this transaction's conflict set:
	// a billing period that commits first makes this Update run again with
	// the BilledUntil it booked, and the other way round.
	nb := billingOf(vm)
	vm.BilledUntil = time.Time{}
	if err := tx.put(vmKey(vm.ID), "VM "+vm.ID, vm); err != nil {
		return err
	}
	if isNew || !hasBilling || !billingOf(old).same(nb) {
		if !isNew && old.AccountID != vm.AccountID {
			if err := tx.del(billingKey(old.AccountID, vm.ID), "VM "+vm.ID+" billing"); err != nil {
				return err
			}
		}
		if err := tx.putBilling(nb); err != nil {
			return err
		}
	}
	// Index entries are written only when they change: a transaction's
	// size is bounded.
	if isNew || old.AccountID != vm.AccountID {
		if !isNew {
			if err := tx.del(vmAccountKey(old.AccountID, vm.ID), "VM "+vm.ID+" account index"); err != nil {
				return err
			}
		}
		if err := tx.set(vmAccountKey(vm.AccountID, vm.ID), nil, "VM "+vm.ID+" account index"); err != nil {
			return err
		}
	}
	if isNew || old.State != vm.State {
		if !isNew {
			if err := tx.del(vmStateKey(old.State, vm.ID), "VM "+vm.ID+" state index"); err != nil {
				return err
			}
		}
		if err := tx.set(vmStateKey(vm.State, vm.ID), nil, "VM "+vm.ID+" state index"); err != nil {
			return err
		}
	}
	return nil
}

// DeleteVM deletes a VM's row and its index entries, and releases the
// addresses in its IP and LastIP that are still claimed for it.
//
// Who deletes what: the appliance deletes a VM's backups first (each with
// DeleteBackup, after removing its snapshot), then the VM. DeleteVM refuses
// (model.ErrConflict) while backups of the VM are stored, so that no backup
// row or bi/ index entry can outlive its VM and no snapshot is forgotten.
func (tx *Tx) DeleteVM(id string) error {
	vm, err := tx.VM(id)
	if err != nil {
		return err
	}
	// Read for its conflict: see backupVerKey.
	if _, err := tx.has(backupVerKey(id)); err != nil {
		return err
	}
	var backups int
	err = tx.scan(backupPrefix(id), nil, false, func(*badger.Item) error {
		backups++
		return nil
	})
	if err != nil {
		return err
	}
	if backups > 0 {
		return fmt.Errorf("%w: VM %s still has %d backups; delete them (DeleteBackup) before the VM", model.ErrConflict, id, backups)
	}
	for _, addr := range uniqueAddrs(vm.IP, vm.LastIP) {
		owner, err := tx.IPOwner(addr)
		if errors.Is(err, model.ErrNotFound) || err == nil && owner != id {
			continue
		}
		if err != nil {
			return err
		}
		if err := tx.ReleaseIP(addr); err != nil {
			return err
		}
	}
	for _, k := range [][]byte{vmAccountKey(vm.AccountID, id), vmStateKey(vm.State, id), billingKey(vm.AccountID, id), backupVerKey(id), vmKey(id)} {
		if err := tx.del(k, "VM "+id); err != nil {
			return err
		}
	}
	return nil
}

// VMFilter selects VMs. Zero fields match everything.
type VMFilter struct {
	AccountID string
	State     model.VMState
	// NamePrefix keeps the VMs whose name starts with it.
	NamePrefix string
	// Image keeps the VMs made from the image of that name.
	Image string
}

// VMs returns the VMs that match f, ordered by id: VMRows, decoded.
func (tx *Tx) VMs(f VMFilter) ([]model.VM, error) {
	rows, err := tx.VMRows(f)
	if err != nil {
		return nil, err
	}
	vms, err := decodeRows[model.VM](len(rows), "VM", func(i int) ([]byte, string) { return rows[i].JSON, rows[i].ID })
	if err != nil {
		return nil, err
	}
	// BilledUntil is in the billing rows (the v/ rows hold it zeroed): one
	// scan of the account's, or of all.
	billed := map[string]time.Time{}
	if err := tx.ForEachBilling(f.AccountID, BillingCursor{}, func(b Billing) error {
		billed[b.VMID] = b.BilledUntil
		return nil
	}); err != nil {
		return nil, err
	}
	for i := range vms {
		if t, ok := billed[vms[i].ID]; ok {
			vms[i].BilledUntil = t
		}
	}
	return vms, nil
}

// ForEachVM calls fn with every VM, ordered by id, decoding one at a time so
// that 10,000 VMs are never all in memory at once. An error from fn stops the
// walk and is returned as it is.
//
// Each VM's BilledUntil comes from its billing row: all of them are read
// first, in one scan of vb/ (some 60 bytes a VM), not looked up one by one.
func (tx *Tx) ForEachVM(fn func(model.VM) error) error {
	billed, err := tx.billedUntil()
	if err != nil {
		return err
	}
	return tx.scan([]byte(pVM), nil, true, func(item *badger.Item) error {
		var vm model.VM
		if err := item.Value(func(b []byte) error { return decode(b, "VM "+string(item.Key()[len(pVM):]), &vm) }); err != nil {
			return err
		}
		if t, ok := billed[vm.ID]; ok {
			vm.BilledUntil = t
		}
		return fn(vm)
	})
}

// billedUntil returns every VM's BilledUntil from its billing row.
func (tx *Tx) billedUntil() (map[string]time.Time, error) {
	out := map[string]time.Time{}
	err := tx.ForEachBilling("", BillingCursor{}, func(b Billing) error {
		out[b.VMID] = b.BilledUntil
		return nil
	})
	return out, err
}

// Backup returns the backup with id.
func (tx *Tx) Backup(id string) (model.Backup, error) {
	var b model.Backup
	if err := model.ValidateID(model.KindBackup, id); err != nil {
		return b, err
	}
	k, err := tx.backupKeyOf(id)
	if err != nil {
		return b, err
	}
	if err := tx.get(k, "backup "+id, &b); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return b, fmt.Errorf("store: backup %s is in the index but has no row (the state directory is damaged): %w", id, err)
		}
		return b, err
	}
	return b, nil
}

// backupKeyOf finds the b/ key of a stored backup through its bi/ entry.
func (tx *Tx) backupKeyOf(id string) ([]byte, error) {
	item, err := tx.txn.Get(backupIdxKey(id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, notFound("backup", id, "`superjolt backup list <vm>` shows a VM's backups")
	}
	if err != nil {
		return nil, fmt.Errorf("store: read backup %s index: %w", id, err)
	}
	var k []byte
	var ok bool
	err = item.Value(func(v []byte) error {
		k, ok = backupKeyFromIdx(v, id)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("store: read backup %s index: %w", id, err)
	}
	if !ok {
		return nil, fmt.Errorf("store: backup %s has a malformed index entry (the state directory is damaged)", id)
	}
	return k, nil
}

// PutBackup creates or replaces a backup of a stored VM. Its VM and TakenAt
// are part of its key; changing either moves it.
func (tx *Tx) PutBackup(b model.Backup) error {
	if err := model.ValidateID(model.KindBackup, b.ID); err != nil {
		return err
	}
	if err := model.ValidateID(model.KindVM, b.VMID); err != nil {
		return fmt.Errorf("backup %s: %w", b.ID, err)
	}
	if err := keyTime("backup "+b.ID+" taken_at", b.TakenAt); err != nil {
		return err
	}
	switch ok, err := tx.has(vmKey(b.VMID)); {
	case err != nil:
		return err
	case !ok:
		return notFound("VM", b.VMID, "a backup can only be recorded for a stored VM")
	}
	if err := tx.set(backupVerKey(b.VMID), nil, "VM "+b.VMID+" backup marker"); err != nil {
		return err
	}
	k := backupKey(b.VMID, b.TakenAt, b.ID)
	old, err := tx.backupKeyOf(b.ID)
	switch {
	case errors.Is(err, model.ErrNotFound):
	case err != nil:
		return err
	case string(old) != string(k):
		if err := tx.del(old, "backup "+b.ID); err != nil {
			return err
		}
	}
	if err := tx.put(k, "backup "+b.ID, b); err != nil {
		return err
	}
	return tx.set(backupIdxKey(b.ID), backupIdxValue(b.VMID, b.TakenAt), "backup "+b.ID+" index")
}

// DeleteBackup deletes a backup's row and index entry (not its snapshot).
func (tx *Tx) DeleteBackup(id string) error {
	if err := model.ValidateID(model.KindBackup, id); err != nil {
		return err
	}
	k, err := tx.backupKeyOf(id)
	if err != nil {
		return err
	}
	if err := tx.del(k, "backup "+id); err != nil {
		return err
	}
	return tx.del(backupIdxKey(id), "backup "+id+" index")
}

// Backups returns a VM's backups, newest first: the order of their keys, so
// nothing is sorted.
func (tx *Tx) Backups(vmID string) ([]model.Backup, error) {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return nil, err
	}
	return scanValues[model.Backup](tx, backupPrefix(vmID), nil, "backup", 0)
}

// BackupFilter selects backups. Zero fields match everything.
type BackupFilter struct {
	AccountID string
	VMID      string
	Kind      model.BackupKind
	// After starts the list after this backup's place, when its VMID is
	// set (see BackupPos).
	After BackupPos
	// Limit is the most backups to return; 0 returns all.
	Limit int
}

// ListBackups returns the backups that match f, of live and retired VMs
// alike, ordered by VM id, then newest first: the order of their keys, so
// nothing is sorted. It is BackupRows, decoded.
func (tx *Tx) ListBackups(f BackupFilter) ([]model.Backup, error) {
	rows, err := tx.BackupRows(f)
	if err != nil {
		return nil, err
	}
	return decodeRows[model.Backup](len(rows), "backup", func(i int) ([]byte, string) { return rows[i].JSON, rows[i].ID })
}

// Operation returns the operation with id.
func (tx *Tx) Operation(id string) (model.Operation, error) {
	var op model.Operation
	if err := model.ValidateID(model.KindOperation, id); err != nil {
		return op, err
	}
	if err := tx.get(opKey(id), "operation "+id, &op); err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return op, notFound("operation", id, "it may have finished long ago")
		}
		return op, err
	}
	return op, nil
}

// PutOperation creates or replaces an operation; it is in the unfinished
// index exactly while its state is model.OpRunning, and in the finished
// index (of/, by finish time) exactly while it is not.
func (tx *Tx) PutOperation(op model.Operation) error {
	if err := model.ValidateID(model.KindOperation, op.ID); err != nil {
		return err
	}
	var old model.Operation
	err := tx.get(opKey(op.ID), "operation "+op.ID, &old)
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return err
	default:
		if k, ok := opFinishedKeyOf(old); ok {
			if err := tx.del(k, "operation "+op.ID+" index"); err != nil {
				return err
			}
		}
	}
	if err := tx.put(opKey(op.ID), "operation "+op.ID, op); err != nil {
		return err
	}
	if k, ok := opFinishedKeyOf(op); ok {
		if err := tx.set(k, nil, "operation "+op.ID+" index"); err != nil {
			return err
		}
	}
	if op.State == model.OpRunning {
		return tx.set(opRunningKey(op.ID), nil, "operation "+op.ID+" index")
	}
	return tx.del(opRunningKey(op.ID), "operation "+op.ID+" index")
}

// opFinishedKeyOf returns op's key in the finished index, if it has one:
// finished, at its FinishedAt (StartedAt if that is not set), when the
// time fits in a key.
func opFinishedKeyOf(op model.Operation) ([]byte, bool) {
	if !op.State.Finished() {
		return nil, false
	}
	at := op.FinishedAt
	if at.IsZero() {
		at = op.StartedAt
	}
	if keyTime("finish time", at) != nil {
		return nil, false
	}
	return opFinishedKey(at, op.ID), true
}

// DeleteOperation deletes an operation and its index entries, for pruning
// finished operations.
func (tx *Tx) DeleteOperation(id string) error {
	op, err := tx.Operation(id)
	if err != nil {
		return err
	}
	if err := tx.del(opKey(id), "operation "+id); err != nil {
		return err
	}
	if k, ok := opFinishedKeyOf(op); ok {
		if err := tx.del(k, "operation "+id+" index"); err != nil {
			return err
		}
	}
	return tx.del(opRunningKey(id), "operation "+id+" index")
}

// Operations returns every operation, ordered by id (which is random: sort
// them by time).
func (tx *Tx) Operations() ([]model.Operation, error) {
	return scanValues[model.Operation](tx, []byte(pOp), nil, "operation", 0)
}

// UnfinishedOperations returns the operations whose state is
// model.OpRunning, ordered by id, from their index.
func (tx *Tx) UnfinishedOperations() ([]model.Operation, error) {
	ids, err := tx.suffixes([]byte(pOpRunning))
	if err != nil {
		return nil, err
	}
	out := make([]model.Operation, 0, len(ids))
	for _, id := range ids {
		op, err := tx.Operation(id)
		if err != nil {
			return nil, fmt.Errorf("store: unfinished-operation index names %s: %w", id, err)
		}
		out = append(out, op)
	}
	return out, nil
}
