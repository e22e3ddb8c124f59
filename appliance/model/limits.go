package model

import "time"

// Limits shared by the core, the API and the CLI: each is defined here once,
// and every layer that checks it uses this value.
const (
	// MaxListLimit bounds how many objects (events, ledger entries,
	// operations) one list call returns.
	MaxListLimit = 10_000
	// MaxExecTimeout bounds the timeout of one `vm exec` (0 means the
	// agent's default). The guest agent has a cap of its own
	// (guest.MaxExecTimeout), at least this one.
	MaxExecTimeout = 10 * time.Minute
	// MaxClockAdvance bounds one move of a manual clock.
	MaxClockAdvance = 366 * 24 * time.Hour
	// MaxPorts and MaxDomains bound a VM's ports and domains.
	MaxPorts   = 64
	MaxDomains = 32
	// DefaultHistoryWindow is how long events, finished operations and
	// the ledger's charges one by one are kept (superjoltd
	// --history-window); MinHistoryWindow and MaxHistoryWindow bound it.
	// appliance/history.go has the rule.
	DefaultHistoryWindow = 30 * 24 * time.Hour
	MinHistoryWindow     = 24 * time.Hour
	MaxHistoryWindow     = 100 * 365 * 24 * time.Hour
)
