package systemd

import (
	"context"
	"errors"
	"fmt"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// WatchVMs calls changed with the status of every loaded VM unit, then with
// a VM unit's status each time one changes state (started, failed, stopping,
// gone: Found false) until ctx ends, then
// returns ctx's error; or an error when the connection to systemd is lost (a
// caller then falls back to ListVMs and watches again). It uses a connection
// of its own, and calls changed from one goroutine, in order.
//
// A change may be reported more than once, and a status may be newer than
// the change that caused it (systemd's signals race with the reads), but a
// unit that fails stays failed until StartVM resets it, so no crash goes
// unseen. Should updates come faster than changed takes them, every VM unit
// is read again and reported.
func (m *Manager) WatchVMs(ctx context.Context, changed func(VMStatus)) error {
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("systemd: watch the VM units: %w", err)
	}
	defer conn.Close()
	updates := make(chan *sddbus.SubStateUpdate, 1024)
	errs := make(chan error, 16)
	conn.SetSubStateSubscriber(updates, errs)
	if err := conn.Subscribe(); err != nil {
		return fmt.Errorf("systemd: watch the VM units: %w", err)
	}
	// Subscribed first, read second: a change in between is reported
	// twice rather than not at all.
	vms, err := m.ListVMs(ctx)
	if err != nil {
		return fmt.Errorf("systemd: watch the VM units: %w", err)
	}
	for _, st := range vms {
		changed(st)
	}
	check := time.NewTicker(2 * time.Second)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-check.C:
			if !conn.Connected() {
				return errors.New("systemd: watch the VM units: the connection to systemd was lost")
			}
		case u := <-updates:
			id, ok := VMIDOfUnit(u.UnitName)
			if !ok {
				continue
			}
			st, err := m.status(ctx, id, u.UnitName)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue // read again at its next change
			}
			changed(st)
		case <-errs:
			// An update was dropped (channel full) or a unit could not be
			// read: read them all.
			vms, err := m.ListVMs(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			for _, st := range vms {
				changed(st)
			}
		}
	}
}
