package store

import (
	"context"
	"crypto/sha256"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Walk calls fn with every key and value in the store, in key order. It is
// for tests that check a request changed nothing (compare the store before
// and after, byte for byte); key and value are valid only during the call.
func (tx *Tx) Walk(fn func(key, value []byte) error) error {
	return tx.scan(nil, nil, true, func(item *badger.Item) error {
		return item.Value(func(v []byte) error { return fn(item.Key(), v) })
	})
}

// Digest is a hash of every key and value in the store, with their number
// ("12 rows 3fa9…"): equal digests mean the store did not change.
func (s *Store) Digest(ctx context.Context) (string, error) {
	h := sha256.New()
	n := 0
	err := s.View(ctx, func(tx *Tx) error {
		return tx.Walk(func(k, v []byte) error {
			n++
			fmt.Fprintf(h, "%d:%x=%d:%x;", len(k), k, len(v), v)
			return nil
		})
	})
	return fmt.Sprintf("%d rows %x", n, h.Sum(nil)), err
}
