package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// SchemaVersion is the layout of keys and values this package reads and
// writes. Bump it with any change an older superjolt would misread, and teach
// checkSchema to migrate from the version before.
const SchemaVersion = 1

// checkSchema writes the schema key into a new, empty store and refuses a
// store written by a newer superjolt or by something else entirely.
func (s *Store) checkSchema(ctx context.Context, dir string) error {
	where := dir
	if where == "" {
		where = "the in-memory store"
	}
	return s.Update(ctx, func(tx *Tx) error {
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
		}
		return nil
	})
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
