package model

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// DefaultBackupRetention is how many scheduled backups an account keeps per VM
// unless its entitlements say otherwise.
const DefaultBackupRetention = 5

// MaxBackupRetention bounds the retention entitlement.
const MaxBackupRetention = 365

// DefaultVMLimit is how many live VMs an account may hold unless its
// entitlements say otherwise.
const DefaultVMLimit = 10

// Account is a paying party: a family member, a customer, a tenant.
type Account struct {
	ID           string       `json:"id"`
	Name         string       `json:"name"`
	Balance      Micro        `json:"balance"` // micro-credits; never below zero (no debt), always the sum of its ledger
	Entitlements Entitlements `json:"entitlements"`
	CreatedAt    time.Time    `json:"created_at"`
	// SSHKeys are the account's default OpenSSH public keys (normalized,
	// see ParseSSHKeys): every VM it creates gets them (see MaxSSHKeys).
	SSHKeys []string `json:"ssh_keys,omitempty"`
}

// Entitlements are what an account is allowed.
type Entitlements struct {
	BackupRetention int `json:"backup_retention"` // scheduled backups kept per VM
	VMLimit         int `json:"vm_limit"`         // live (running or stopped) VMs at once
}

// DefaultEntitlements are a new account's entitlements.
func DefaultEntitlements() Entitlements {
	return Entitlements{BackupRetention: DefaultBackupRetention, VMLimit: DefaultVMLimit}
}

// Validate checks the entitlements' bounds.
func (e Entitlements) Validate() error {
	if e.BackupRetention < 1 || e.BackupRetention > MaxBackupRetention {
		return invalidf("backup retention %d is out of range: keep between 1 and %d scheduled backups", e.BackupRetention, MaxBackupRetention)
	}
	if e.VMLimit < 0 || e.VMLimit > 10_000 {
		return invalidf("VM limit %d is out of range: 0 to 10000", e.VMLimit)
	}
	return nil
}

// Tier is a size of VM and its price.
type Tier struct {
	Name        string `json:"name"`
	VCPUs       int    `json:"vcpus"`
	MemoryMiB   int    `json:"memory_mib"`
	DiskGiB     int    `json:"disk_gib"`
	RatePerHour Micro  `json:"rate_per_hour"` // micro-credits per hour
}

// DefaultTiers exist from the first start.
func DefaultTiers() []Tier {
	return []Tier{
		{Name: "nano", VCPUs: 1, MemoryMiB: 256, DiskGiB: 2, RatePerHour: 5_000},
		{Name: "small", VCPUs: 1, MemoryMiB: 512, DiskGiB: 10, RatePerHour: 10_000},
		{Name: "medium", VCPUs: 2, MemoryMiB: 2048, DiskGiB: 40, RatePerHour: 40_000},
		{Name: "large", VCPUs: 4, MemoryMiB: 8192, DiskGiB: 80, RatePerHour: 160_000},
	}
}

// Image is a bootable image a VM is made from: a read-only subvolume holding
// rootfs.img, vmlinuz and initrd. OS, Kernel and Source describe an imported
// or built image (the built-in one leaves them empty).
type Image struct {
	Name      string    `json:"name"`
	Builtin   bool      `json:"builtin"`
	SizeBytes int64     `json:"size_bytes"`
	CreatedAt time.Time `json:"created_at"`
	OS        string    `json:"os,omitempty"`     // what its os-release calls it
	Kernel    string    `json:"kernel,omitempty"` // the release it boots
	Source    string    `json:"source,omitempty"` // the file or recipe it was made from
}

// StopReason says why a VM is stopped. The set is closed; "" is a VM
// stopped before reasons were recorded.
type StopReason string

const (
	// StopOperator: stopped with stop_vm (or the stop was finished after
	// a restart of the daemon).
	StopOperator StopReason = "operator"
	// StopGuestPowerOff: the guest powered itself off (poweroff inside).
	StopGuestPowerOff StopReason = "guest_poweroff"
	// StopExited: its VM process ended without anyone asking (a crash, a
	// kill, a reboot whose agent never came back).
	StopExited StopReason = "exited"
	// StopBootFailed: a boot (start, restore, resume, the daemon's start)
	// did not bring its agent up.
	StopBootFailed StopReason = "boot_failed"
	// StopCrashLoop: its VM process kept ending unasked, and was booted
	// again each time, until the appliance gave up (see CrashLimit).
	StopCrashLoop StopReason = "crash_loop"
	// StopHost: the host shut it down (the machine was powered off, or its
	// unit stopped); it is still wanted running and boots with the daemon.
	StopHost StopReason = "host"
)

