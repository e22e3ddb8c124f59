package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// nextSeq increments the counter at k and returns its new value. The counter
// is an ordinary key read and written in the transaction, so a seq is taken
// only if the transaction commits, and two transactions that take one
// conflict (one of them retries) instead of taking the same.
func (tx *Tx) nextSeq(k, what string) (uint64, error) {
	return tx.nextSeqs(k, what, 1)
}

// nextSeqs takes n seqs at once from the counter at k (one write of it)
// and returns the first; the others follow it.
func (tx *Tx) nextSeqs(k, what string, n uint64) (uint64, error) {
	var cur uint64
	item, err := tx.txn.Get([]byte(k))
	switch {
	case errors.Is(err, badger.ErrKeyNotFound):
	case err != nil:
		return 0, fmt.Errorf("store: read %s counter: %w", what, err)
	default:
		err := item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("store: %s counter is %d bytes, not 8 (the state directory is damaged)", what, len(v))
			}
			cur = binary.BigEndian.Uint64(v)
			return nil
		})
		if err != nil {
			return 0, err
		}
	}
	if err := tx.set([]byte(k), be64(cur+n), what+" counter"); err != nil {
		return 0, err
	}
	return cur + 1, nil
}

// AppendLedger stores e under a new ledger seq (one counter for the whole
// box, so a seq names one entry) and returns it with Seq set. It does not
// touch the account's balance: the appliance puts the account in the same
// transaction.
func (tx *Tx) AppendLedger(e model.LedgerEntry) (model.LedgerEntry, error) {
	if err := model.ValidateID(model.KindAccount, e.AccountID); err != nil {
		return e, fmt.Errorf("ledger entry: %w", err)
	}
	if err := keyTime("ledger entry time", e.At); err != nil {
		return e, err
	}
	if e.Kind != model.Charge && e.Kind != model.TopUp && e.Kind != model.Adjustment {
		return e, invalid("ledger entry kind %q: use %q, %q or %q", e.Kind, model.Charge, model.TopUp, model.Adjustment)
	}
	seq, err := tx.nextSeq(keyLedgerSq, "ledger")
	if err != nil {
		return e, err
	}
	e.Seq = seq
	return e, tx.putLedger([]model.LedgerEntry{e})
}

// AppendLedgers stores es as AppendLedger would, one after the other, with
// one write of the seq counter for them all (a billing period books
// thousands), and sets their Seq. Each run of entries of one account at one
// instant (up to maxPage of them) is one value, a page (ledger.go), instead
// of a row each: a billing period writes 100 values for 100 accounts' 10,000
// charges. Readers see the entries one by one, as if they were rows.
func (tx *Tx) AppendLedgers(es []model.LedgerEntry) error {
	if len(es) == 0 {
		return nil
	}
	for _, e := range es {
		if err := checkLedgerEntry(e); err != nil {
			return err
		}
	}
	seq, err := tx.nextSeqs(keyLedgerSq, "ledger", uint64(len(es)))
	if err != nil {
		return err
	}
	for i := range es {
		es[i].Seq = seq + uint64(i)
	}
	for len(es) > 0 {
		n := 1
		for n < len(es) && n < maxPage && es[n].AccountID == es[0].AccountID && es[n].At.Equal(es[0].At) {
			n++
		}
		if err := tx.putLedger(es[:n]); err != nil {
			return err
		}
		es = es[n:]
	}
	return nil
}

func checkLedgerEntry(e model.LedgerEntry) error {
	if err := model.ValidateID(model.KindAccount, e.AccountID); err != nil {
		return fmt.Errorf("ledger entry: %w", err)
	}
	if err := keyTime("ledger entry time", e.At); err != nil {
		return err
	}
	if e.Kind != model.Charge && e.Kind != model.TopUp && e.Kind != model.Adjustment {
		return invalid("ledger entry kind %q: use %q, %q or %q", e.Kind, model.Charge, model.TopUp, model.Adjustment)
	}
	return nil
}

