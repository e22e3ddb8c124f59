package appliance

import (
	"errors"
	"slices"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// The crash policy: a VM whose process ends unasked (QEMU crashed, was
// killed, or ran out of memory; its guest rebooted and never came back)
// is booted again after a back-off that doubles with each crash within
// CrashWindow (CrashBackoff, 2×, 4×, … up to maxCrashBackoff); the crash
// after CrashLimit of them within the window leaves it stopped, with an
// event saying why. A guest that powers itself off is not a crash: that
// is a stop the tenant asked for.
//
// The back-off is supervision of processes on this host, so it runs on
// the host's own clock, not the appliance's (which may be a manual one).
const (
	DefaultCrashLimit   = 5
	DefaultCrashWindow  = 10 * time.Minute
	DefaultCrashBackoff = time.Second
	maxCrashBackoff     = 30 * time.Second
)

// crashBackoff is the wait before the boot that follows the nth crash
// within the window.
func crashBackoff(base time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < maxCrashBackoff; i++ {
		d *= 2
	}
	return min(d, maxCrashBackoff)
}

// crashed records that the process of boot bootID of VM id ended unasked
// (why, in words), and boots the VM again after the back-off, or leaves it
// stopped when it crashed too often.
func (a *Appliance) crashed(id, bootID, why string) {
	now := time.Now()
	a.mu.Lock()
	recent := slices.DeleteFunc(a.crashes[id], func(t time.Time) bool { return now.Sub(t) > a.crashWindow })
	recent = append(recent, now)
	a.crashes[id] = recent
	n := len(recent)
	if n > a.crashLimit {
		delete(a.crashes, id)
	}
	a.mu.Unlock()

	if n > a.crashLimit {
		a.recordExit(id, bootID, func(tx *store.Tx) error {
			_, err := a.setStopped(tx, id, model.StopCrashLoop, "vm.crash_loop",
				"%s exited unexpectedly %d times within %s (last: %s); it is left stopped: look at its console log (`superjolt vm log %s`), then start it with `superjolt vm start %s`",
				id, n, a.crashWindow, why, id, id)
			return err
		})
		return
	}
	delay := crashBackoff(a.crashBackoff, n)
	if !a.recordExit(id, bootID, func(tx *store.Tx) error {
		vm, err := a.setStopped(tx, id, model.StopExited, "vm.crashed",
			"%s exited unexpectedly (%s); it boots again in %s (crash %d; after %d within %s it is left stopped)",
			id, why, delay, n, a.crashLimit, a.crashWindow)
		if err != nil {
			return err
		}
		// Still wanted running: a daemon that starts before the back-off
		// is over boots it too.
		vm.WantRunning = true
		return tx.PutVM(vm)
	}) {
		return
	}
	time.AfterFunc(delay, func() { a.bootCrashed(id) })
}

// bootCrashed boots a VM again after a crash, unless someone has started,
// stopped, destroyed or otherwise taken it over meanwhile.
func (a *Appliance) bootCrashed(id string) {
	if a.life.Err() != nil {
		return
	}
	vm, err := a.readVM(a.life, id)
	if err != nil || vm.State != model.StateStopped || !vm.WantRunning || vm.StopReason != model.StopExited {
		return
	}
	if _, err := a.submitStartVM(a.life, id); err != nil {
		a.log.Warn("cannot boot a VM again after its crash", "vm", id, "err", err)
		if errors.Is(err, model.ErrConflict) {
			return // an operation holds it: whoever runs it decides
		}
		_ = a.update(a.life, func(tx *store.Tx) error {
			cur, err := getVM(tx, id)
			if err != nil || cur.State != model.StateStopped {
				return err
			}
			cur.WantRunning = false
			if err := tx.PutVM(cur); err != nil {
				return err
			}
			return event(tx, a.clock.Now(), "vm.boot_failed", id, cur.AccountID, "%s was not booted again after its crash: %v", id, err)
		})
	}
}
