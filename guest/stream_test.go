package guest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once, that
// records when it first got data.
type syncBuffer struct {
	mu    sync.Mutex
	b     bytes.Buffer
	first time.Time
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.first.IsZero() && len(p) > 0 {
		s.first = time.Now()
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestExecStream(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			c := tr.serve(t, newTestAgent(t, nil).Agent)
			ctx := context.Background()

			// Output arrives as printed, stdout and stderr apart.
			var out, errb syncBuffer
			start := time.Now()
			res, err := c.ExecStream(ctx, ExecRequest{Path: "sh", Args: []string{"-c", "echo a; echo e >&2; sleep 1; echo b; exit 3"}},
				ExecIO{Stdout: &out, Stderr: &errb})
			took := time.Since(start)
			if err != nil || res.ExitCode != 3 || out.String() != "a\nb\n" || errb.String() != "e\n" {
				t.Fatalf("ExecStream = %+v, %v; stdout %q stderr %q", res, err, out.String(), errb.String())
			}
			if first := out.first.Sub(start); first > took-500*time.Millisecond {
				t.Fatalf("first output after %s of %s: not streamed", first, took)
			}

			// Stdin is forwarded, larger than a window.
			in := bytes.Repeat([]byte("0123456789abcdef"), ExecWindow/4)
			var cat syncBuffer
			res, err = c.ExecStream(ctx, ExecRequest{Path: "cat"}, ExecIO{Stdin: bytes.NewReader(in), Stdout: &cat})
			if err != nil || res.ExitCode != 0 || cat.String() != string(in) {
				t.Fatalf("cat: %+v, %v, %d bytes back of %d", res, err, len(cat.String()), len(in))
			}

			// A program that could not start.
			if _, err := c.ExecStream(ctx, ExecRequest{Path: "/nonexistent"}, ExecIO{}); !errors.Is(err, ErrExec) {
				t.Fatalf("nonexistent program: %v, want ErrExec", err)
			}

			// The timeout kills it and says so.
			res, err = c.ExecStream(ctx, ExecRequest{Path: "sleep", Args: []string{"30"}, Timeout: 300 * time.Millisecond}, ExecIO{})
			if err != nil || !res.TimedOut || res.Signal != 9 {
				t.Fatalf("timeout: %+v, %v", res, err)
			}
		})
	}
}

// TestExecStreamCancel: a cancelled exec interrupts the program (SIGINT to
// its group) and the call returns soon after.
func TestExecStreamCancel(t *testing.T) {
	c := servePipe(t, newTestAgent(t, nil).Agent)
	pidFile := t.TempDir() + "/pid"
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	go func() {
		<-started
		time.Sleep(200 * time.Millisecond)
		cancel()
	}()
	var res ExecResult
	var err error
	within(t, 5*time.Second, "cancelled exec", func() {
		res, err = c.ExecStream(ctx, ExecRequest{Path: "sh", Args: []string{"-c", "echo $$ > " + pidFile + "; exec sleep 25"}},
			ExecIO{Started: func() { close(started) }})
	})
	if !errors.Is(err, context.Canceled) || res.Signal != 2 {
		t.Fatalf("cancelled: %+v, %v; want SIGINT and context.Canceled", res, err)
	}
	b, _ := os.ReadFile(pidFile)
	if pid := strings.TrimSpace(string(b)); pid == "" {
		t.Fatal("no pid written")
	} else if _, err := os.Stat("/proc/" + pid); err == nil {
		t.Fatalf("process %s still exists after the cancel", pid)
	}

	// A program that ignores SIGINT gets SIGKILL after the grace.
	ctx, cancel = context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	within(t, ExecInterruptGrace+5*time.Second, "exec ignoring SIGINT", func() {
		res, err = c.ExecStream(ctx, ExecRequest{Path: "sh", Args: []string{"-c", "trap '' INT; sleep 25"}}, ExecIO{})
	})
	if !errors.Is(err, context.Canceled) || res.Signal != 9 {
		t.Fatalf("ignoring SIGINT: %+v, %v; want SIGKILL", res, err)
	}
}

// TestExecStreamDoesNotStarvePing: a command printing as fast as it can,
// to a host that takes its output slowly, does not hold up ping or thaw.
func TestExecStreamDoesNotStarvePing(t *testing.T) {
	c := servePipe(t, newTestAgent(t, nil).Agent)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := writerFunc(func(p []byte) (int, error) { time.Sleep(50 * time.Millisecond); return len(p), nil })
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = c.ExecStream(ctx, ExecRequest{Path: "sh", Args: []string{"-c", "yes"}}, ExecIO{Stdout: slow})
	}()
	time.Sleep(300 * time.Millisecond)
	if _, err := c.Freeze(ctx, 0); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		start := time.Now()
		if _, err := c.Ping(ctx); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 200*time.Millisecond {
			t.Fatalf("ping took %s behind exec output", d)
		}
	}
	start := time.Now()
	if err := c.Thaw(ctx); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Fatalf("thaw took %s behind exec output", d)
	}
	cancel()
	<-done
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

var _ io.Writer = writerFunc(nil)

// TestExecStreamTTY runs a shell on a pseudo-terminal: it sees a terminal
// of the size asked, takes a resize, and exits with its status.
func TestExecStreamTTY(t *testing.T) {
	c := servePipe(t, newTestAgent(t, nil).Agent)
	pr, pw := io.Pipe()
	resize := make(chan WindowSize, 1)
	var out syncBuffer
	type ret struct {
		res ExecResult
		err error
	}
	done := make(chan ret, 1)
	go func() {
		res, err := c.ExecStream(context.Background(), ExecRequest{Path: "sh", TTY: true, Size: WindowSize{Rows: 30, Cols: 100}},
			ExecIO{Stdin: pr, Stdout: &out, Resize: resize})
		done <- ret{res, err}
	}()
	wait := func(want string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(out.String(), want) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the terminal's output:\n%q", want, out.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	io.WriteString(pw, "test -t 0 && echo tty-$((40+2)); stty size\n")
	wait("tty-42")
	wait("30 100")
	resize <- WindowSize{Rows: 40, Cols: 120}
	time.Sleep(200 * time.Millisecond)
	io.WriteString(pw, "stty size\n")
	wait("40 120")
	io.WriteString(pw, "exit 3\n")
	select {
	case r := <-done:
		if r.err != nil || r.res.ExitCode != 3 {
			t.Fatalf("shell on a tty: %+v, %v", r.res, r.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the shell did not end after exit 3")
	}
}