// Describe says why in words, for tables and messages; at is when it
// stopped, "" where the time is shown already.
func (r StopReason) Describe(at string) string {
	switch r {
	case StopOperator:
		return "stopped by the operator"
	case StopGuestPowerOff:
		return "powered off from inside"
	case StopExited:
		if at == "" {
			return "exited unexpectedly"
		}
		return "exited unexpectedly at " + at
	case StopBootFailed:
		return "did not boot"
	case StopCrashLoop:
		return "kept crashing; left stopped"
	case StopHost:
		return "shut down with the host"
	case "":
		return "reason not recorded"
	}
	return string(r)
}

// DropStale clears what no longer describes the VM: the time and reason
// of its last stop once it runs again. (They stay through the graveyard,
// so that a VM resumed stopped still says why it stopped; destroyed and
// archived times stay as the record of the last time. Front ends show
// each only in its state.)
func (vm *VM) DropStale() {
	if vm.State == StateRunning || vm.State == StateCreating {
		vm.StoppedAt, vm.StopReason = time.Time{}, ""
	}
}

// VMState is where a VM is in its lifecycle. The set is closed.
type VMState string

const (
	// StateCreating: the VM's disk and row exist, its first boot is under way.
	StateCreating VMState = "creating"
	StateRunning  VMState = "running"
	StateStopped  VMState = "stopped"
	// StateGraveyard: destroyed; kept until ReclaimAt, then reclaimed.
	StateGraveyard VMState = "graveyard"
	// StateArchived: its account ran out of money; kept until ReclaimAt.
	StateArchived VMState = "archived"
)

var vmStates = []VMState{StateCreating, StateRunning, StateStopped, StateGraveyard, StateArchived}

// ParseVMState parses a state name as users type it.
func ParseVMState(s string) (VMState, error) {
	if slices.Contains(vmStates, VMState(s)) {
		return VMState(s), nil
	}
	return "", invalidf("unknown VM state %q: use one of %v", clip(s), vmStates)
}

// Bills reports whether a VM in this state accrues charges.
func (s VMState) Bills() bool { return s == StateRunning || s == StateStopped || s == StateCreating }

// Live reports whether the VM holds an IP and a RAM reservation.
func (s VMState) Live() bool { return s == StateRunning || s == StateStopped || s == StateCreating }

// DefaultDomainPort is the VM's port its domains are proxied to unless
// the domain was attached with another.
const DefaultDomainPort = 80

// DomainPort returns the VM's port that domain is proxied to.
func (vm *VM) DomainPort(domain string) uint16 {
	if p := vm.DomainPorts[domain]; p != 0 {
		return p
	}
	return DefaultDomainPort
}

// DomainsShown writes the VM's domains, each with the VM's port it goes
// to when that is not DefaultDomainPort ("api.example.com → :8080").
func (vm *VM) DomainsShown() []string {
	out := make([]string, len(vm.Domains))
	for i, d := range vm.Domains {
		out[i] = d
		if p := vm.DomainPort(d); p != DefaultDomainPort {
			out[i] = fmt.Sprintf("%s → :%d", d, p)
		}
	}
	return out
}

// Port is a port forward: connections to host port Number (on the host's
// addresses) go to port GuestPort of the VM. A host port and protocol is
// held by at most one VM, for as long as that VM exists, so that a VM back
// from the graveyard or the archive gets its forwards back.
type Port struct {
	Proto  string `json:"proto"`  // "tcp" or "udp"
	Number uint16 `json:"number"` // the host's port
	// GuestPort is the VM's port; 0 means the same as Number.
	GuestPort uint16 `json:"guest_port,omitempty"`
}

// Guest returns the VM's port of the forward.
func (p Port) Guest() uint16 {
	if p.GuestPort == 0 {
		return p.Number
	}
	return p.GuestPort
}

// Host returns the forward's identity, its host port and protocol.
func (p Port) Host() Port { return Port{Proto: p.Proto, Number: p.Number} }

// String writes the forward as it is typed: "8080/tcp", or "8080:80/tcp"
// when the VM's port differs from the host's.
func (p Port) String() string {
	if p.Guest() != p.Number {
		return fmt.Sprintf("%d:%d/%s", p.Number, p.Guest(), p.Proto)
	}
	return fmt.Sprintf("%d/%s", p.Number, p.Proto)
}

// ValidatePort checks a port.
func ValidatePort(p Port) error {
	if p.Proto != "tcp" && p.Proto != "udp" {
		return invalidf("port protocol %q: use tcp or udp", clip(p.Proto))
	}
	if p.Number == 0 {
		return invalidf("port 0 is not a port: use 1-65535")
	}
	return nil
}

