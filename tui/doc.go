// Package tui is superjolt's operator console (superjolt tui), in Bubble
// Tea, over superjoltd's local API through the same client as the CLI
// (appliance/api) and nothing else.
//
// Where things are:
//
//	model.go       the root Model: layout, the keys every view shares, the
//	               connection (unreachable, reconnect), the prompt (/ and :)
//	data.go        the console's copy of the daemon's state and its change
//	               counters (one per kind of data)
//	io.go          every request to superjoltd, as tea.Cmds: the snapshot,
//	               the one event subscription, the reads events ask for,
//	               the polls of what no event carries (usage, balances)
//	list.go        what the table views share: filter, sort, cursor, and a
//	               row order rebuilt only when what it depends on changed
//	vms.go vm.go accounts.go grave.go events.go ops.go
//	               the views: VMs, a VM's page, accounts (burn, runway),
//	               the graveyard and archive, events, operations
//	actions.go     what each action key does, and the checks made before
//	               anything is sent
//	dialogs.go     forms, the typed confirmation, the picker
//	format.go      how times, sizes and steps are written
//	keymap/        the one key map; help and footer are generated from it
//	styles/        every style, in one Styles value
//	components/table/
//	               the table that builds only its visible rows
//
// Live data comes from superjoltd's event stream: an event makes the
// console read again the object it names (and an operation's VM with the
// operation). The whole state is read only at the start and after the
// stream broke. Tests drive the console with teatest over a fixture served
// by the real api/server and compare screens with testdata/*.golden
// (go test ./tui -update rewrites them).
package tui
