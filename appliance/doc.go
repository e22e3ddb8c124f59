// Package appliance is superjolt's domain core: the one place where the rules
// of DESIGN.md live. An [Appliance] ties together the store (what exists),
// the storage pool (VM disks, images and backups as Btrfs subvolumes) and a
// [Hypervisor] (VM processes and their guest agents), and offers the verbs
// every front end calls: accounts and top-ups, VM create / stop / start /
// destroy / resume / exec, ports and domains, backups and restore, the
// ledger, operations and events.
//
// # Lifecycle
//
//	create -> running <-> stopped
//	destroy: age >= 1h -> graveyard (24 h), age < 1h -> reclaimed at once
//	balance <= 0 -> every VM of the account archived (24 h)
//	resume: graveyard -> its previous state; archived -> running (balance > 0)
//	after 24 h in the graveyard or archived: reclaimed (nothing left)
//
// # Background work
//
// [Appliance.Run] drives three loops on the injected clock: billing (every
// [BillingPeriod] each live VM is charged from its BilledUntil to now; an
// account whose balance reaches zero has every VM archived), the scheduler
// (one scheduled backup per live VM per day at an offset derived from the
// VM's id, so that backups spread across the day; a missed day is caught up
// once, not once per missed day; retention pruned after each), and the
// reaper (graveyard and archived VMs whose ReclaimAt has passed are
// reclaimed). With a [clock.Manual], [Appliance.AdvanceClock] moves time and
// runs the same work synchronously, step by step, so tests and demos are
// deterministic.
//
// # Operations and crash safety
//
// Everything that touches disks or VM processes (create, backup, restore,
// destroy, reclaim, archive, resume, start, stop) is an [model.Operation]
// recorded in the store before its first side effect, with an intent record
// of the steps done. Operations on one VM are serialised by a per-VM lock;
// a second one is refused with [model.ErrConflict] naming the one running.
// [New] finds operations a crashed daemon left unfinished and finishes or
// rolls back each: no orphan subvolume, no half-restored disk, no lost
// backup; a thaw is attempted for a backup that froze a guest.
//
// # Money
//
// Money is integer micro-credits. A VM's charges over a billed span (from
// creation or resume until it stops billing) add up to exactly
// floor(rate × whole seconds / 3600): periods advance BilledUntil only by
// whole "granules" of seconds whose price is an integer number of
// micro-credits, and the remainder is charged, rounded down once, when the
// span ends. See billing.go.
//
// # Errors
//
// Every error returned by an exported method wraps exactly one model
// category (ErrNotFound, ErrInvalid, ErrConflict, ErrInsufficientFunds,
// ErrUnavailable) and says what to do next.
package appliance
