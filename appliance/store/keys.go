package store

import (
	"encoding/binary"
	"math"
	"net/netip"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// Every key starts with a short type prefix ending in '/'. No prefix is a
// prefix of another one's first segment ("v/" never matches "va/..."), so a
// prefix scan only ever sees its own kind. The parts that follow are ids and
// names that were validated before the key was built (they never contain
// '/'), or fixed-width big-endian numbers, so keys of one kind sort the way
// their scans need to come out. doc.go has the whole table.
const (
	pAccount    = "a/"
	pTier       = "t/"
	pImage      = "i/"
	pVM         = "v/"
	pVMAccount  = "va/"
	pVMState    = "vs/"
	pBilling    = "vb/"
	pBackup     = "b/"
	pBackupIdx  = "bi/"
	pBackupVer  = "bv/"
	pLedger     = "l/"
	pOp         = "o/"
	pOpRunning  = "ou/"
	pOpFinished = "of/"
	pEvent      = "e/"
	pID         = "id/"
	pIP         = "ip/"
	pToken      = "k/"
	pTokenAcct  = "ka/"
	keySchema   = "meta/schema"
	keyEventSeq = "meta/seq/event"
	keyLedgerSq = "meta/seq/ledger"
	keyFolded   = "meta/fold/ledger"
	keyOpIndex  = "meta/index/of"
	keyFlush    = "meta/flush"
)

func key(parts ...string) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b
}

// accountKey: a/<account id> → Account JSON.
func accountKey(id string) []byte { return key(pAccount, id) }

// tierKey: t/<tier name> → Tier JSON.
func tierKey(name string) []byte { return key(pTier, name) }

// imageKey: i/<image name> → Image JSON.
func imageKey(name string) []byte { return key(pImage, name) }

// vmKey: v/<vm id> → VM JSON (the one copy of a VM; the indexes below hold
// no value).
func vmKey(id string) []byte { return key(pVM, id) }

// vmAccountKey: va/<account id>/<vm id> → empty. One per VM; the account's
// VMs are a prefix scan of va/<account id>/.
func vmAccountKey(acct, vm string) []byte { return key(pVMAccount, acct, "/", vm) }

func vmAccountPrefix(acct string) []byte { return key(pVMAccount, acct, "/") }

// vmStateKey: vs/<state>/<vm id> → empty. One per VM; the scheduler's "every
// running VM" is a prefix scan of vs/running/.
func vmStateKey(state model.VMState, vm string) []byte {
	return key(pVMState, string(state), "/", vm)
}

func vmStatePrefix(state model.VMState) []byte { return key(pVMState, string(state), "/") }

// billingKey: vb/<account id>/<vm id> → the VM's Billing (billing.go: a
// format byte, flags, tier, created_at, billed_until; some 40 bytes). One
// per VM, written by PutVM and SetBilledUntil; a billing period is a scan
// of vb/, an account's burn rate a scan of vb/<account id>/.
func billingKey(acct, vm string) []byte { return key(pBilling, acct, "/", vm) }

func billingPrefix(acct string) []byte { return key(pBilling, acct, "/") }

// backupKey: b/<vm id>/<^taken_at BE>/<backup id> → Backup JSON.
//
// taken_at is stored inverted (bitwise NOT of its order-preserving uint64
// form), so a forward scan of b/<vm id>/ returns the newest backup first
// without sorting. The 8 bytes are binary and may contain '/': the layout is
// read by position (ids have fixed lengths), never split on '/'.
func backupKey(vm string, takenAt time.Time, bk string) []byte {
	return key(pBackup, vm, "/", string(be64(invTime(takenAt))), "/", bk)
}

func backupPrefix(vm string) []byte { return key(pBackup, vm, "/") }

// backupIdxKey: bi/<backup id> → <vm id><^taken_at BE>, the parts of its
// backupKey, so Backup(id) finds a backup without knowing its VM.
func backupIdxKey(bk string) []byte { return key(pBackupIdx, bk) }

func backupIdxValue(vm string, takenAt time.Time) []byte {
	return key(vm, string(be64(invTime(takenAt))))
}

// backupKeyFromIdx rebuilds a backupKey from its bi/ value.
func backupKeyFromIdx(v []byte, bk string) ([]byte, bool) {
	const vmLen = 9 // "vm-" + 6
	if len(v) != vmLen+8 {
		return nil, false
	}
	return key(pBackup, string(v[:vmLen]), "/", string(v[vmLen:]), "/", bk), true
}

// backupVerKey: bv/<vm id> → empty, written by every PutBackup for the VM
// and read by DeleteVM. A backup put while the VM is being deleted thus makes
// one of the two transactions conflict and run again, instead of leaving a
// backup of a deleted VM behind (a prefix scan alone does not see keys that
// are added concurrently).
func backupVerKey(vm string) []byte { return key(pBackupVer, vm) }

