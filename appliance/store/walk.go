package store

import "github.com/dgraph-io/badger/v4"

// Walk calls fn with every key and value in the store, in key order. It is
// for tests that check a request changed nothing (compare the store before
// and after, byte for byte); key and value are valid only during the call.
func (tx *Tx) Walk(fn func(key, value []byte) error) error {
	return tx.scan(nil, nil, true, func(item *badger.Item) error {
		return item.Value(func(v []byte) error { return fn(item.Key(), v) })
	})
}
