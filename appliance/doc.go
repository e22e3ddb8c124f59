// Package appliance is superjolt's domain core: the one place where the rules
// of DESIGN.md live. An [Appliance] ties together the store (what exists),
// the storage pool (VM disks, images and backups as Btrfs subvolumes) and a
// [Hypervisor] (VM processes and their guest agents), and offers the verbs
// every front end calls: accounts, their tokens and top-ups, VM create / stop / start /
// destroy / resume / exec, ports and domains, backups and restore, the
// ledger, operations and events.
//
// # Where each rule lives
//
//	ops.go        operations: accepted, then the daemon's; follow, cancel, list
//	recover.go    the start: finish or roll back what a crash left, stop on doubt; take over running VMs
//	orphans.go    subvolumes no row knows: set aside, deleted after OrphanGrace
//	vms.go        create, stop, start, exec, ports and domains
//	retire.go     graveyard and archive (one retire), resume, the reaper, reclaim
//	backups.go    backups: freeze, snapshot, thaw; list, delete, resolve a date
//	retention.go  which scheduled backups a VM keeps (a pure function)
//	restore.go    restore in place: stop, reflink, boot, new boot id
//	background.go the daily schedule, the background pass, the manual clock
//	dailypass.go  the scheduled backups of the VMs due, in batches that share commits
//	billing.go    charges (no debt), runway to resume, low-balance warnings, archiving at zero
//	accounts.go   accounts, top-ups, adjustments, the ledger, accounts' SSH keys
//	tokens.go     account tokens: create (the secret shown once, its hash kept), list, revoke, authenticate
//	images.go     images: import, build (made by an ImageMaker), remove while VMs use them
//	addresses.go  IP addresses from the subnet (IPAM)
//	network.go    the network: bridge at start, a TAP per VM on the host, the firewall rebuilt from the store
//	machines.go   VM processes: boot, attach, halt (also for the host), supervise (a reboot inside is a new boot id)
//	crashes.go    the crash policy: an unasked exit boots again after a back-off, a crash loop stops
//	logs.go       a VM's log: QEMU's output and its console (its unit's journal under systemd)
//	pool.go       the pool's space: status, and refusing work when it is full
//	usage.go      memory and CPU of the VMs, from their units' cgroups or sampled from /proc
//	hypervisor.go the small interfaces to the pool, the VMM and the agent
//	qemu.go       the QEMU Hypervisor (package vmm underneath)
//	testhook.go   crash and hold points for tests of the real daemon
//
// Each kind of operation's recovery sits beside its forward path.
//
// # Lifecycle
//
//	create -> running <-> stopped
//	destroy: age >= 1h -> graveyard (24 h), age < 1h -> reclaimed at once
//	balance <= 0 -> every VM of the account archived (24 h, not extended by resuming)
//	resume: graveyard -> its previous state; archived -> running (an hour of runway)
//	after 24 h in the graveyard or archived: reclaimed (nothing left)
//
// # Background work
//
// [Appliance.Run] drives three loops on the injected clock: billing (every
// [BillingPeriod] each live VM is charged from its BilledUntil to now; an
// account whose balance reaches zero has every VM archived), the scheduler
// (one scheduled backup per live VM per day at an offset derived from the
// VM's id, so that backups spread across the day; a missed day is caught up
// once, not once per missed day; retention pruned after each; the VMs due
// at one pass are backed up in batches whose store transactions and btrfs
// commits are shared, see dailypass.go), and the
// reaper (graveyard and archived VMs whose ReclaimAt has passed are
// reclaimed); once a day, the history pass (history.go) prunes events and
// finished operations older than the history window, folds older charges
// into one ledger entry per VM and day with the same sums, and has the
// store give the freed disk space back. With a [clock.Manual], [Appliance.AdvanceClock] moves time and
// runs the same work synchronously, step by step, so tests and demos are
// deterministic.
//
// # Operations and crash safety
//
// Everything that touches disks or VM processes (create, backup, restore,
// destroy, reclaim, archive, resume, start, stop, delete_backup) is an
// [model.Operation] recorded in the store before its first side effect,
// with an intent record of the steps done. Once recorded, an operation
// belongs to the daemon: it runs in its own goroutine on the appliance's
// life context with its own deadline ([OperationTimeout]), whatever
// happens to the request that asked for it (see ops.go). Each verb exists
// twice: SubmitX checks the request, records the operation and returns it
// at once (what the API answers); X does the same and waits for the end
// (what tests, the scheduler and the reaper use). A caller that stops
// waiting leaves the operation running; [Appliance.WaitOperation] follows
// it step by step, and [Appliance.CancelOperation] stops one where that is
// safe (a backup before its snapshot). Each operation tells its life on the
// event stream, in the transactions that record it: op.started, an
// op.step per step, and its end (op.done, op.failed, op.cancelled; or
// op.recovered), every one with the operation's id as Object and its VM's
// account. Operations on one VM are serialised
// by a per-VM lock; a second one is refused with [model.ErrConflict] naming
// the one running. [New] finds operations a crashed daemon left unfinished
// and finishes or rolls back each (recover.go): no orphan subvolume, no
// half-restored disk, no lost backup. VM processes outlive the daemon, and
// New takes the running ones over (same process, same boot id), except the
// one of a VM whose operation was cut short: its guest may be frozen or its
// disk about to change, so it is ended first and booted again after.
//
// # Money
//
// Money is integer micro-credits. A VM's charges over a billed span (from
// creation or resume until it stops billing) add up to exactly
// floor(rate × whole seconds / 3600): periods advance BilledUntil only by
// whole "granules" of seconds whose price is an integer number of
// micro-credits, and the remainder is charged, rounded down once, when the
// span ends. There is no debt: a charge takes at most the balance and the
// rest is forgiven, recorded on the charge, so the balance never goes below
// zero and always equals the sum of the ledger. A resume needs an hour of
// runway; corrections are adjustments with a reason (accounts.go). See
// billing.go; the archive's recovery window, which a resume does not
// extend, is in retire.go.
//
// # Errors
//
// Every error returned by an exported method wraps exactly one model
// category (ErrNotFound, ErrInvalid, ErrConflict, ErrInsufficientFunds,
// ErrUnavailable; ErrUnauthenticated from Authenticate) and says what to do
// next, or none: an internal error (a bug, a broken disk), never disguised
// as "unavailable", which is kept for a guest agent or VM process that
// cannot be reached.
package appliance
