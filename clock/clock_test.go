package clock

import (
	"testing"
	"time"
)

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestManualTimersFireInOrderOnlyWhenDue(t *testing.T) {
	m := NewManual(epoch)
	day := m.NewTimer(24 * time.Hour)
	hour := m.NewTimer(time.Hour)
	m.Advance(59 * time.Minute)
	select {
	case <-hour.C():
		t.Fatal("one-hour timer fired after 59 minutes")
	default:
	}
	m.Advance(time.Minute)
	if got := <-hour.C(); !got.Equal(epoch.Add(time.Hour)) {
		t.Fatalf("hour timer carried %v, want %v", got, epoch.Add(time.Hour))
	}
	m.Advance(48 * time.Hour)
	if got := <-day.C(); !got.Equal(epoch.Add(24 * time.Hour)) {
		t.Fatalf("day timer carried %v, want its due time", got)
	}
	if got := m.Now(); !got.Equal(epoch.Add(49 * time.Hour)) {
		t.Fatalf("Now = %v after advancing 49h", got)
	}
}

func TestManualStopAndAfterFunc(t *testing.T) {
	m := NewManual(epoch)
	stopped := m.NewTimer(time.Second)
	if !stopped.Stop() {
		t.Fatal("Stop of a pending timer reported false")
	}
	done := make(chan time.Time, 1)
	m.AfterFunc(time.Minute, func() { done <- m.Now() })
	m.Advance(2 * time.Minute)
	select {
	case <-stopped.C():
		t.Fatal("stopped timer fired")
	default:
	}
	if got := <-done; !got.Equal(epoch.Add(2 * time.Minute)) {
		t.Fatalf("AfterFunc saw Now = %v", got)
	}
	if m.Set(epoch) != epoch.Add(2*time.Minute) {
		t.Fatal("Set moved the clock backwards")
	}
}

func TestManualZeroDurationFiresAtOnce(t *testing.T) {
	m := NewManual(epoch)
	select {
	case <-m.NewTimer(0).C():
	default:
		t.Fatal("a zero-duration timer did not fire at once")
	}
}
