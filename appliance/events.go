package appliance

import (
	"context"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Events returns up to limit events after sequence number afterSeq, oldest
// first (limit 0 or less: 100; capped at model.MaxListLimit).
func (a *Appliance) Events(ctx context.Context, afterSeq uint64, limit int) ([]model.Event, error) {
	var out []model.Event
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.EventsAfter(afterSeq, clampLimit(limit))
		return err
	})
	return out, categorised(err, "read events")
}

// LastEvents returns the newest n events, oldest first (n 0 or less: 100;
// capped at model.MaxListLimit): what an operator wants to see first. A
// follower goes on with WaitEvents after the last one's Seq.
func (a *Appliance) LastEvents(ctx context.Context, n int) ([]model.Event, error) {
	n = clampLimit(n)
	var out []model.Event
	err := a.view(ctx, func(tx *store.Tx) error {
		last, err := tx.LastEventSeq()
		if err != nil {
			return err
		}
		// Seqs are handed out one by one and only the oldest events are
		// ever pruned, so the newest n are the ones after last-n.
		var after uint64
		if last > uint64(n) {
			after = last - uint64(n)
		}
		out, err = tx.EventsAfter(after, n)
		return err
	})
	return out, categorised(err, "read events")
}

// WaitEvents blocks until there are events after afterSeq and returns them
// (at most 100), or returns ctx's error when ctx ends first.
func (a *Appliance) WaitEvents(ctx context.Context, afterSeq uint64) ([]model.Event, error) {
	for {
		// Take the wake channel before reading, so that an append between
		// the read and the wait is not missed.
		a.evMu.Lock()
		wake := a.evWake
		a.evMu.Unlock()
		evs, err := a.Events(ctx, afterSeq, 0)
		if err != nil || len(evs) > 0 {
			return evs, err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-a.life.Done():
			return nil, unavailablef("the appliance is shutting down; reconnect once it is back")
		}
	}
}

// wakeEvents wakes every WaitEvents.
func (a *Appliance) wakeEvents() {
	a.evMu.Lock()
	close(a.evWake)
	a.evWake = make(chan struct{})
	a.evMu.Unlock()
}
