package systemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"testing"
)

// TestMain turns this test binary into a stand-in superjoltd when it runs
// under that name (the install test installs a copy of it as the daemon): it
// says READY=1 through Ready, pings the watchdog through Watchdog, and stops
// on SIGTERM after Stopping.
func TestMain(m *testing.M) {
	if filepath.Base(os.Args[0]) == "superjoltd" {
		os.Exit(stubDaemon())
	}
	if out := os.Getenv("SJ_STOP_PROBE"); out != "" {
		os.Exit(stopProbe(out))
	}
	os.Exit(m.Run())
}

func stubDaemon() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("stub superjoltd", os.Args[1:], "pid", os.Getpid())
	Ready(fmt.Sprintf("stub serving, pid %d", os.Getpid()))
	healthy := os.Getenv("SJ_STUB_UNHEALTHY") == ""
	go Watchdog(ctx, func(context.Context) error {
		if !healthy {
			return errors.New("stub told to be unhealthy")
		}
		return nil
	}, slog.Default())
	<-ctx.Done()
	Stopping()
	fmt.Println("stub superjoltd stopping")
	return 0
}

// stopProbe is a VM unit's ExecStop in TestSystemStopping: it appends what
// SystemStopping says to the file out.
func stopProbe(out string) int {
	ctx := context.Background()
	m, err := NewManager(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer m.Close()
	state := "running"
	if m.SystemStopping(ctx) {
		state = "stopping"
	}
	f, err := os.OpenFile(out, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer f.Close()
	fmt.Fprintln(f, state)
	return 0
}
