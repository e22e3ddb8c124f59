package systemd

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// TestWatchdogUnderSystemd runs the stand-in daemon (this binary as
// superjoltd) as a Type=notify unit with WatchdogSec=1s: while its check
// answers, Ready and Watchdog keep it running; when it does not, systemd
// kills it for the watchdog.
func TestWatchdogUnderSystemd(t *testing.T) {
	if !inSystemd(t) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stub := filepath.Join(t.TempDir(), "superjoltd")
	if err := copyFileAtomic(mustExecutable(t), stub, 0o755); err != nil {
		t.Fatal(err)
	}
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, tc := range []struct {
		unit      string
		env       []string
		wantState string
	}{
		{"wd-healthy.service", nil, "active"},
		{"wd-stuck.service", []string{"SJ_STUB_UNHEALTHY=1"}, "failed"},
	} {
		props := []sddbus.Property{
			sddbus.PropType("notify"),
			execProp("ExecStart", []string{stub}),
			prop("NotifyAccess", "main"),
			prop("WatchdogUSec", uint64(time.Second/time.Microsecond)),
			prop("Environment", tc.env),
		}
		done := make(chan string, 1)
		if _, err := conn.StartTransientUnitContext(ctx, tc.unit, "fail", props, done); err != nil {
			t.Fatal(err)
		}
		// The start job is done only once the stub said READY=1.
		if err := waitJob(ctx, done, "start", tc.unit); err != nil {
			t.Fatalf("%v\n%s", err, journal(tc.unit))
		}
	}
	time.Sleep(2500 * time.Millisecond) // more than two watchdog periods
	for unit, want := range map[string][2]string{
		"wd-healthy.service": {"active", "success"},
		"wd-stuck.service":   {"failed", "watchdog"},
	} {
		p := show(t, unit, "ActiveState", "Result", "StatusText")
		if p["ActiveState"] != want[0] || p["Result"] != want[1] {
			t.Errorf("%s: %v, want %s with result %s\n%s", unit, p, want[0], want[1], journal(unit))
		}
	}
	_ = os.Remove(stub)
}
