package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// Tx is one transaction, valid only inside the fn given to View or Update.
// It is not safe for concurrent use. Methods that write fail in a View.
//
// Getters return an error wrapping model.ErrNotFound that names the missing
// id; ids and names that go into keys are checked first (model.ErrInvalid).
// The store does not check the rest of an object: that is the appliance's
// job. List methods return an empty slice, not an error, when nothing matches.
type Tx struct {
	txn   *badger.Txn
	ctx   context.Context
	s     *Store
	write bool
	// size and count are what Badger counts of the writes so far (see
	// Room).
	size, count int64
}

// get decodes the value at k into v. A missing key is returned as
// badger.ErrKeyNotFound for the caller to turn into a model.ErrNotFound that
// names the object.
func (tx *Tx) get(k []byte, what string, v any) error {
	item, err := tx.txn.Get(k)
	if err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		return fmt.Errorf("store: read %s: %w", what, err)
	}
	return item.Value(func(b []byte) error { return decode(b, what, v) })
}

// has reports whether k exists; the read is part of the transaction's
// conflict set like any other.
func (tx *Tx) has(k []byte) (bool, error) {
	_, err := tx.txn.Get(k)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, badger.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("store: read %q: %w", k, err)
}

func decode(b []byte, what string, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("store: decode %s: %w (the state directory is damaged; restore it from a backup)", what, err)
	}
	return nil
}

// put stores v as JSON at k.
func (tx *Tx) put(k []byte, what string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("store: encode %s: %w", what, err)
	}
	if len(b) >= maxValueSize {
		return invalid("%s is %d bytes encoded; the store keeps values under %d bytes", what, len(b), maxValueSize)
	}
	return tx.set(k, b, what)
}

// set writes raw bytes at k.
func (tx *Tx) set(k, v []byte, what string) error {
	if err := tx.txn.Set(k, v); err != nil {
		return writeErr("write", what, err)
	}
	tx.size += int64(len(k)+len(v)) + 12
	tx.count++
	return nil
}

func (tx *Tx) del(k []byte, what string) error {
	if err := tx.txn.Delete(k); err != nil {
		return writeErr("delete", what, err)
	}
	tx.size += int64(len(k)) + 12
	tx.count++
	return nil
}

func writeErr(verb, what string, err error) error {
	switch {
	case errors.Is(err, badger.ErrReadOnlyTxn):
		return fmt.Errorf("store: %s %s in a read-only transaction; use Store.Update: %w", verb, what, err)
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("store: %s %s: the transaction is too big; split the work into several Updates: %w", verb, what, err)
	}
	return fmt.Errorf("store: %s %s: %w", verb, what, err)
}

// scan calls fn for each key under prefix, in key order, starting at seek
// (nil: the start of prefix). With values false, values are not prefetched:
// a scan of keys reads no value, and one that reads some (item.Value) reads
// them one at a time, without the copy prefetching makes of each. fn may
// return errStop to end the scan early.
// The transaction's context is checked as the scan goes.
func (tx *Tx) scan(prefix, seek []byte, values bool, fn func(item *badger.Item) error) error {
	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = values
	opts.PrefetchSize = 16
	it := tx.txn.NewIterator(opts)
	defer it.Close()
	if seek == nil {
		seek = prefix
	}
	n := 0
	for it.Seek(seek); it.Valid(); it.Next() {
		if n++; n%256 == 0 {
			if err := tx.ctx.Err(); err != nil {
				return err
			}
		}
		if err := fn(it.Item()); err != nil {
			if errors.Is(err, errStop) {
				return nil
			}
			return err
		}
	}
	return nil
}

var errStop = errors.New("stop scan")

// scanValues decodes every value under prefix into a slice, in key order,
// at most limit of them (limit <= 0: all).
func scanValues[T any](tx *Tx, prefix, seek []byte, what string, limit int) ([]T, error) {
	out := []T{}
	err := tx.scan(prefix, seek, true, func(item *badger.Item) error {
		var v T
		if err := item.Value(func(b []byte) error { return decode(b, what, &v) }); err != nil {
			return err
		}
		out = append(out, v)
		if limit > 0 && len(out) >= limit {
			return errStop
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// suffixes returns the part after prefix of every key under it.
func (tx *Tx) suffixes(prefix []byte) ([]string, error) {
	var out []string
	err := tx.scan(prefix, nil, false, func(item *badger.Item) error {
		out = append(out, string(item.Key()[len(prefix):]))
		return nil
	})
	return out, err
}

// notFound builds the error getters return for a missing object.
func notFound(what, id, hint string) error {
	return fmt.Errorf("%w: %s %s does not exist; %s", model.ErrNotFound, what, id, hint)
}