// VM is a microVM and everything that makes it the same VM across stop, start,
// restore and resume.
type VM struct {
	ID        string     `json:"id"`
	AccountID string     `json:"account_id"`
	Name      string     `json:"name"`
	Tier      string     `json:"tier"`
	Image     string     `json:"image"`
	State     VMState    `json:"state"`
	IP        netip.Addr `json:"ip,omitzero"` // held while live; remembered (LastIP) while not
	LastIP    netip.Addr `json:"last_ip,omitzero"`
	Ports     []Port     `json:"ports"`
	Domains   []string   `json:"domains"`
	// DomainPorts holds the VM's port a domain is proxied to, for the
	// domains not proxied to DefaultDomainPort (see DomainPort).
	DomainPorts map[string]uint16 `json:"domain_ports,omitempty"`
	BootID      string            `json:"boot_id,omitempty"` // of the running guest, as its agent reported
	// SSHKeys are the OpenSSH public keys written into root's
	// authorized_keys in its disk at create (see MaxSSHKeys): a record of
	// what was given then, not of what the guest holds now.
	SSHKeys []string `json:"ssh_keys,omitempty"`

	CreatedAt time.Time `json:"created_at"`
	// StoppedAt and StopReason say when and why the VM last stopped;
	// cleared when it runs again (see VM.DropStale).
	StoppedAt   time.Time  `json:"stopped_at,omitzero"`
	StopReason  StopReason `json:"stop_reason,omitempty"`
	DestroyedAt time.Time  `json:"destroyed_at,omitzero"`
	ArchivedAt  time.Time  `json:"archived_at,omitzero"`
	ReclaimAt   time.Time  `json:"reclaim_at,omitzero"` // set in graveyard and archived

	// RecoveryDeadline is the ReclaimAt its latest archival gave the VM,
	// kept across resumes: a VM archived or destroyed again before it has
	// been back for a whole recovery window gets this deadline back instead
	// of a new one, so resuming never extends it. Zero when the VM was
	// never archived, or was last retired outside such an episode.
	RecoveryDeadline time.Time `json:"recovery_deadline,omitzero"`
	// ResumedAt is when the VM was last brought back by a resume.
	ResumedAt time.Time `json:"resumed_at,omitzero"`

	// WantRunning is the state to return to on resume or daemon start.
	WantRunning bool `json:"want_running"`
	// BilledUntil is the end of the last period booked to the ledger. The
	// store keeps it in the VM's billing row, not in its JSON, so lists
	// (which hand on stored rows) leave it out; `vm show` has it.
	BilledUntil time.Time `json:"billed_until,omitzero"`
	// NextBackupAt is when the scheduler takes this VM's next daily backup.
	NextBackupAt time.Time `json:"next_backup_at,omitzero"`
}

// BackupKind says why a backup exists and who may delete it.
type BackupKind string

const (
	// Scheduled: daily, rolled by the account's retention; not deletable by hand.
	Scheduled BackupKind = "scheduled"
	// OnDemand: taken by create_backup; kept until delete_backup.
	OnDemand BackupKind = "on_demand"
)

// Consistency says how consistent a backup's disk image is.
type Consistency string

const (
	// Frozen: the guest agent flushed and froze every writable filesystem.
	Frozen Consistency = "frozen"
	// Crash: the agent could not be reached: as if the power was cut.
	Crash Consistency = "crash"
	// Offline: the VM was not running.
	Offline Consistency = "offline"
)

// Backup is a read-only snapshot of a VM's disk.
type Backup struct {
	ID          string      `json:"id"`
	VMID        string      `json:"vm_id"`
	Kind        BackupKind  `json:"kind"`
	TakenAt     time.Time   `json:"taken_at"`
	SizeBytes   int64       `json:"size_bytes"` // bytes that deleting it would free (btrfs exclusive)
	Consistency Consistency `json:"consistency"`
	// FrozenMS is how long the guest's filesystems were frozen for it, as
	// the host measured (from the agent's answer to the freeze to its
	// answer to the thaw); 0 unless Consistency is Frozen.
	FrozenMS int64 `json:"frozen_ms,omitempty"`
}

// EntryKind is the kind of a ledger entry.
type EntryKind string

const (
	Charge EntryKind = "charge"
	TopUp  EntryKind = "topup"
	// Adjustment is an operator's correction (of a mistaken top-up, a
	// goodwill credit), positive or negative, with a reason.
	Adjustment EntryKind = "adjustment"
)

// MaxReasonLen bounds an adjustment's reason, in bytes.
const MaxReasonLen = 200

