package tui

import (
	"context"
	"errors"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// Everything the console says to superjoltd happens here, in tea.Cmds: the
// snapshot, the one event subscription, the fetches of the objects events
// name, the polls of what the stream does not carry, and the actions.

// Intervals of what the event stream does not carry.
const (
	// usageEvery is how often the VMs' memory and CPU use is read.
	usageEvery = 5 * time.Second
	// accountsEvery is how often balances are read: charges are booked in
	// the ledger every few minutes without an event each.
	accountsEvery = 30 * time.Second
	// snapshotTimeout bounds a full read.
	snapshotTimeout = 20 * time.Second
	// reconnectMin and reconnectMax bound the wait between attempts to
	// reach superjoltd again.
	reconnectMin = time.Second
	reconnectMax = 5 * time.Second
	// batchMax bounds the events applied in one update.
	batchMax = 500
)

type (
	snapshotMsg struct {
		snap  snapshot
		usage []model.VMUsage
		err   error
	}
	// eventsMsg carries a batch of events from stream s.
	eventsMsg struct {
		s      *stream
		events []model.Event
	}
	// streamDownMsg says stream s ended.
	streamDownMsg struct {
		s   *stream
		err error
	}
	reconnectMsg struct{}
	// fetchedMsg carries the objects a batch of events named, as they are
	// now; gone lists the ids that no longer exist.
	fetchedMsg struct {
		vms      []model.VM
		backups  []model.Backup
		accounts []model.Account
		ops      []model.Operation
		status   *api.Status
		goneVMs  []string
		goneBks  []string
		err      error
	}
	usageMsg struct {
		usage []model.VMUsage
		err   error
	}
	accountsMsg struct {
		accounts []model.Account
		status   *api.Status
		err      error
	}
	usageTickMsg    struct{}
	accountsTickMsg struct{}
	clockTickMsg    time.Time
)

// loadSnapshot reads everything. Events first: the stream then resumes
// after the last of them, so nothing between the reads is missed (an event
// applied twice only fetches its object again).
func (m *Model) loadSnapshot() tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, snapshotTimeout)
		defer cancel()
		var s snapshot
		var err error
		if s.events, err = c.LastEvents(ctx, 200); err != nil {
			return snapshotMsg{err: err}
		}
		if s.status, err = c.Status(ctx); err != nil {
			return snapshotMsg{err: err}
		}
		if s.tiers, err = c.Tiers(ctx); err != nil {
			return snapshotMsg{err: err}
		}
		if s.images, err = c.Images(ctx); err != nil {
			return snapshotMsg{err: err}
		}
		if s.accounts, err = c.Accounts(ctx); err != nil {
			return snapshotMsg{err: err}
		}
		if s.vms, err = c.VMs(ctx, api.VMFilter{}); err != nil {
			return snapshotMsg{err: err}
		}
		if s.backups, err = c.ListBackups(ctx, api.BackupFilter{}); err != nil {
			return snapshotMsg{err: err}
		}
		if s.ops, err = c.Operations(ctx, api.OpFilter{Limit: 200}); err != nil {
			return snapshotMsg{err: err}
		}
		running, err := c.Operations(ctx, api.OpFilter{Running: true})
		if err != nil {
			return snapshotMsg{err: err}
		}
		s.ops = append(s.ops, running...)
		msg := snapshotMsg{snap: s}
		if u, err := c.VMUsage(ctx); err == nil {
			msg.usage = u
		}
		return msg
	})
}

// io counts a read or an action under way until Update has handled its
// answer (see Settled).
func (m *Model) io(fn tea.Cmd) tea.Cmd {
	m.inflight.Add(1)
	return fn
}

// Settled reports whether no read or action is under way: what the
// console shows is what it knows. Safe from any goroutine.
func (m *Model) Settled() bool { return m.inflight.Load() == 0 }

// stream is the one subscription to superjoltd's events.
type stream struct {
	ch     chan model.Event
	err    error // set before ch is closed
	cancel context.CancelFunc
}