// Ledger returns an account's ledger entries, newest first (by At, then by
// seq), at most limit of them (limit <= 0: all).
func (tx *Tx) Ledger(accountID string, limit int) ([]model.LedgerEntry, error) {
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return nil, err
	}
	out := []model.LedgerEntry{}
	err := tx.scan(ledgerPrefix(accountID), nil, true, func(item *badger.Item) error {
		return item.Value(func(v []byte) error {
			var err error
			out, err = decodeLedger(v, out)
			if err == nil && limit > 0 && len(out) >= limit {
				out = out[:limit]
				return errStop
			}
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LedgerTotals adds up an account's whole ledger, one value at a time (a
// page's entries are decoded into one reused slice): what a history fold
// never changes.
func (tx *Tx) LedgerTotals(accountID string) (model.LedgerTotals, error) {
	var t model.LedgerTotals
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return t, err
	}
	var buf []model.LedgerEntry
	err := tx.scan(ledgerPrefix(accountID), nil, true, func(item *badger.Item) error {
		return item.Value(func(v []byte) error {
			var err error
			if buf, err = decodeLedger(v, buf[:0]); err != nil {
				return err
			}
			for _, e := range buf {
				t.Add(e)
			}
			return nil
		})
	})
	return t, err
}

// AppendEvent stores e under the next event seq and returns it with Seq set.
// Seqs only grow: the counter survives restarts and events being pruned, so
// a follower that remembers the last seq it saw never misses or repeats one.
func (tx *Tx) AppendEvent(e model.Event) (model.Event, error) {
	seq, err := tx.nextSeq(keyEventSeq, "event")
	if err != nil {
		return e, err
	}
	e.Seq = seq
	return e, tx.put(eventKey(seq), fmt.Sprintf("event %d", seq), e)
}

// EventsAfter returns the events with a seq above seq, oldest first, at most
// limit of them (limit <= 0: all). EventsAfter(0, n) starts at the oldest.
func (tx *Tx) EventsAfter(seq uint64, limit int) ([]model.Event, error) {
	if seq == ^uint64(0) {
		return []model.Event{}, nil
	}
	return scanValues[model.Event](tx, []byte(pEvent), eventKey(seq+1), "event", limit)
}

// PruneEvents deletes the oldest events, those with a seq up to and
// including through, at most limit of them in this transaction (limit <= 0:
// 1,000), and returns how many it deleted. Seqs of pruned events are never
// handed out again. Call it until it returns fewer than limit to prune more
// than one transaction holds.
func (tx *Tx) PruneEvents(through uint64, limit int) (int, error) {
	if limit <= 0 {
		limit = 1000
	}
	var keys [][]byte
	err := tx.scan([]byte(pEvent), nil, false, func(item *badger.Item) error {
		k := item.KeyCopy(nil)
		if binary.BigEndian.Uint64(k[len(pEvent):]) > through || len(keys) >= limit {
			return errStop
		}
		keys = append(keys, k)
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

// LastEventSeq returns the seq of the newest event ever appended (0 if none),
// for a follower that only wants what happens from now on.
func (tx *Tx) LastEventSeq() (uint64, error) {
	var seq uint64
	item, err := tx.txn.Get([]byte(keyEventSeq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("store: read event counter: %w", err)
	}
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("store: event counter is %d bytes, not 8 (the state directory is damaged)", len(v))
		}
		seq = binary.BigEndian.Uint64(v)
		return nil
	})
	return seq, err
}

// newIDTries bounds NewID's draws. With 36^6 (2.2 billion) VM ids, needing
// more than a few means the generator is broken, not unlucky.
const newIDTries = 100

// NewID returns an id of kind k that was never handed out before on this
// store, and records it forever, so an id never names two objects, even
// after the first is reclaimed. The record is part of the transaction: the id
// is taken only if Update returns nil, so create nothing outside the store
// (subvolumes, units) under it before then.
func (tx *Tx) NewID(k model.Kind) (string, error) {
	switch k {
	case model.KindAccount, model.KindVM, model.KindBackup, model.KindOperation, model.KindToken:
	default:
		return "", invalid("unknown id kind %q", string(k))
	}
	for range newIDTries {
		id := tx.s.newID(k)
		if err := model.ValidateID(k, id); err != nil {
			return "", fmt.Errorf("store: id generator made a bad id: %w", err)
		}
		used, err := tx.has(idKey(id))
		if err != nil {
			return "", err
		}
		if used {
			continue
		}
		if err := tx.set(idKey(id), nil, "id "+id); err != nil {
			return "", err
		}
		return id, nil
	}
	return "", fmt.Errorf("%w: no unused %s id after %d draws; the id space is exhausted or the generator is broken", model.ErrConflict, k, newIDTries)
}

// IDUsed reports whether id was ever handed out by NewID.
func (tx *Tx) IDUsed(id string) (bool, error) {
	if model.KindOf(id) == "" {
		return false, invalid("%q is not an id", id)
	}
	return tx.has(idKey(id))
}

func checkAddr(a netip.Addr) error {
	if !a.IsValid() {
		return invalid("no IP address given")
	}
	if a.Zone() != "" {
		return invalid("IP address %s has a zone; give the address alone", a)
	}
	return nil
}

// IPOwner returns the id of the VM that holds addr, or an error wrapping
// model.ErrNotFound if the address is free. An IPv4 address and its
// IPv4-mapped IPv6 form are the same address.
func (tx *Tx) IPOwner(addr netip.Addr) (string, error) {
	if err := checkAddr(addr); err != nil {
		return "", err
	}
	item, err := tx.txn.Get(ipKey(addr))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", fmt.Errorf("%w: IP address %s is free", model.ErrNotFound, addr)
	}
	if err != nil {
		return "", fmt.Errorf("store: read IP %s: %w", addr, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return "", fmt.Errorf("store: read IP %s: %w", addr, err)
	}
	return string(v), nil
}

// ClaimIP records addr as held by vmID. Claiming an address the VM already
// holds is a no-op; one held by another VM is a model.ErrConflict.
func (tx *Tx) ClaimIP(addr netip.Addr, vmID string) error {
	if err := model.ValidateID(model.KindVM, vmID); err != nil {
		return err
	}
	owner, err := tx.IPOwner(addr)
	switch {
	case errors.Is(err, model.ErrNotFound):
	case err != nil:
		return err
	case owner == vmID:
		return nil
	default:
		return fmt.Errorf("%w: IP address %s is held by VM %s; pick another address", model.ErrConflict, addr, owner)
	}
	return tx.set(ipKey(addr), []byte(vmID), "IP "+addr.String())
}

// ReleaseIP frees addr. Releasing a free address is a no-op, so a release
// that is retried after a crash does no harm.
func (tx *Tx) ReleaseIP(addr netip.Addr) error {
	if err := checkAddr(addr); err != nil {
		return err
	}
	return tx.del(ipKey(addr), "IP "+addr.String())
}

// IPClaim is an address and the VM that holds it.
type IPClaim struct {
	Addr netip.Addr
	VMID string
}

// IPClaims returns every claimed address in numeric order (IPv4 before
// IPv6), for an allocator that looks for the first free one.
func (tx *Tx) IPClaims() ([]IPClaim, error) {
	out := []IPClaim{}
	err := tx.scan([]byte(pIP), nil, true, func(item *badger.Item) error {
		k := item.Key()[len(pIP):]
		if len(k) != 16 {
			return fmt.Errorf("store: malformed IP key %q (the state directory is damaged)", item.Key())
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return fmt.Errorf("store: read IP claim: %w", err)
		}
		out = append(out, IPClaim{Addr: netip.AddrFrom16([16]byte(k)).Unmap(), VMID: string(v)})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// uniqueAddrs returns the valid addresses among as, each once.
func uniqueAddrs(as ...netip.Addr) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		if !a.IsValid() {
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o.Unmap() == a.Unmap()
		}
		if !dup {
			out = append(out, a)
		}
	}
	return out
}