// ledgerKey: l/<account id>/<^at BE>/<^seq BE> → one LedgerEntry, or a page
// of an account's entries booked at one instant with contiguous seqs, under
// the highest (binary, ledger.go; JSON in stores written before pages).
//
// Both numbers are inverted, so a forward scan of l/<account id>/ is newest
// first, and entries booked at the same instant come out latest-booked first
// (a page's seqs are contiguous, so no other entry sorts inside one).
func ledgerKey(acct string, at time.Time, seq uint64) []byte {
	b := make([]byte, 0, len(pLedger)+len(acct)+1+8+1+8)
	b = append(append(append(b, pLedger...), acct...), '/')
	b = append(binary.BigEndian.AppendUint64(b, invTime(at)), '/')
	return binary.BigEndian.AppendUint64(b, ^seq)
}

func ledgerPrefix(acct string) []byte { return key(pLedger, acct, "/") }

// opKey: o/<op id> → Operation JSON.
func opKey(id string) []byte { return key(pOp, id) }

// opRunningKey: ou/<op id> → empty, present exactly while the operation's
// state is running; the start-up recovery scans ou/ instead of every
// operation ever run.
func opRunningKey(id string) []byte { return key(pOpRunning, id) }

// opFinishedKey: of/<finished_at BE>/<op id> → empty, present exactly while
// a finished operation is stored; oldest first (the time is not inverted),
// so the history pass deletes the operations that finished before a time
// by scanning from the start of of/ and stopping at the first newer one.
// An operation is indexed at its FinishedAt (its StartedAt if that is not
// set; one with neither is never indexed, so never pruned).
func opFinishedKey(at time.Time, id string) []byte {
	return key(pOpFinished, string(be64(sortTime(at))), "/", id)
}

// eventKey: e/<seq BE> → Event JSON. Oldest first; EventsAfter seeks to
// e/<seq+1>.
func eventKey(seq uint64) []byte { return key(pEvent, string(be64(seq))) }

// idKey: id/<id> → empty. Every id NewID ever handed out, kept forever so
// that no id names two objects in the life of a box, even after the first is
// reclaimed (backups, logs and events keep mentioning it).
func idKey(id string) []byte { return key(pID, id) }

// ipKey: ip/<address, 16 bytes BE> → owning VM id. IPv4 addresses are stored
// in their IPv4-mapped IPv6 form, so a prefix scan of ip/ comes out in
// numeric address order.
func ipKey(a netip.Addr) []byte {
	b := a.As16()
	return key(pIP, string(b[:]))
}

// tokenKey: k/<token id> → Token JSON (only the hash of its secret).
func tokenKey(id string) []byte { return key(pToken, id) }

// tokenAccountKey: ka/<account id>/<token id> → empty. One per token; the
// account's tokens are a prefix scan of ka/<account id>/.
func tokenAccountKey(acct, tk string) []byte { return key(pTokenAcct, acct, "/", tk) }

func tokenAccountPrefix(acct string) []byte { return key(pTokenAcct, acct, "/") }

// keySchema: meta/schema → schema version, uint32 BE.
// keyEventSeq: meta/seq/event → last event seq handed out, uint64 BE.
// keyLedgerSq: meta/seq/ledger → last ledger seq handed out, uint64 BE.
// keyFolded: meta/fold/ledger → the instant (sortTime, uint64 BE) before
// which every account's charges are folded (FoldCharges): the next fold
// starts there instead of reading the whole ledger again.
// keyOpIndex: meta/index/of → empty, written once every finished operation
// stored before the of/ index existed is in it (IndexFinishedOperations).
// keyFlush: meta/flush → empty, written and dropped at once by Maintain to
// make Badger write its memtable out; never there otherwise.

func be64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

// sortTime maps t to a uint64 that sorts in time order: its Unix
// nanoseconds with the sign bit flipped.
func sortTime(t time.Time) uint64 { return uint64(t.UnixNano()) ^ (1 << 63) }

// fromSortTime undoes sortTime.
func fromSortTime(u uint64) time.Time { return time.Unix(0, int64(u^(1<<63))) }

// fromInvTime undoes invTime.
func fromInvTime(u uint64) time.Time { return fromSortTime(^u) }

// invTime maps t to a uint64 that sorts in reverse time order: the sign bit
// of its Unix nanoseconds is flipped (so negative times sort before positive
// ones as unsigned numbers), then every bit is inverted.
func invTime(t time.Time) uint64 { return ^sortTime(t) }

// The instants a key can hold: Unix nanoseconds in an int64 (1677 to 2262).
var (
	minKeyTime = time.Unix(0, math.MinInt64)
	maxKeyTime = time.Unix(0, math.MaxInt64)
)

// keyTime checks that t can go into a key.
func keyTime(what string, t time.Time) error {
	if t.IsZero() {
		return invalid("%s is not set", what)
	}
	if t.Before(minKeyTime) || t.After(maxKeyTime) {
		return invalid("%s %s is outside the years 1678-2262 that the store can order", what, t.UTC().Format(time.RFC3339))
	}
	return nil
}
