package appliance

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Test hooks: points inside operations where tests of the real daemon can
// kill it (CrashEnv) or hold an operation (SlowEnv). Both are read from the
// environment once, in New; with neither set, testPoint does nothing.

// CrashEnv names the environment variable that makes the process SIGKILL
// itself at one step of one kind of operation, for crash tests of the real
// daemon: SUPERJOLT_TEST_CRASH_AT=backup:snapshot kills it right after the
// snapshot of a backup is taken and before that is recorded. The steps are
// the Step values operations go through (see the *Steps constants).
const CrashEnv = "SUPERJOLT_TEST_CRASH_AT"

// SlowEnv names the environment variable that holds operations for a
// while at chosen points, for tests of what happens while one is under way
// (a caller interrupted, a cancel): SUPERJOLT_TEST_SLOW_AT=backup:cancellable
// waits SlowFor (or until the operation's context ends) when a backup
// reaches that point. Several points are separated by commas. The points
// are the steps of CrashEnv and "backup:cancellable" (a backup's last
// moment before its snapshot).
const SlowEnv = "SUPERJOLT_TEST_SLOW_AT"

// SlowFor is how long a SlowEnv point holds an operation.
const SlowFor = 3 * time.Second

// envTestHook returns the hook of CrashEnv and SlowEnv, or nil when neither
// is set.
func envTestHook() func(ctx context.Context, point string) {
	crashAt, slowAt := os.Getenv(CrashEnv), os.Getenv(SlowEnv)
	if crashAt == "" && slowAt == "" {
		return nil
	}
	slow := strings.Split(slowAt, ",")
	return func(ctx context.Context, point string) {
		if slices.Contains(slow, point) {
			slog.Default().Warn("test slow point reached: holding the operation", "point", point, "for", SlowFor)
			t := time.NewTimer(SlowFor) // a real wait: what is tested is a caller meanwhile, not a time rule
			defer t.Stop()
			select {
			case <-t.C:
			case <-ctx.Done():
			}
		}
		if point == crashAt {
			slog.Default().Warn("test crash point reached: killing the process", "step", point)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	}
}

// testPoint calls the test hook, if any (see CrashEnv and SlowEnv), at point
// "kind:step" of an operation running on ctx.
func (a *Appliance) testPoint(ctx context.Context, point string) {
	if a.testHook != nil {
		a.testHook(ctx, point)
	}
}
