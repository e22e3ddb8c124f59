package systemd

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket listens where $NOTIFY_SOCKET points for the test and returns
// the messages that arrive.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	msgs := make(chan string, 100)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(5 * time.Second):
		t.Fatal("no notify message")
		return ""
	}
}

func TestNotify(t *testing.T) {
	msgs := notifySocket(t)
	Ready("serving on /run/superjolt/superjolt.sock")
	if got, want := next(t, msgs), "READY=1\nSTATUS=serving on /run/superjolt/superjolt.sock"; got != want {
		t.Errorf("Ready sent %q, want %q", got, want)
	}
	Status("opening\nthe appliance")
	if got, want := next(t, msgs), "STATUS=opening the appliance"; got != want {
		t.Errorf("Status sent %q, want %q", got, want)
	}
	Stopping()
	if got, want := next(t, msgs), "STOPPING=1"; got != want {
		t.Errorf("Stopping sent %q, want %q", got, want)
	}
}

func TestNotifyWithoutSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	Ready("x") // nothing to tell, nothing fails
	Stopping()
	done := make(chan struct{})
	go func() { Watchdog(context.Background(), nil, nil); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return at once without a watchdog")
	}
}

func TestWatchdog(t *testing.T) {
	msgs := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "60000") // 60ms: a ping every 20ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	var healthy atomic.Bool
	healthy.Store(true)
	var checks atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Watchdog(ctx, func(ctx context.Context) error {
			checks.Add(1)
			if _, ok := ctx.Deadline(); !ok {
				t.Error("the check has no deadline")
			}
			if !healthy.Load() {
				return errors.New("store does not answer")
			}
			return nil
		}, nil)
		close(done)
	}()
	for range 3 {
		if m := next(t, msgs); m != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", m)
		}
	}
	// A failing check: no more pings.
	healthy.Store(false)
	time.Sleep(30 * time.Millisecond)
	for len(msgs) > 0 {
		<-msgs
	}
	c := checks.Load()
	time.Sleep(100 * time.Millisecond)
	if n := len(msgs); n > 0 {
		t.Errorf("%d pings while the check fails", n)
	}
	if checks.Load() <= c {
		t.Error("the check was not called again")
	}
	healthy.Store(true)
	if m := next(t, msgs); m != "WATCHDOG=1" {
		t.Fatalf("got %q after recovery, want WATCHDOG=1", m)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return when its context ended")
	}
}

func TestWatchdogOtherPID(t *testing.T) {
	msgs := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "60000")
	t.Setenv("WATCHDOG_PID", "1") // the watchdog is another process's
	done := make(chan struct{})
	go func() { Watchdog(context.Background(), nil, nil); close(done) }()
	select {
	case <-done:
	case m := <-msgs:
		t.Fatalf("pinged another process's watchdog: %q", m)
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return")
	}
}