// subscribe follows the events after seq until the stream breaks or the
// console quits.
func (m *Model) subscribe(after uint64) tea.Cmd {
	if m.stream != nil {
		m.stream.cancel()
	}
	ctx, cancel := context.WithCancel(m.ctx)
	s := &stream{ch: make(chan model.Event, 4*batchMax), cancel: cancel}
	m.stream = s
	c := m.client
	go func() {
		err := c.FollowEvents(ctx, after, func(e model.Event) error {
			select {
			case s.ch <- e:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		s.err = err
		close(s.ch)
	}()
	return s.next
}

// next waits for the next events and returns them with whatever else is
// already queued (up to batchMax), so a burst costs one update.
func (s *stream) next() tea.Msg {
	e, ok := <-s.ch
	if !ok {
		return streamDownMsg{s: s, err: s.err}
	}
	batch := []model.Event{e}
	for len(batch) < batchMax {
		select {
		case e, ok := <-s.ch:
			if !ok {
				return eventsMsg{s: s, events: batch}
			}
			batch = append(batch, e)
		default:
			return eventsMsg{s: s, events: batch}
		}
	}
	return eventsMsg{s: s, events: batch}
}

// wanted is what a batch of events asks to read again.
type wanted struct {
	vms, backups, accounts, ops map[string]bool
	status                      bool
}

func want(events []model.Event) wanted {
	w := wanted{vms: map[string]bool{}, backups: map[string]bool{}, accounts: map[string]bool{}, ops: map[string]bool{}}
	for _, e := range events {
		switch model.KindOf(e.Object) {
		case model.KindVM:
			w.vms[e.Object] = true
		case model.KindBackup:
			w.backups[e.Object] = true
		case model.KindAccount:
			w.accounts[e.Object] = true
		case model.KindOperation:
			w.ops[e.Object] = true
		}
		if e.Account != "" {
			w.accounts[e.Account] = true
		}
		if e.Type == "clock.advanced" {
			w.status = true
		}
	}
	return w
}

// fetch reads the objects a batch of events named.
func (m *Model) fetch(w wanted) tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, snapshotTimeout)
		defer cancel()
		var out fetchedMsg
		gone := func(err error) bool { return errors.Is(err, model.ErrNotFound) }
		readVM := func(id string) error {
			vm, err := c.VM(ctx, id)
			switch {
			case gone(err):
				out.goneVMs = append(out.goneVMs, id)
			case err != nil:
				return err
			default:
				out.vms = append(out.vms, vm)
			}
			return nil
		}
		for id := range w.vms {
			if err := readVM(id); err != nil {
				return fetchedMsg{err: err}
			}
		}
		for id := range w.backups {
			b, err := c.Backup(ctx, id)
			switch {
			case gone(err):
				out.goneBks = append(out.goneBks, id)
			case err != nil:
				return fetchedMsg{err: err}
			default:
				out.backups = append(out.backups, b)
			}
		}
		for id := range w.accounts {
			a, err := c.Account(ctx, id)
			if err != nil && !gone(err) {
				return fetchedMsg{err: err}
			}
			if err == nil {
				out.accounts = append(out.accounts, a)
			}
		}
		for id := range w.ops {
			o, err := c.Operation(ctx, id)
			if err != nil && !gone(err) {
				return fetchedMsg{err: err}
			}
			if err == nil {
				out.ops = append(out.ops, o)
			}
		}
		// An operation's VM changes with it (a resume's boot ends in its
		// op.done): read the VMs of the operations read, once each.
		for _, o := range out.ops {
			if o.VMID == "" || w.vms[o.VMID] {
				continue
			}
			w.vms[o.VMID] = true
			if err := readVM(o.VMID); err != nil {
				return fetchedMsg{err: err}
			}
		}
		if w.status {
			st, err := c.Status(ctx)
			if err != nil {
				return fetchedMsg{err: err}
			}
			out.status = &st
		}
		return out
	})
}

func (m *Model) readUsage() tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, usageEvery)
		defer cancel()
		u, err := c.VMUsage(ctx)
		return usageMsg{usage: u, err: err}
	})
}

// consoleMsg carries the tail of a VM's console log.
type consoleMsg struct {
	id    string
	lines []string
	err   error
}

// consoleLines is how much of a console log a VM's page reads.
const consoleLines = 30

func (m *Model) readConsole(id string) tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, usageEvery)
		defer cancel()
		lines, err := c.ConsoleLog(ctx, id, consoleLines)
		return consoleMsg{id: id, lines: lines, err: err}
	})
}

func (m *Model) readAccounts() tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, snapshotTimeout)
		defer cancel()
		as, err := c.Accounts(ctx)
		if err != nil {
			return accountsMsg{err: err}
		}
		msg := accountsMsg{accounts: as}
		if st, err := c.Status(ctx); err == nil {
			msg.status = &st
		}
		return msg
	})
}

func every(d time.Duration, msg tea.Msg) tea.Cmd {
	return tea.Tick(d, func(time.Time) tea.Msg { return msg })
}

// clockTick fires on the next whole second, for countdowns and the clock.
func clockTick() tea.Cmd {
	return tea.Every(time.Second, func(t time.Time) tea.Msg { return clockTickMsg(t) })
}

// actionMsg is the answer to an action.
type actionMsg struct {
	// what the action was, in words ("backup of vm-abc123").
	what string
	op   model.Operation
	err  error
	// then runs after a success (a picker's resolved backup, say).
	then func(m *Model) tea.Cmd
}

// act runs an action against superjoltd.
func (m *Model) act(what string, fn func(ctx context.Context, c *api.Client) (model.Operation, error)) tea.Cmd {
	c, parent := m.client, m.ctx
	return m.io(func() tea.Msg {
		ctx, cancel := context.WithTimeout(parent, 30*time.Second)
		defer cancel()
		op, err := fn(ctx, c)
		return actionMsg{what: what, op: op, err: err}
	})
}
