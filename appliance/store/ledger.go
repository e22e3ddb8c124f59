package store

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// Ledger values (l/ rows) are binary, not JSON: a billing period books an
// entry for every running VM, and 10,000 of them as JSON (some 230 bytes
// each, through encoding/json) were a fifth of what a period allocated.
// A value holds one entry (a row) or several entries of one account booked
// at one instant by one AppendLedgers call (a page: a billing period's
// charges of an account), with contiguous seqs, under the key of the
// highest seq, so the keys keep the order of the entries. Every reader
// (Ledger, FoldCharges) expands a page into its entries; nothing outside
// this file sees pages.
//
// The layout (varints are encoding/binary's):
//
//	ledgerFormat (1 byte, never '{'), uvarint len + account id, uvarint n,
//	then n entries, oldest (lowest seq) first, each:
//	uvarint seq, time At, varint Amount, kind byte, flags byte,
//	varint BalanceAfter, then the fields the flags name, in this order:
//	uvarint len + VMID, time PeriodStart, time PeriodEnd, varint Forgiven,
//	uvarint len + Reason, varint Charges.
//
// A time is varint Unix seconds, uvarint nanoseconds; it reads back in UTC.
// A field at its zero value is left out (its flag clear). A value that
// starts with '{' is a LedgerEntry as JSON, as superjolt wrote before pages;
// both read, so a store needs no migration: old rows stay JSON until a fold
// rewrites them.
const ledgerFormat = 1

// maxPage is the most entries one page holds (a few KiB encoded).
const maxPage = 256

const (
	lfVM = 1 << iota
	lfPeriodStart
	lfPeriodEnd
	lfForgiven
	lfReason
	lfCharges
)

var entryKinds = [...]model.EntryKind{1: model.Charge, 2: model.TopUp, 3: model.Adjustment}

func kindByte(k model.EntryKind) (byte, bool) {
	for i, n := range entryKinds {
		if i > 0 && n == k {
			return byte(i), true
		}
	}
	return 0, false
}