// LedgerEntry is one movement of an account's balance. Charges are negative.
// An account's balance is always the sum of the Amounts of its entries.
type LedgerEntry struct {
	AccountID    string    `json:"account_id"`
	Seq          uint64    `json:"seq"`
	At           time.Time `json:"at"`
	Amount       Micro     `json:"amount"`
	Kind         EntryKind `json:"kind"`
	VMID         string    `json:"vm_id,omitempty"`
	PeriodStart  time.Time `json:"period_start,omitzero"`
	PeriodEnd    time.Time `json:"period_end,omitzero"`
	BalanceAfter Micro     `json:"balance_after"`
	// Forgiven, on a charge, is what the period cost beyond the balance
	// left: not charged (there is no debt) and not part of the balance.
	// -Amount + Forgiven is the period's full price.
	Forgiven Micro `json:"forgiven,omitempty"`
	// Reason says why an adjustment was made.
	Reason string `json:"reason,omitempty"`
	// Charges, on a charge, is how many charges of one VM in one UTC day
	// the entry folds (0: it is one charge as booked). The history pass
	// folds charges older than the history window; Amount and Forgiven are
	// then the exact sums, PeriodStart the earliest, PeriodEnd the latest,
	// and At, Seq and BalanceAfter those of the latest charge folded.
	Charges int `json:"charges,omitempty"`
}

// LedgerTotals add up an account's ledger over its whole life. Sum is what
// the balance must be; folding old charges (the history pass) changes none
// of them but Entries.
type LedgerTotals struct {
	// Entries is how many entries the ledger holds (a folded day counts
	// once); Charges how many charges they stand for.
	Entries int `json:"entries"`
	Charges int `json:"charges"`
	// ToppedUp and Adjusted are the sums of top-ups and of adjustments,
	// Charged what charges took (positive), Forgiven what they did not
	// take because the balance ran out.
	ToppedUp Micro `json:"topped_up"`
	Adjusted Micro `json:"adjusted"`
	Charged  Micro `json:"charged"`
	Forgiven Micro `json:"forgiven"`
	// Sum is the sum of every entry's amount.
	Sum Micro `json:"sum"`
}

// Add counts e in t.
func (t *LedgerTotals) Add(e LedgerEntry) {
	t.Entries++
	t.Sum += e.Amount
	switch e.Kind {
	case TopUp:
		t.ToppedUp += e.Amount
	case Adjustment:
		t.Adjusted += e.Amount
	case Charge:
		t.Charged -= e.Amount
		t.Forgiven += e.Forgiven
		t.Charges += max(e.Charges, 1)
	}
}

// OpKind is the kind of a long operation.
type OpKind string

const (
	OpCreate  OpKind = "create"
	OpBackup  OpKind = "backup"
	OpRestore OpKind = "restore"
	OpDestroy OpKind = "destroy"
	OpReclaim OpKind = "reclaim"
	OpArchive OpKind = "archive"
	OpResume  OpKind = "resume"
	OpStart   OpKind = "start"
	OpStop    OpKind = "stop"
	// OpDeleteBackup deletes an on-demand backup: its row, then its snapshot.
	OpDeleteBackup OpKind = "delete_backup"
)

// OpState is where an operation is.
type OpState string

const (
	OpRunning    OpState = "running"
	OpDone       OpState = "done"
	OpFailed     OpState = "failed"      // stopped with an error; its effects were rolled back
	OpRolledBack OpState = "rolled_back" // found unfinished at start and undone
	OpCancelled  OpState = "cancelled"   // stopped on request before its point of no return; nothing changed
)

// Finished reports whether the operation is over.
func (s OpState) Finished() bool { return s != OpRunning }

// Err returns the error an operation ended with: nil unless it failed,
// otherwise an error of the category it recorded (errors.Is works) whose
// message is the one it recorded.
func (o Operation) Err() error {
	switch o.State {
	case OpFailed:
		return &CodedError{Code: o.ErrorCode, Message: o.Error}
	case OpCancelled:
		return &CodedError{Code: "conflict", Message: fmt.Sprintf("%s was cancelled before it changed anything", o.ID)}
	case OpRolledBack:
		return &CodedError{Code: "conflict", Message: fmt.Sprintf("%s was left unfinished by a restart and rolled back; nothing changed", o.ID)}
	}
	return nil
}

// Operation is a long task with progress, a result, and the intent record that
// lets a daemon that crashed half-way finish or roll it back at the next start.
type Operation struct {
	ID         string    `json:"id"`
	Kind       OpKind    `json:"kind"`
	VMID       string    `json:"vm_id,omitempty"`
	BackupID   string    `json:"backup_id,omitempty"`
	State      OpState   `json:"state"`
	Step       string    `json:"step"` // the step under way, or the last one done
	Progress   int       `json:"progress"`
	Error      string    `json:"error,omitempty"`
	ErrorCode  string    `json:"error_code,omitempty"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
	// Intent is the operation's own record of what it set out to do and what
	// it already did, opaque to everyone but the code that runs it.
	Intent json.RawMessage `json:"intent,omitempty"`
}

// Event is something that happened, for `superjolt events` and the TUI.
type Event struct {
	Seq     uint64    `json:"seq"`
	At      time.Time `json:"at"`
	Type    string    `json:"type"`             // e.g. "vm.created", "backup.taken"
	Object  string    `json:"object,omitempty"` // the id it is about
	Account string    `json:"account,omitempty"`
	Message string    `json:"message"`
}
