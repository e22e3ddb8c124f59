package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// The pieces of the appliance's history pass (appliance/history.go says
// the rule): each works in one transaction, at most a given number of rows,
// and is called again until it says it is done.

// defaultBatch is the rows one call deletes when its caller says <= 0:
// a few hundred KiB of deletes, well under a transaction's 1.2 MiB.
const defaultBatch = 1000

// PruneEventsBefore deletes the oldest events, those whose At is before
// before, at most limit of them (limit <= 0: 1,000), and returns how many it
// deleted. The scan stops at the first event at or after before: events are
// appended in time order, so one that a clock step put out of order delays
// the pruning of those after it rather than losing a newer one. Seqs of
// pruned events are never handed out again (meta/seq/event stays).
func (tx *Tx) PruneEventsBefore(before time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = defaultBatch
	}
	var keys [][]byte
	err := tx.scan([]byte(pEvent), nil, true, func(item *badger.Item) error {
		if len(keys) >= limit {
			return errStop
		}
		var e model.Event
		if err := item.Value(func(v []byte) error { return decode(v, "event", &e) }); err != nil {
			return err
		}
		if !e.At.Before(before) {
			return errStop
		}
		keys = append(keys, item.KeyCopy(nil))
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range keys {
		if err := tx.del(k, "event"); err != nil {
			return 0, err
		}
	}
	return len(keys), nil
}

// PruneOperations deletes the finished operations that finished before
// before, oldest first, at most limit of them (limit <= 0: 1,000), and
// returns how many it deleted. It reads the finished index (of/), not every
// operation; a running operation is not in it and is never deleted.
func (tx *Tx) PruneOperations(before time.Time, limit int) (int, error) {
	if limit <= 0 {
		limit = defaultBatch
	}
	var ids []string
	err := tx.scan([]byte(pOpFinished), nil, false, func(item *badger.Item) error {
		k := item.Key()[len(pOpFinished):]
		if len(k) < 9 || k[8] != '/' {
			return fmt.Errorf("store: malformed finished-operation key %q (the state directory is damaged)", item.Key())
		}
		if len(ids) >= limit || !fromSortTime(binary.BigEndian.Uint64(k[:8])).Before(before) {
			return errStop
		}
		ids = append(ids, string(k[9:]))
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, id := range ids {
		op, err := tx.Operation(id)
		if err != nil {
			return 0, fmt.Errorf("store: finished-operation index names %s: %w", id, err)
		}
		if !op.State.Finished() {
			// Cannot happen: PutOperation keeps the index in step.
			return 0, fmt.Errorf("store: finished-operation index names %s, which is %s (the state directory is damaged)", id, op.State)
		}
		if err := tx.DeleteOperation(id); err != nil {
			return 0, err
		}
	}
	return len(ids), nil
}

// IndexFinishedOperations puts up to limit finished operations (limit <= 0:
// 1,000) that are missing from the finished index into it, for a store
// written before the index existed, and reports whether every one is in it
// now. Once it is, it says so at once (meta/index/of) without scanning.
func (tx *Tx) IndexFinishedOperations(limit int) (bool, error) {
	if limit <= 0 {
		limit = defaultBatch
	}
	done, err := tx.has([]byte(keyOpIndex))
	if err != nil || done {
		return done, err
	}
	var keys [][]byte
	more := false
	err = tx.scan([]byte(pOp), nil, true, func(item *badger.Item) error {
		var op model.Operation
		if err := item.Value(func(v []byte) error { return decode(v, "operation", &op) }); err != nil {
			return err
		}
		k, ok := opFinishedKeyOf(op)
		if !ok {
			return nil
		}
		has, err := tx.has(k)
		if err != nil || has {
			return err
		}
		if len(keys) >= limit {
			more = true
			return errStop
		}
		keys = append(keys, k)
		return nil
	})
	if err != nil {
		return false, err
	}
	for _, k := range keys {
		if err := tx.set(k, nil, "finished-operation index"); err != nil {
			return false, err
		}
	}
	if more {
		return false, nil
	}
	return true, tx.set([]byte(keyOpIndex), nil, "finished-operation index mark")
}

// FoldStats counts what FoldCharges did.
type FoldStats struct {
	// Entries is how many folded entries were written, one per VM and UTC
	// day; Removed how many ledger entries went (the charges they replace,
	// less the one each takes the place of).
	Entries, Removed int
}

// FoldCharges folds, in an account's ledger, the charges booked in
// [since, before) into one entry per VM and UTC day: Amount and Forgiven
// the exact sums, PeriodStart the earliest, PeriodEnd the latest, Charges
// how many charges it stands for, and At, Seq and BalanceAfter those of the
// latest one, whose key it takes (so it sorts where that one was and its
// BalanceAfter stays true). The other rows of the group are deleted in the
// same transaction, so the ledger's sum never changes. Top-ups and
// adjustments are never folded; a group that is one row already (folded, or
// a lone charge) is left as it is, so folding again changes nothing. A page
// (a billing period's charges of the account, ledger.go) is read whole: its
// key is deleted and each of its entries folds into its VM's day, or, if
// nothing folds into it, is written back as a row of its own.
//
// since and before are UTC midnights (since may be zero: the account's
// first entry). The scan seeks to before and reads back to since, newest
// first, and stops once it has maxRows entries to delete (<= 0: 1,000; a
// page counts all its entries and is taken whole, or first), so a
// transaction stays small whatever the number of VMs; it then returns the
// before to call it with next (the end of the day it stopped in; zero when
// it got to since). A day that takes more than one call is folded in steps:
// each step folds the rows it read into the day's latest charge, so every
// commit keeps the sums, and the next step folds the rest into it.
func (tx *Tx) FoldCharges(accountID string, since, before time.Time, maxRows int) (FoldStats, time.Time, error) {
	var st FoldStats
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return st, time.Time{}, err
	}
	if err := keyTime("fold bound", before); err != nil {
		return st, time.Time{}, err
	}
	if !isMidnight(before) || (!since.IsZero() && !isMidnight(since)) {
		return st, time.Time{}, invalid("fold charges in [%s, %s): give UTC midnights, whole days only", since.UTC().Format(time.RFC3339), before.UTC().Format(time.RFC3339))
	}
	if maxRows <= 0 {
		maxRows = defaultBatch
	}
	type groupKey struct {
		vm  string
		day int64
	}
	type group struct {
		latest    model.LedgerEntry // the first read: the newest
		latestKey []byte            // its row's key; nil: it was in a page
		others    [][]byte          // rows folded into latest
		folded    int               // entries folded into latest
	}
	groups := map[groupKey]*group{}
	var order []*group
	var pages [][]byte            // pages read: deleted, their entries rewritten
	var loose []model.LedgerEntry // entries of those pages that fold into nothing
	rows := 0                     // entries to delete (all of a page's)
	var resume time.Time
	var es []model.LedgerEntry
	// take adds e, read from a row at key k (nil: from a page), to its
	// group; it reports false if e is not a charge of a VM.
	take := func(e model.LedgerEntry, day time.Time, k []byte) bool {
		if e.Kind != model.Charge || e.VMID == "" {
			return false
		}
		gk := groupKey{e.VMID, day.Unix()}
		g := groups[gk]
		if g == nil {
			g = &group{latest: e, latestKey: k}
			groups[gk] = g
			order = append(order, g)
			return true
		}
		if k != nil {
			g.others = append(g.others, k)
		}
		g.folded++
		f := &g.latest
		f.Charges = max(f.Charges, 1) + max(e.Charges, 1)
		f.Amount += e.Amount
		f.Forgiven += e.Forgiven
		if !e.PeriodStart.IsZero() && (f.PeriodStart.IsZero() || e.PeriodStart.Before(f.PeriodStart)) {
			f.PeriodStart = e.PeriodStart
		}
		if e.PeriodEnd.After(f.PeriodEnd) {
			f.PeriodEnd = e.PeriodEnd
		}
		return true
	}
	prefix := ledgerPrefix(accountID)
	seek := ledgerKey(accountID, before.Add(-1), math.MaxUint64)
	err := tx.scan(prefix, seek, true, func(item *badger.Item) error {
		k := item.Key()
		if len(k) < len(prefix)+8 {
			return fmt.Errorf("store: malformed ledger key %q (the state directory is damaged)", k)
		}
		at := fromInvTime(binary.BigEndian.Uint64(k[len(prefix):]))
		if !since.IsZero() && at.Before(since) {
			return errStop
		}
		day := at.UTC().Truncate(24 * time.Hour)
		err := item.Value(func(v []byte) error {
			var err error
			es, err = decodeLedger(v, es[:0])
			return err
		})
		if err != nil {
			return err
		}
		if len(es) > 1 {
			// A page: all of it at at, so all in day. It goes whole, in
			// one transaction, or not at all.
			if rows > 0 && rows+len(es) > maxRows {
				resume = day.Add(24 * time.Hour)
				return errStop
			}
			rows += len(es)
			pages = append(pages, item.KeyCopy(nil))
			for _, e := range es {
				if !take(e, day, nil) {
					loose = append(loose, e)
				}
			}
			return nil
		}
		e := es[0]
		if e.Kind != model.Charge || e.VMID == "" {
			return nil
		}
		if groups[groupKey{e.VMID, day.Unix()}] != nil {
			if rows >= maxRows {
				resume = day.Add(24 * time.Hour)
				return errStop
			}
			rows++
		}
		take(e, day, item.KeyCopy(nil))
		return nil
	})
	if err != nil {
		return st, time.Time{}, err
	}
	// Deletes first: a group's entry may be written back where a page was.
	for _, k := range pages {
		if err := tx.del(k, "ledger page"); err != nil {
			return st, time.Time{}, err
		}
	}
	for _, g := range order {
		if g.folded == 0 && g.latestKey != nil {
			continue // one row already
		}
		for _, k := range g.others {
			if err := tx.del(k, "ledger entry"); err != nil {
				return st, time.Time{}, err
			}
		}
		if err := tx.putLedger([]model.LedgerEntry{g.latest}); err != nil {
			return st, time.Time{}, err
		}
		if g.folded > 0 {
			st.Entries++
			st.Removed += g.folded
		}
	}
	for _, e := range loose {
		if err := tx.putLedger([]model.LedgerEntry{e}); err != nil {
			return st, time.Time{}, err
		}
	}
	return st, resume, nil
}

func isMidnight(t time.Time) bool { return t.Equal(t.UTC().Truncate(24 * time.Hour)) }

// LedgerFoldedBefore returns the instant before which every account's
// charges are folded (zero: none are).
func (tx *Tx) LedgerFoldedBefore() (time.Time, error) {
	item, err := tx.txn.Get([]byte(keyFolded))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return time.Time{}, nil
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("store: read the ledger fold mark: %w", err)
	}
	var t time.Time
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("store: ledger fold mark is %d bytes, not 8 (the state directory is damaged)", len(v))
		}
		t = fromSortTime(binary.BigEndian.Uint64(v))
		return nil
	})
	return t, err
}

