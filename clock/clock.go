// Package clock is superjolt's source of time, shared by the appliance and
// the guest agent. Everything that reads the time or waits for it takes a
// Clock, so that the 24-hour, one-hour and daily rules (and the agent's
// freeze deadline) are tested in microseconds with a Manual clock, and
// `superjoltd --clock=manual` lets a demo move through days on command.
package clock

import (
	"sort"
	"sync"
	"time"
)

// Clock tells the time and makes timers.
type Clock interface {
	Now() time.Time
	// NewTimer returns a timer that fires once after d.
	NewTimer(d time.Duration) Timer
	// AfterFunc calls f after d (Real: in its own goroutine; Manual: within
	// the Advance that makes it due).
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is the part of *time.Timer that superjolt uses.
type Timer interface {
	// C is the channel the time is sent on; nil for AfterFunc timers.
	C() <-chan time.Time
	// Stop prevents the timer from firing; it reports whether it did.
	Stop() bool
}

// Real is the wall clock.
type Real struct{}

var _ Clock = Real{}

func (Real) Now() time.Time { return time.Now() }

func (Real) NewTimer(d time.Duration) Timer { return realTimer{time.NewTimer(d)} }

func (Real) AfterFunc(d time.Duration, f func()) Timer { return realTimer{time.AfterFunc(d, f)} }

type realTimer struct{ t *time.Timer }

func (r realTimer) C() <-chan time.Time { return r.t.C }
func (r realTimer) Stop() bool          { return r.t.Stop() }

// Manual is a clock that moves only when told to. The zero value is not
// usable; make one with NewManual.
type Manual struct {
	mu     sync.Mutex
	now    time.Time
	timers []*manualTimer
}

var _ Clock = (*Manual)(nil)

// NewManual returns a Manual clock set to start.
func NewManual(start time.Time) *Manual { return &Manual{now: start} }

// Now returns the clock's time.
func (m *Manual) Now() time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.now
}

// NewTimer returns a timer that fires when the clock has been advanced by d.
func (m *Manual) NewTimer(d time.Duration) Timer {
	return m.add(d, nil)
}

// AfterFunc calls f when the clock has been advanced by d, within that
// Advance; with d <= 0, in its own goroutine at once, as time.AfterFunc.
func (m *Manual) AfterFunc(d time.Duration, f func()) Timer {
	return m.add(d, f)
}

func (m *Manual) add(d time.Duration, f func()) *manualTimer {
	m.mu.Lock()
	defer m.mu.Unlock()
	t := &manualTimer{m: m, at: m.now.Add(d), f: f}
	if f == nil {
		t.c = make(chan time.Time, 1)
	}
	if d <= 0 {
		if f := t.fire(m.now); f != nil {
			go f()
		}
		return t
	}
	m.timers = append(m.timers, t)
	return t
}

// Advance moves the clock forward by d and fires, in due order, every timer
// that fell due. A timer's channel carries its due time; AfterFunc callbacks
// run before Advance returns (so that a test sees what they did), outside
// the clock's lock, and see the new time as Now.
func (m *Manual) Advance(d time.Duration) time.Time {
	m.mu.Lock()
	m.now = m.now.Add(d)
	now := m.now
	sort.SliceStable(m.timers, func(i, j int) bool { return m.timers[i].at.Before(m.timers[j].at) })
	keep := m.timers[:0]
	var funcs []func()
	for _, t := range m.timers {
		if t.at.After(m.now) {
			keep = append(keep, t)
			continue
		}
		if f := t.fire(t.at); f != nil {
			funcs = append(funcs, f)
		}
	}
	clear(m.timers[len(keep):])
	m.timers = keep
	m.mu.Unlock()
	for _, f := range funcs {
		f()
	}
	return now
}

// Set moves the clock to t if t is later than now (a clock never runs back).
func (m *Manual) Set(t time.Time) time.Time {
	d := t.Sub(m.Now())
	if d < 0 {
		d = 0
	}
	return m.Advance(d)
}

type manualTimer struct {
	m     *Manual
	at    time.Time
	c     chan time.Time
	f     func()
	fired bool
}

// fire runs with m.mu held: it sends on the timer's channel, or returns its
// callback for Advance to run once the lock is released.
func (t *manualTimer) fire(at time.Time) func() {
	t.fired = true
	if t.f != nil {
		return t.f
	}
	t.c <- at
	return nil
}

func (t *manualTimer) C() <-chan time.Time { return t.c }

func (t *manualTimer) Stop() bool {
	t.m.mu.Lock()
	defer t.m.mu.Unlock()
	if t.fired {
		return false
	}
	for i, x := range t.m.timers {
		if x == t {
			t.m.timers = append(t.m.timers[:i], t.m.timers[i+1:]...)
			break
		}
	}
	t.fired = true
	return true
}
