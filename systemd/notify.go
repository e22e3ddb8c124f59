package systemd

import (
	"context"
	"log/slog"
	"strings"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// notify sends state to systemd when the process runs under a unit with a
// notify socket ($NOTIFY_SOCKET); it does nothing otherwise. Errors are not
// returned: a daemon goes on whether or not systemd hears it.
func notify(state string) {
	_, _ = daemon.SdNotify(false, state)
}

// oneLine keeps a status text to one line: a newline would start another
// assignment in the notify message.
func oneLine(s string) string {
	return strings.NewReplacer("\n", " ", "\r", " ").Replace(s)
}

// Ready tells systemd that the daemon is up (READY=1), with a status text
// that `systemctl status` shows.
func Ready(status string) {
	notify(daemon.SdNotifyReady + "\nSTATUS=" + oneLine(status))
}

// Status sets the status text that `systemctl status` shows.
func Status(status string) {
	notify("STATUS=" + oneLine(status))
}

// Stopping tells systemd that the daemon is shutting down (STOPPING=1).
func Stopping() {
	notify(daemon.SdNotifyStopping)
}

// Watchdog pings systemd's watchdog (WATCHDOG=1) every WatchdogSec/3 while
// check answers within that time, until ctx ends. It returns at once when the
// unit has no watchdog. A failing check is logged and not pinged: systemd
// then restarts a daemon that stays stuck for WatchdogSec. check may be nil
// (always alive).
func Watchdog(ctx context.Context, check func(context.Context) error, log *slog.Logger) {
	every, err := daemon.SdWatchdogEnabled(false)
	if err != nil || every <= 0 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := time.NewTicker(every / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if check != nil {
			cctx, cancel := context.WithTimeout(ctx, every/3)
			err := check(cctx)
			cancel()
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				log.Warn("watchdog: the daemon did not answer; not pinging systemd", "err", err)
				continue
			}
		}
		notify(daemon.SdNotifyWatchdog)
	}
}
