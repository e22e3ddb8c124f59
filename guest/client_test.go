package guest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// silentPeer reads requests on conn and answers none of them.
func silentPeer(t testing.TB, conn net.Conn) <-chan Request {
	t.Helper()
	got := make(chan Request, 100)
	go func() {
		sc := bufio.NewScanner(conn)
		sc.Buffer(nil, MaxRequestSize)
		for sc.Scan() {
			var r Request
			if json.Unmarshal(sc.Bytes(), &r) == nil {
				got <- r
			}
		}
	}()
	return got
}

func TestCallTimesOutOnSilentPeer(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration // client default
		ctxTime time.Duration // 0: no ctx deadline
	}{
		{"client default timeout", 100 * time.Millisecond, 0},
		{"ctx deadline", time.Hour, 100 * time.Millisecond},
		{"ctx deadline shorter than default", 10 * time.Second, 50 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := net.Pipe()
			defer srv.Close()
			got := silentPeer(t, srv)
			c := NewClient(cli, WithTimeout(tt.timeout), WithLogger(testLogger(t)))
			defer c.Close()
			ctx := context.Background()
			if tt.ctxTime > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.ctxTime)
				defer cancel()
			}
			start := time.Now()
			_, err := c.Ping(ctx)
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Ping on a silent peer = %v, want DeadlineExceeded", err)
			}
			if took > 2*time.Second {
				t.Fatalf("Ping took %s to time out", took)
			}
			select {
			case r := <-got:
				if r.Op != OpPing || r.V != ProtocolVersion || r.ID == 0 {
					t.Errorf("peer got %+v", r)
				}
			case <-time.After(2 * time.Second):
				t.Error("the request never reached the peer")
			}
			// A late answer to the abandoned call is dropped, and the
			// connection is still usable.
			if c.Err() != nil {
				t.Errorf("timeout killed the connection: %v", c.Err())
			}
		})
	}
}

// A peer that does not even read: the write itself must time out.
func TestCallTimesOutOnPeerThatDoesNotRead(t *testing.T) {
	srv, cli := net.Pipe() // unbuffered: a write blocks until read
	defer srv.Close()
	c := NewClient(cli, WithTimeout(100*time.Millisecond), WithLogger(testLogger(t)))
	defer c.Close()
	within(t, 2*time.Second, "ping to a peer that does not read", func() {
		if _, err := c.Ping(context.Background()); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Ping = %v, want DeadlineExceeded", err)
		}
	})
	// A half-written line would corrupt the stream: the connection is dead.
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping after a failed write = %v, want ErrClosed", err)
	}
}

func TestDeadConnectionFailsPendingCalls(t *testing.T) {
	srv, cli := net.Pipe()
	got := silentPeer(t, srv)
	c := NewClient(cli, WithTimeout(time.Hour), WithLogger(testLogger(t)))
	defer c.Close()
	const n = 5
	errs := make(chan error, n)
	for range n {
		go func() { _, err := c.Ping(context.Background()); errs <- err }()
	}
	for range n {
		<-got // every request is pending at the peer
	}
	srv.Close()
	within(t, 2*time.Second, "pending calls after the connection died", func() {
		for range n {
			if err := <-errs; !errors.Is(err, ErrClosed) {
				t.Errorf("pending Ping = %v, want ErrClosed", err)
			}
		}
	})
	select {
	case <-c.Done():
	default:
		t.Error("Done not closed")
	}
	if _, err := c.Ping(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Ping on a dead client = %v, want ErrClosed", err)
	}
}

func TestCloseFailsPendingCalls(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	got := silentPeer(t, srv)
	c := NewClient(cli, WithTimeout(time.Hour), WithLogger(testLogger(t)))
	errc := make(chan error, 1)
	go func() { errc <- c.Thaw(context.Background()) }()
	<-got
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	within(t, 2*time.Second, "pending call after Close", func() {
		if err := <-errc; !errors.Is(err, ErrClosed) {
			t.Errorf("pending Thaw = %v, want ErrClosed", err)
		}
	})
}

func TestCallCancelled(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	got := silentPeer(t, srv)
	c := NewClient(cli, WithTimeout(time.Hour), WithLogger(testLogger(t)))
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := c.Freeze(ctx, 0); errc <- err }()
	<-got
	cancel()
	within(t, 2*time.Second, "cancelled call", func() {
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Errorf("Freeze = %v, want Canceled", err)
		}
	})
}

// scriptedPeer answers each request with what answer returns (nil: no
// answer), as raw lines.
func scriptedPeer(t testing.TB, conn net.Conn, answer func(Request) []string) {
	t.Helper()
	var mu sync.Mutex
	go func() {
		sc := bufio.NewScanner(conn)
		for sc.Scan() {
			var r Request
			if json.Unmarshal(sc.Bytes(), &r) != nil {
				continue
			}
			for _, line := range answer(r) {
				mu.Lock()
				_, _ = io.WriteString(conn, line+"\n")
				mu.Unlock()
			}
		}
	}()
}

