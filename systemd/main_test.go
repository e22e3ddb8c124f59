package systemd

import (
	"context"
	"fmt"
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
	os.Exit(m.Run())
}

func stubDaemon() int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	fmt.Println("stub superjoltd", os.Args[1:], "pid", os.Getpid())
	Ready(fmt.Sprintf("stub serving, pid %d", os.Getpid()))
	go Watchdog(ctx, func(context.Context) error { return nil }, nil)
	<-ctx.Done()
	Stopping()
	fmt.Println("stub superjoltd stopping")
	return 0
}
