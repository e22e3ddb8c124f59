package store

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/superjolt/superjolt/appliance/model"
)

// Billing is what billing needs of a VM, kept in a row of its own
// (vb/<account>/<vm>, see billingKey) so that a billing period reads and
// rewrites some 40 bytes per VM instead of its whole JSON. PutVM and
// DeleteVM keep it in step with the VM; the row's BilledUntil is the VM's:
// VM, VMs and ForEachVM return it in model.VM.BilledUntil, and the v/ row
// stores that field zeroed. SetBilledUntil is the one write of it alone.
type Billing struct {
	VMID      string
	AccountID string
	Tier      string
	// Bills: the VM's state accrues charges (model.VMState.Bills).
	Bills       bool
	CreatedAt   time.Time
	BilledUntil time.Time
}

func billingOf(vm model.VM) Billing {
	return Billing{VMID: vm.ID, AccountID: vm.AccountID, Tier: vm.Tier, Bills: vm.State.Bills(),
		CreatedAt: vm.CreatedAt, BilledUntil: vm.BilledUntil}
}

func (b Billing) same(o Billing) bool {
	return b.VMID == o.VMID && b.AccountID == o.AccountID && b.Tier == o.Tier && b.Bills == o.Bills &&
		sameTime(b.CreatedAt, o.CreatedAt) && sameTime(b.BilledUntil, o.BilledUntil)
}

// sameTime: equal instants in the same zone offset, so that a row is
// rewritten when its encoding would change.
func sameTime(a, b time.Time) bool {
	_, ao := a.Zone()
	_, bo := b.Zone()
	return a.Equal(b) && ao == bo
}

// billingFormat is the first byte of a vb/ value.
const billingFormat = 1

// encode: format, flags (bit 0: bills), then tier, created_at and
// billed_until, each a length byte and its bytes (times in
// time.Time.MarshalBinary form, which keeps the zone offset, as JSON does).
func (b Billing) encode() ([]byte, error) {
	if len(b.Tier) > 255 {
		return nil, invalid("VM %s tier name is %d bytes", b.VMID, len(b.Tier))
	}
	out := make([]byte, 0, 3+len(b.Tier)+2*17)
	var flags byte
	if b.Bills {
		flags |= 1
	}
	out = append(out, billingFormat, flags, byte(len(b.Tier)))
	out = append(out, b.Tier...)
	for _, t := range []time.Time{b.CreatedAt, b.BilledUntil} {
		tb, err := t.MarshalBinary()
		if err != nil {
			return nil, fmt.Errorf("store: encode VM %s billing: %w", b.VMID, err)
		}
		out = append(out, byte(len(tb)))
		out = append(out, tb...)
	}
	return out, nil
}

func decodeBilling(v []byte, b *Billing) error {
	bad := func(what string) error {
		return fmt.Errorf("store: decode VM %s billing row: %s (the state directory is damaged; restore it from a backup)", b.VMID, what)
	}
	if len(v) < 3 || v[0] != billingFormat {
		return bad("unknown format")
	}
	b.Bills = v[1]&1 != 0
	n := int(v[2])
	v = v[3:]
	if len(v) < n {
		return bad("short tier")
	}
	b.Tier, v = string(v[:n]), v[n:]
	for _, t := range []*time.Time{&b.CreatedAt, &b.BilledUntil} {
		if len(v) < 1 || len(v) < 1+int(v[0]) {
			return bad("short time")
		}
		n := int(v[0])
		if err := t.UnmarshalBinary(v[1 : 1+n]); err != nil {
			return bad(err.Error())
		}
		v = v[1+n:]
	}
	if len(v) != 0 {
		return bad("trailing bytes")
	}
	return nil
}

// putBilling writes b's row.
func (tx *Tx) putBilling(b Billing) error {
	v, err := b.encode()
	if err != nil {
		return err
	}
	return tx.set(billingKey(b.AccountID, b.VMID), v, "VM "+b.VMID+" billing")
}

var errNoBilling = errors.New("store: VM has no billing row")

// billing reads the billing row of VM id of account acct.
func (tx *Tx) billing(acct, id string) (Billing, error) {
	b := Billing{VMID: id, AccountID: acct}
	item, err := tx.txn.Get(billingKey(acct, id))
	if err != nil {
		if errors.Is(err, badger.ErrKeyNotFound) {
			return b, errNoBilling
		}
		return b, fmt.Errorf("store: read VM %s billing: %w", id, err)
	}
	return b, item.Value(func(v []byte) error { return decodeBilling(v, &b) })
}

// SetBilledUntil records that b's VM is billed until until: b is its row as
// read in this transaction (ForEachBilling), so that a concurrent change
// of the VM makes one of the two transactions conflict and run again.
func (tx *Tx) SetBilledUntil(b Billing, until time.Time) error {
	if err := model.ValidateID(model.KindVM, b.VMID); err != nil {
		return err
	}
	if err := model.ValidateID(model.KindAccount, b.AccountID); err != nil {
		return err
	}
	b.BilledUntil = until
	return tx.putBilling(b)
}

// BillingCursor says where a walk of billing rows starts: just after the
// row of VMID in AccountID. The zero cursor starts at the first.
type BillingCursor struct {
	AccountID string
	VMID      string
}

// ErrStop, returned by the fn of ForEachBilling, ends the walk without an
// error.
var ErrStop = errStop

// ForEachBilling calls fn with the billing rows of every VM of acct (of
// every account when acct is ""), ordered by account then VM id, from
// after (exclusive). It reads some 60 bytes a VM and decodes no JSON.
// Every row it hands fn is in the transaction's conflict set.
func (tx *Tx) ForEachBilling(acct string, after BillingCursor, fn func(Billing) error) error {
	prefix := []byte(pBilling)
	if acct != "" {
		if err := model.ValidateID(model.KindAccount, acct); err != nil {
			return err
		}
		prefix = billingPrefix(acct)
	}
	var seek []byte
	if after.AccountID != "" {
		// The smallest key after the cursor's: its own with a 0 byte.
		seek = append(billingKey(after.AccountID, after.VMID), 0)
	}
	acctID := ""
	return tx.scan(prefix, seek, true, func(item *badger.Item) error {
		k := item.Key()[len(pBilling):]
		// <account>/<vm>: ids have fixed lengths but are split on '/'
		// (neither holds one).
		i := bytes.IndexByte(k, '/')
		if i < 0 {
			return fmt.Errorf("store: malformed billing key %q (the state directory is damaged)", item.Key())
		}
		if string(k[:i]) != acctID { // one string per account, not per row
			acctID = string(k[:i])
		}
		b := Billing{AccountID: acctID, VMID: string(k[i+1:])}
		if err := item.Value(func(v []byte) error { return decodeBilling(v, &b) }); err != nil {
			return err
		}
		return fn(b)
	})
}

// Room returns how much more this transaction can write: bytes, counted as
// Badger counts them (key + value + 12 a write), and writes. Work that
// fills transactions up (a billing period) stops a little before either
// reaches zero and goes on in the next Update.
func (tx *Tx) Room() (bytes, writes int64) {
	return tx.s.db.MaxBatchSize() - 1 - tx.size, tx.s.db.MaxBatchCount() - 1 - tx.count
}