// SetLedgerFoldedBefore records that every account's charges before t are
// folded. The mark never goes back: an earlier t is ignored.
func (tx *Tx) SetLedgerFoldedBefore(t time.Time) error {
	if err := keyTime("ledger fold mark", t); err != nil {
		return err
	}
	cur, err := tx.LedgerFoldedBefore()
	if err != nil || !t.After(cur) {
		return err
	}
	return tx.set([]byte(keyFolded), be64(sortTime(t)), "ledger fold mark")
}

// Maintain gives the disk space of deleted and overwritten rows back. Badger
// does neither by itself: a delete writes a tombstone, and the old value and
// the tombstone both stay in the LSM tree's tables until a compaction that
// reaches the last level drops them, which Badger only starts when a level
// outgrows its target, so a store of a few MiB that deletes as much as it
// writes (pruned events, folded charges) would keep growing. Maintain writes
// the memtable out (flushMemtable) and compacts the tree into one level
// (Badger's Flatten), which drops them, then runs the value log's garbage
// collection until it finds nothing to rewrite (values stay in the LSM
// tree, see maxValueSize, so that is cheap and usually a no-op; it is there
// so that a value ever written to the log does not stay forever). Without
// the memtable written out first, Flatten finds everything in level 0 of a
// young store and does nothing: 4 rounds of 50,000 events written and
// pruned left 3.5, 5.5, 7.4 MiB on disk; with it, 28 KiB after each
// (TestMaintainGivesSpaceBack). The flatten takes well under a second at
// this store's size; transactions go on meanwhile.
func (s *Store) Maintain(ctx context.Context) error {
	s.maintainMu.Lock()
	defer s.maintainMu.Unlock()
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := s.flushMemtable(); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	if s.db.Opts().InMemory {
		return nil
	}
	if err := s.db.Flatten(1); err != nil {
		return fmt.Errorf("store: compact: %w", err)
	}
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		err := s.db.RunValueLogGC(0.5)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return nil
		default:
			return fmt.Errorf("store: value log garbage collection: %w", err)
		}
	}
}

// flushMemtable has Badger write its memtable out to a table, where Flatten
// can reach the deletes it holds. Badger has no call for that alone;
// DropPrefix of a key written for the purpose does it. DropPrefix refuses
// commits meanwhile (ErrBlockedWrites) instead of making them wait, so it
// runs with s.writeMu held exclusively: Updates in flight finish first and
// new ones wait for it; reads (View) go on. It also compacts level 0 into
// the next: 160 ms right after folding 30 days of 50 VMs' charges
// (BenchmarkHistoryFold), less on an ordinary day, once a day.
func (s *Store) flushMemtable() error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.db.Opts().InMemory {
		return nil
	}
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(keyFlush), nil) }); err != nil {
		return fmt.Errorf("store: write out the memtable: %w", err)
	}
	if err := s.db.DropPrefix([]byte(keyFlush)); err != nil {
		return fmt.Errorf("store: write out the memtable: %w", err)
	}
	return nil
}
