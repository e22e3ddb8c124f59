// Package store keeps superjolt's state in Badger: accounts, tiers, images,
// VMs, backups, the ledger, operations, events, account tokens, every id ever
// handed out and the IP addresses in use.
//
// Everything happens in a transaction: Store.View for a consistent read,
// Store.Update for a change that commits whole, synced to disk, or not at all.
// Update runs its function again when the commit loses to a concurrent one,
// so read-modify-write (a balance, a counter) needs no lock of its own.
// A transaction holds about 1.2 MiB of writes at most: work over all 10,000
// VMs reads them with ForEachVM and writes them in several Updates, or, as
// a billing period does, walks rows inside Updates that each stop when
// Tx.Room says little is left and go on from where the last one stopped.
//
// # Keys
//
// Every key starts with a short type prefix. Ids and names in keys are
// validated first (they never hold '/'); numbers are fixed-width big-endian,
// so that a prefix scan comes out in the order its caller wants, and "^"
// marks a number stored inverted so that the scan comes out newest first.
//
//	meta/schema                        schema version (uint32 BE)
//	meta/seq/event                     last event seq handed out (uint64 BE)
//	meta/seq/ledger                    last ledger seq handed out (uint64 BE)
//	meta/fold/ledger                   charges before this instant are folded (BE)
//	meta/index/of                      (empty) every finished operation is in of/
//	meta/flush                         (empty) only during Maintain
//	a/<account>                        Account
//	t/<tier name>                      Tier
//	i/<image name>                     Image
//	v/<vm>                             VM
//	va/<account>/<vm>                  (empty) index: an account's VMs
//	vs/<state>/<vm>                    (empty) index: VMs in a state
//	vb/<account>/<vm>                  Billing (binary, ~40 bytes): what billing reads and writes of a VM
//	b/<vm>/<^taken_at BE>/<backup>     Backup; a VM's backups, newest first (all: by VM, one scan)
//	bi/<backup>                        <vm><^taken_at BE>: where the b/ key is
//	bv/<vm>                            (empty) written by PutBackup, read by DeleteVM
//	l/<account>/<^at BE>/<^seq BE>     LedgerEntry, or a page of them (binary); an account's, newest first
//	o/<op>                             Operation
//	ou/<op>                            (empty) index: operations still running
//	of/<finished_at BE>/<op>           (empty) index: finished operations, oldest first
//	e/<seq BE>                         Event, oldest first
//	id/<id>                            (empty) every id NewID handed out, forever
//	ip/<address as 16 bytes BE>        id of the VM holding the address
//	k/<token>                          Token (the SHA-256 of its secret, never the secret)
//	ka/<account>/<token>               (empty) index: an account's tokens
//
// Times in keys are Unix nanoseconds with the sign bit flipped (so they sort
// as unsigned numbers), then inverted. keys.go builds each key next to a
// comment with its layout.
//
// # Values
//
// Values are the model objects as JSON, the same encoding the API speaks. The
// objects already carry their JSON tags; a field added later reads back as its
// zero value from older rows and an older binary ignores fields it does not
// know, so most changes need no migration; and a value can be read with any
// Badger tool. State for 10,000 VMs and 100,000 backups is some 30 MiB of
// JSON, 7 MiB on disk once Badger compresses it, so a binary encoding would
// save little that matters; decoding JSON is most of the time of a scan
// (about 15 µs a VM on this project's test machines), which is fine at
// this size. Lists of many VMs or backups (VMRows, BackupRows) do not decode
// at all: they hand on each row as it is stored, with the few fields they
// order by read straight from the row's bytes (rows.go), and the API writes
// the rows to its answer as they are; 1,000 VMs then take about a millisecond
// of the store's time instead of 10. One value that is not JSON is a
// VM's billing row (vb/, Billing in billing.go): some 40 bytes of binary
// that a billing period reads and rewrites for every VM, so that a period
// neither decodes nor rewrites VM JSON; it holds the VM's BilledUntil, which
// the v/ row leaves out (so lists, which hand on v/ rows, do not show it;
// VM, VMs and ForEachVM fill it in). Ledger values (l/, ledger.go) are
// binary too, and a billing period's charges of one account are one value, a
// page, not a row each: a period of 10,000 VMs allocated 31 MB with a JSON
// row per charge and allocates 17 MB with pages (BenchmarkBillingPass).
// Readers expand pages, so the API and the CLI see one entry per charge; JSON
// ledger rows of older stores still read (a JSON value starts with '{'), so
// no migration is needed. Values are kept under 1 MiB, so they
// all live in the LSM tree and the value log holds next to nothing.
//
// # Disk space
//
// Badger gives nothing back by itself: a delete or an overwrite leaves the
// old row and a tombstone in the LSM tree's tables until a compaction into
// the last level drops them, and Badger compacts only when a level outgrows
// its target, which a store of a few MiB rarely does. The appliance deletes
// as much as it writes (pruned events and operations, folded charges), so
// its daily history pass calls Maintain: the memtable written out (writes
// wait for that, some 100-200 ms; reads go on), a compaction of the whole
// tree into one level (Flatten), then the value log's garbage collection
// until it finds nothing to rewrite (cheap, since values stay in the LSM
// tree; it is there so that a value ever written to the log does not stay
// forever). Disk use then follows live data.
//
// # Who deletes what
//
// The store keeps its own indexes in step (PutVM, DeleteVM, PutBackup,
// DeleteBackup, PutOperation) but never deletes one object because another
// went: the appliance records a backup only for a stored VM (PutBackup
// refuses otherwise), deletes a VM's backups (snapshot, then DeleteBackup),
// then the VM (DeleteVM, which refuses while backups remain, even ones put
// by a concurrent transaction, and releases the IPs still claimed for it), and an account only once it has no VM left
// (DeleteAccount refuses otherwise). Ledger entries stay, as history, though
// the appliance folds old charges into one entry per VM and day
// (FoldCharges, which keeps every sum); events and finished operations stay
// until the appliance prunes them (PruneEventsBefore, PruneOperations,
// after the history window: appliance/history.go); ids stay taken forever.
//
// # Memory
//
// Badger is sized for a small box (see badgerOptions): a process that opens
// 10,000 VMs with 100,000 backups and reads all of them peaks at about 45 MiB
// resident and holds under 30 MiB after, where Badger's defaults peak at
// 135 MiB (BenchmarkOpenRSS, TestOpenRSSBounded). A compaction of the whole
// store at once peaks near 115 MiB (BenchmarkCompactRSS), nearly all of it
// garbage waiting for the collector: with a soft memory limit on the process
// (GOMEMLIMIT=48MiB, or debug.SetMemoryLimit in the daemon) the same
// compaction peaks under 60 MiB. The limit is the daemon's to set, not a
// library's.
//
// # Schema
//
// Open writes SchemaVersion into an empty store and refuses (ErrSchema) a
// store written by a newer superjolt, or a directory that holds data but no
// schema key.
package store