func TestClientHandlesOddAnswers(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		answer func(Request) []string
		want   error
	}{
		{"wrong version", func(r Request) []string {
			return []string{mustLine(t, Response{V: 2, ID: r.ID, OK: true})}
		}, ErrProtocol},
		{"garbage, unknown id, then the answer", func(r Request) []string {
			return []string{"not json", "", mustLine(t, Response{V: 1, ID: r.ID + 1000, OK: true, BootID: "wrong"}),
				mustLine(t, Response{V: 1, ID: r.ID, OK: true, BootID: "b"})}
		}, nil},
		{"not ok without error", func(r Request) []string {
			return []string{mustLine(t, Response{V: 1, ID: r.ID})}
		}, ErrInternal},
		{"unknown error code", func(r Request) []string {
			return []string{mustLine(t, errorResponse(r.ID, errors.New("x")))}
		}, ErrInternal},
		{"frozen code", func(r Request) []string {
			return []string{mustLine(t, Response{V: 1, ID: r.ID, Error: &WireError{Code: CodeFrozen, Message: "m"}})}
		}, ErrFrozen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, cli := net.Pipe()
			defer srv.Close()
			scriptedPeer(t, srv, tt.answer)
			c := NewClient(cli, WithTimeout(2*time.Second), WithLogger(testLogger(t)))
			defer c.Close()
			p, err := c.Ping(ctx)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Ping = %v, want %v", err, tt.want)
			}
			if tt.want == nil && p.BootID != "b" {
				t.Fatalf("Ping took the wrong answer: %+v", p)
			}
		})
	}
}

func mustLine(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestOversizedAnswerIsDropped(t *testing.T) {
	srv, cli := net.Pipe()
	defer srv.Close()
	scriptedPeer(t, srv, func(r Request) []string {
		big := make([]byte, MaxResponseSize)
		for i := range big {
			big[i] = 'a'
		}
		return []string{string(big), mustLine(t, Response{V: 1, ID: r.ID, OK: true, BootID: "after"})}
	})
	c := NewClient(cli, WithTimeout(5*time.Second), WithLogger(testLogger(t)))
	defer c.Close()
	p, err := c.Ping(context.Background())
	if err != nil || p.BootID != "after" {
		t.Fatalf("Ping = %+v, %v; want the answer after the oversized line", p, err)
	}
}

func TestDialSerial(t *testing.T) {
	t.Run("no socket", func(t *testing.T) {
		_, err := DialSerial(context.Background(), filepath.Join(t.TempDir(), "missing.sock"))
		if err == nil {
			t.Fatal("DialSerial to a missing socket succeeded")
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		path := filepath.Join(t.TempDir(), "s.sock")
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		if _, err := DialSerial(ctx, path); !errors.Is(err, context.Canceled) {
			t.Fatalf("DialSerial with a cancelled ctx = %v", err)
		}
	})
}

func TestAgentErrorIs(t *testing.T) {
	for _, ce := range codeErrors {
		e := &AgentError{Op: "x", Code: ce.code, Message: "m"}
		for _, other := range codeErrors {
			if got := errors.Is(e, other.err); got != (other.code == ce.code) {
				t.Errorf("errors.Is(%s, %v) = %v", ce.code, other.err, got)
			}
		}
		// And the agent maps the sentinel back to its code.
		if got := errorCode(fmtWrap(ce.err)); got != ce.code {
			t.Errorf("errorCode(%v) = %q, want %q", ce.err, got, ce.code)
		}
	}
	if !errors.Is(&AgentError{Code: "from_the_future"}, ErrInternal) {
		t.Error("an unknown code is not ErrInternal")
	}
}

func fmtWrap(err error) error { return errors.Join(errors.New("context"), err) }

// The agent answers shutdown and the connection dies right after: the
// answer wins over the closed connection, every time.
func TestAnswerThenCloseCountsAsAnswer(t *testing.T) {
	for i := range 50 {
		srv, cli := net.Pipe()
		go func() {
			sc := bufio.NewScanner(srv)
			if sc.Scan() {
				var r Request
				_ = json.Unmarshal(sc.Bytes(), &r)
				_, _ = io.WriteString(srv, mustLine(t, Response{V: 1, ID: r.ID, OK: true})+"\n")
			}
			srv.Close()
		}()
		c := NewClient(cli, WithTimeout(5*time.Second), WithLogger(testLogger(t)))
		if err := c.Shutdown(context.Background()); err != nil {
			t.Fatalf("round %d: Shutdown = %v, want nil: the agent answered before closing", i, err)
		}
		c.Close()
	}
}