func appendTime(b []byte, t time.Time) []byte {
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// encodeLedger appends the value of es (one account's, oldest first) to b.
func encodeLedger(b []byte, es []model.LedgerEntry) ([]byte, error) {
	b = append(b, ledgerFormat)
	b = appendString(b, es[0].AccountID)
	b = binary.AppendUvarint(b, uint64(len(es)))
	for _, e := range es {
		kind, ok := kindByte(e.Kind)
		if !ok {
			return nil, invalid("ledger entry kind %q: use %q, %q or %q", e.Kind, model.Charge, model.TopUp, model.Adjustment)
		}
		if e.AccountID != es[0].AccountID {
			return nil, fmt.Errorf("store: one ledger page for accounts %s and %s", es[0].AccountID, e.AccountID)
		}
		var flags byte
		if e.VMID != "" {
			flags |= lfVM
		}
		if !e.PeriodStart.IsZero() {
			flags |= lfPeriodStart
		}
		if !e.PeriodEnd.IsZero() {
			flags |= lfPeriodEnd
		}
		if e.Forgiven != 0 {
			flags |= lfForgiven
		}
		if e.Reason != "" {
			flags |= lfReason
		}
		if e.Charges != 0 {
			flags |= lfCharges
		}
		b = binary.AppendUvarint(b, e.Seq)
		b = appendTime(b, e.At)
		b = binary.AppendVarint(b, int64(e.Amount))
		b = append(b, kind, flags)
		b = binary.AppendVarint(b, int64(e.BalanceAfter))
		if flags&lfVM != 0 {
			b = appendString(b, e.VMID)
		}
		if flags&lfPeriodStart != 0 {
			b = appendTime(b, e.PeriodStart)
		}
		if flags&lfPeriodEnd != 0 {
			b = appendTime(b, e.PeriodEnd)
		}
		if flags&lfForgiven != 0 {
			b = binary.AppendVarint(b, int64(e.Forgiven))
		}
		if flags&lfReason != 0 {
			b = appendString(b, e.Reason)
		}
		if flags&lfCharges != 0 {
			b = binary.AppendVarint(b, int64(e.Charges))
		}
	}
	if len(b) >= maxValueSize {
		return nil, invalid("ledger entry %d is %d bytes encoded; the store keeps values under %d bytes (shorten its reason)", es[len(es)-1].Seq, len(b), maxValueSize)
	}
	return b, nil
}

// ledgerReader reads a binary ledger value.
type ledgerReader struct {
	v   []byte
	err bool
}

func (r *ledgerReader) uvarint() uint64 {
	x, n := binary.Uvarint(r.v)
	if n <= 0 {
		r.err, r.v = true, nil
		return 0
	}
	r.v = r.v[n:]
	return x
}

func (r *ledgerReader) varint() int64 {
	x, n := binary.Varint(r.v)
	if n <= 0 {
		r.err, r.v = true, nil
		return 0
	}
	r.v = r.v[n:]
	return x
}

func (r *ledgerReader) byte() byte {
	if len(r.v) < 1 {
		r.err = true
		return 0
	}
	c := r.v[0]
	r.v = r.v[1:]
	return c
}

func (r *ledgerReader) string() string {
	n := r.uvarint()
	if n > uint64(len(r.v)) {
		r.err, r.v = true, nil
		return ""
	}
	s := string(r.v[:n])
	r.v = r.v[n:]
	return s
}

func (r *ledgerReader) time() time.Time {
	s := r.varint()
	ns := r.uvarint()
	if ns >= 1e9 {
		r.err = true
		return time.Time{}
	}
	return time.Unix(s, int64(ns)).UTC()
}

// decodeLedger appends the entries of a ledger value to dst, newest (highest
// seq) first, the order of Ledger.
func decodeLedger(v []byte, dst []model.LedgerEntry) ([]model.LedgerEntry, error) {
	if len(v) > 0 && v[0] == '{' {
		var e model.LedgerEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return dst, fmt.Errorf("store: decode ledger entry: %w (the state directory is damaged; restore it from a backup)", err)
		}
		return append(dst, e), nil
	}
	bad := func(what string) error {
		return fmt.Errorf("store: decode ledger entry: %s (the state directory is damaged; restore it from a backup)", what)
	}
	if len(v) < 1 || v[0] != ledgerFormat {
		return dst, bad("unknown format")
	}
	r := ledgerReader{v: v[1:]}
	acct := r.string()
	n := r.uvarint()
	if r.err || n == 0 || n > uint64(len(r.v)) {
		return dst, bad("bad page header")
	}
	start := len(dst)
	dst = append(dst, make([]model.LedgerEntry, n)...)
	// Stored oldest first; handed out newest first.
	for i := len(dst) - 1; i >= start; i-- {
		e := &dst[i]
		e.AccountID = acct
		e.Seq = r.uvarint()
		e.At = r.time()
		e.Amount = model.Micro(r.varint())
		k := r.byte()
		if int(k) >= len(entryKinds) || k == 0 {
			return dst[:start], bad(fmt.Sprintf("unknown entry kind %d", k))
		}
		e.Kind = entryKinds[k]
		flags := r.byte()
		e.BalanceAfter = model.Micro(r.varint())
		if flags&lfVM != 0 {
			e.VMID = r.string()
		}
		if flags&lfPeriodStart != 0 {
			e.PeriodStart = r.time()
		}
		if flags&lfPeriodEnd != 0 {
			e.PeriodEnd = r.time()
		}
		if flags&lfForgiven != 0 {
			e.Forgiven = model.Micro(r.varint())
		}
		if flags&lfReason != 0 {
			e.Reason = r.string()
		}
		if flags&lfCharges != 0 {
			e.Charges = int(r.varint())
		}
		if r.err {
			return dst[:start], bad("short entry")
		}
	}
	if len(r.v) != 0 {
		return dst[:start], bad("trailing bytes")
	}
	return dst, nil
}

// putLedger writes es (one account's, booked at one instant, contiguous
// seqs, oldest first) as one value under the key of the last.
func (tx *Tx) putLedger(es []model.LedgerEntry) error {
	last := es[len(es)-1]
	b, err := encodeLedger(make([]byte, 0, 16+48*len(es)), es)
	if err != nil {
		return err
	}
	return tx.set(ledgerKey(last.AccountID, last.At, last.Seq), b, "ledger entry")
}
