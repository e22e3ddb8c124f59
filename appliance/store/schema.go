package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// SchemaVersion is the layout of keys and values this package reads and
// writes. Bump it with any change an older superjolt would misread, and teach
// checkSchema to migrate from the version before.
//
//   - 1: the first.
//   - 2: each VM has a billing row (vb/, see Billing) holding its
//     BilledUntil; v/ rows hold that field zeroed. Open migrates a store at
//     1 by writing the billing rows from the v/ rows.
const SchemaVersion = 2

// checkSchema writes the schema key into a new, empty store and refuses a
// store written by a newer superjolt or by something else entirely.
func (s *Store) checkSchema(ctx context.Context, dir string) error {
	where := dir
	if where == "" {
		where = "the in-memory store"
	}
	var found uint32
	err := s.Update(ctx, func(tx *Tx) error {
		found = SchemaVersion
		item, err := tx.txn.Get([]byte(keySchema))
		switch {
		case errors.Is(err, badger.ErrKeyNotFound):
			empty, err := tx.empty()
			if err != nil {
				return err
			}
			if !empty {
				return fmt.Errorf("%w: %s holds data but no schema version; it is not a superjolt state directory (move it aside or point superjoltd at the right one)", ErrSchema, where)
			}
			return tx.txn.Set([]byte(keySchema), binary.BigEndian.AppendUint32(nil, SchemaVersion))
		case err != nil:
			return fmt.Errorf("store: read schema version: %w", err)
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("store: read schema version: %w", err)
		}
		if len(v) != 4 {
			return fmt.Errorf("%w: %s has a malformed schema version (%d bytes); it is not a superjolt state directory", ErrSchema, where, len(v))
		}
		switch got := binary.BigEndian.Uint32(v); {
		case got > SchemaVersion:
			return fmt.Errorf("%w: %s was written by a newer superjolt (schema %d; this one knows up to %d); run the newer superjoltd, or restore the state directory from before the upgrade", ErrSchema, where, got, SchemaVersion)
		case got < 1:
			return fmt.Errorf("%w: %s has schema version %d, which no superjolt ever wrote", ErrSchema, where, got)
		default:
			found = got
		}
		return nil
	})
	if err != nil || found == SchemaVersion {
		return err
	}
	return s.migrateBilling(ctx)
}

// migrateBilling brings a store from schema 1 to 2: it writes every VM's
// billing row from its v/ row, in as many Updates as the rows take, and
// the new schema version with the last. Stopped half-way (a crash), it
// runs again at the next Open and writes the same rows: the v/ rows of
// schema 1 still hold BilledUntil, and nothing else writes before Open
// returns.
func (s *Store) migrateBilling(ctx context.Context) error {
	var after []byte
	for {
		done := false
		var last []byte
		err := s.Update(ctx, func(tx *Tx) error {
			last, done = after, false
			seek := []byte(pVM)
			if after != nil {
				seek = append(append([]byte{}, after...), 0)
			}
			err := tx.scan([]byte(pVM), seek, true, func(item *badger.Item) error {
				if room, n := tx.Room(); room < 4<<10 || n < 16 {
					return errStop
				}
				var vm model.VM
				if err := item.Value(func(b []byte) error { return decode(b, "VM "+string(item.Key()[len(pVM):]), &vm) }); err != nil {
					return err
				}
				if err := model.ValidateID(model.KindAccount, vm.AccountID); err != nil {
					return fmt.Errorf("store: migrate VM %s: %w", vm.ID, err)
				}
				last = item.KeyCopy(nil)
				return tx.putBilling(billingOf(vm))
			})
			if err != nil {
				return err
			}
			if room, n := tx.Room(); room >= 4<<10 && n >= 16 {
				done = true
				return tx.set([]byte(keySchema), binary.BigEndian.AppendUint32(nil, SchemaVersion), "schema version")
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("store: migrate to schema %d: %w", SchemaVersion, err)
		}
		if done {
			return nil
		}
		after = last
	}
}

// empty reports whether the store holds no key at all.
func (tx *Tx) empty() (bool, error) {
	opts := badger.DefaultIteratorOptions
	opts.PrefetchValues = false
	it := tx.txn.NewIterator(opts)
	defer it.Close()
	it.Rewind()
	return !it.Valid(), nil
}
