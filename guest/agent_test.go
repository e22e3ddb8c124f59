package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestOps(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ta := newTestAgent(t, nil)
			c := tr.serve(t, ta.Agent)
			ctx := context.Background()

			ping, err := c.Ping(ctx)
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			host, _ := os.Hostname()
			want := PingResult{BootID: ta.bootID, Uptime: 123450 * time.Millisecond, AgentVersion: "test-1", ProtocolVersion: 1,
				Hostname: host, Addresses: interfaceAddrs()}
			if !reflect.DeepEqual(ping, want) {
				t.Errorf("Ping = %+v, want %+v", ping, want)
			}

			fr, err := c.Freeze(ctx, time.Minute)
			if err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			if !slices.Equal(fr.Filesystems, []string{"/", "/data"}) {
				t.Errorf("Freeze froze %q, want [/ /data]", fr.Filesystems)
			}
			if err := c.Thaw(ctx); err != nil {
				t.Fatalf("Thaw: %v", err)
			}
			if got, want := ta.freezer.events(), []string{"freeze /", "freeze /data", "thaw /data", "thaw /"}; !slices.Equal(got, want) {
				t.Errorf("freezer saw %q, want %q (thaw in reverse order)", got, want)
			}

			res, err := c.Exec(ctx, ExecRequest{
				Path:  "/bin/sh",
				Args:  []string{"-c", `read x; echo "out:$x:$1"; echo err >&2; exit 3`, "sh", "arg1"},
				Stdin: []byte("hello\n"),
			})
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			wantRes := ExecResult{ExitCode: 3, Stdout: []byte("out:hello:arg1\n"), Stderr: []byte("err\n")}
			if !execEqual(res, wantRes) {
				t.Errorf("Exec = %s, want %s", fmtExec(res), fmtExec(wantRes))
			}

			if err := c.Shutdown(ctx); err != nil {
				t.Fatalf("Shutdown: %v", err)
			}
			if err := c.Reboot(ctx); err != nil {
				t.Fatalf("Reboot: %v", err)
			}
			// The power action runs after the answer was written.
			deadline := time.Now().Add(5 * time.Second)
			for len(ta.power.done()) < 2 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if got := ta.power.done(); !slices.Equal(got, []string{"poweroff", "reboot"}) {
				t.Errorf("power actions = %q, want [poweroff reboot]", got)
			}
		})
	}
}

func execEqual(a, b ExecResult) bool {
	return a.ExitCode == b.ExitCode && a.Signal == b.Signal && bytes.Equal(a.Stdout, b.Stdout) &&
		bytes.Equal(a.Stderr, b.Stderr) && a.Truncated == b.Truncated && a.TimedOut == b.TimedOut
}

func fmtExec(r ExecResult) string {
	return fmt.Sprintf("{exit %d signal %d stdout %q stderr %q truncated %v timedout %v}",
		r.ExitCode, r.Signal, r.Stdout, r.Stderr, r.Truncated, r.TimedOut)
}

func TestOpErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		prepare func(*testing.T, *testAgent, *Client)
		call    func(*Client) error
		want    error
	}{
		{
			name:    "freeze while frozen",
			prepare: func(t *testing.T, _ *testAgent, c *Client) { mustFreeze(t, c) },
			call:    func(c *Client) error { _, err := c.Freeze(ctx, 0); return err },
			want:    ErrFrozen,
		},
		{
			name: "thaw while thawed",
			call: func(c *Client) error { return c.Thaw(ctx) },
			want: ErrNotFrozen,
		},
		{
			name:    "thaw twice",
			prepare: func(t *testing.T, _ *testAgent, c *Client) { mustFreeze(t, c); mustThaw(t, c) },
			call:    func(c *Client) error { return c.Thaw(ctx) },
			want:    ErrNotFrozen,
		},
		{
			name: "exec missing program",
			call: func(c *Client) error {
				_, err := c.Exec(ctx, ExecRequest{Path: "/nonexistent/program"})
				return err
			},
			want: ErrExec,
		},
		{
			name: "exec program not in PATH",
			call: func(c *Client) error {
				_, err := c.Exec(ctx, ExecRequest{Path: "no-such-program-superjolt"})
				return err
			},
			want: ErrExec,
		},
		{
			name: "exec without path",
			call: func(c *Client) error { _, err := c.Exec(ctx, ExecRequest{}); return err },
			want: ErrProtocol,
		},
		{
			name:    "freeze fails half-way",
			prepare: func(_ *testing.T, ta *testAgent, _ *Client) { ta.freezer.failOn = "/data" },
			call:    func(c *Client) error { _, err := c.Freeze(ctx, 0); return err },
			want:    ErrInternal,
		},
		{
			name:    "cannot list filesystems",
			prepare: func(_ *testing.T, ta *testAgent, _ *Client) { ta.freezer.listErr = errors.New("no /proc") },
			call:    func(c *Client) error { _, err := c.Freeze(ctx, 0); return err },
			want:    ErrInternal,
		},
		{
			name: "power unsupported",
			prepare: func(_ *testing.T, ta *testAgent, _ *Client) {
				ta.power.err = fmt.Errorf("%w: no poweroff", ErrUnsupported)
			},
			call: func(c *Client) error { return c.Shutdown(ctx) },
			want: ErrUnsupported,
		},
		{
			name:    "request too big to send",
			prepare: nil,
			call: func(c *Client) error {
				_, err := c.Exec(ctx, ExecRequest{Path: "/bin/cat", Stdin: make([]byte, MaxRequestSize)})
				return err
			},
			want: ErrProtocol,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := newTestAgent(t, nil)
			c := servePipe(t, ta.Agent)
			if tt.prepare != nil {
				tt.prepare(t, ta, c)
			}
			err := tt.call(c)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			// The agent keeps serving.
			if _, err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping after the error: %v", err)
			}
		})
	}
}

func TestFreezeHalfWayThawsWhatItFroze(t *testing.T) {
	ta := newTestAgent(t, nil)
	ta.freezer.fs = []string{"/", "/data", "/srv"}
	ta.freezer.failOn = "/srv"
	c := servePipe(t, ta.Agent)
	if _, err := c.Freeze(context.Background(), 0); !errors.Is(err, ErrInternal) {
		t.Fatalf("Freeze err = %v, want ErrInternal", err)
	}
	want := []string{"freeze /", "freeze /data", "thaw /data", "thaw /"}
	if got := ta.freezer.events(); !slices.Equal(got, want) {
		t.Errorf("freezer saw %q, want %q", got, want)
	}
	if ta.Frozen() != nil {
		t.Errorf("agent believes %q frozen after a failed freeze", ta.Frozen())
	}
}

func TestFreezeSkipsUnfreezable(t *testing.T) {
	ta := newTestAgent(t, nil)
	ta.freezer.fs = []string{"/", "/fuse", "/data"}
	ta.freezer.skip = "/fuse"
	c := servePipe(t, ta.Agent)
	fr, err := c.Freeze(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fr.Filesystems, []string{"/", "/data"}) {
		t.Errorf("froze %q, want [/ /data]", fr.Filesystems)
	}
	// The result says what was skipped and why, so the host can tell the
	// backup's consistency of each filesystem.
	if len(fr.Skipped) != 1 || !strings.HasPrefix(fr.Skipped[0], "/fuse: ") || !strings.Contains(fr.Skipped[0], "fake") {
		t.Errorf("skipped %q, want one entry for /fuse with its reason", fr.Skipped)
	}
	mustThaw(t, c)
}

func mustFreeze(t testing.TB, c *Client) {
	t.Helper()
	if _, err := c.Freeze(context.Background(), time.Minute); err != nil {
		t.Fatalf("Freeze: %v", err)
	}
}

func mustThaw(t testing.TB, c *Client) {
	t.Helper()
	if err := c.Thaw(context.Background()); err != nil {
		t.Fatalf("Thaw: %v", err)
	}
}

// TestBadLines writes lines by hand and checks each gets a clear error and
// the agent keeps serving.
func TestBadLines(t *testing.T) {
	tests := []struct {
		name     string
		line     string
		wantID   uint64
		wantCode string
		wantMsg  string
	}{
		{"unknown op", `{"v":1,"id":5,"op":"dance"}`, 5, CodeUnknownOp, `"dance"`},
		{"wrong version", `{"v":2,"id":6,"op":"ping"}`, 6, CodeProtocol, "version 2"},
		{"no version", `{"id":7,"op":"ping"}`, 7, CodeProtocol, "version 0"},
		{"malformed json", `{"v":1,"id":8,"op":`, 0, CodeProtocol, "malformed"},
		{"not an object", `[1,2,3]`, 0, CodeProtocol, "malformed"},
		{"bad field type keeps id", `{"v":1,"id":9,"op":"exec","args":"x"}`, 9, CodeProtocol, "malformed"},
		{"id zero", `{"v":1,"id":0,"op":"ping"}`, 0, CodeProtocol, "positive"},
		{"negative id", `{"v":1,"id":-1,"op":"ping"}`, 0, CodeProtocol, "malformed"},
		{"huge id", `{"v":1,"id":184467440737095516160,"op":"ping"}`, 0, CodeProtocol, "malformed"},
		{"no op", `{"v":1,"id":10}`, 10, CodeProtocol, "no op"},
		{"negative deadline", `{"v":1,"id":11,"op":"freeze","deadline_ms":-5}`, 11, CodeProtocol, "negative"},
		{"nul byte", "{\"v\":1,\"id\":12,\"op\":\"ping\x00\"}", 0, CodeProtocol, "malformed"},
		{"trailing garbage", `{"v":1,"id":13,"op":"ping"} x`, 0, CodeProtocol, "malformed"},
		{"oversized", `{"v":1,"id":14,"op":"ping","path":"` + strings.Repeat("a", MaxRequestSize) + `"}`, 0, CodeProtocol, "longer than"},
	}
	ta := newTestAgent(t, nil)
	conn := rawConn(t, ta.Agent)
	br := bufio.NewReader(conn)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			go func() { _, _ = conn.Write([]byte(tt.line + "\n")) }()
			resp := readResponse(t, br)
			if resp.OK || resp.Error == nil {
				t.Fatalf("answer %+v is not an error", resp)
			}
			if resp.V != ProtocolVersion || resp.ID != tt.wantID || resp.Error.Code != tt.wantCode || !strings.Contains(resp.Error.Message, tt.wantMsg) {
				t.Errorf("answer v=%d id=%d error=%+v, want v=1 id=%d code %q message containing %q",
					resp.V, resp.ID, *resp.Error, tt.wantID, tt.wantCode, tt.wantMsg)
			}
			// Still serving on the same stream.
			go func() { _, _ = conn.Write([]byte(`{"v":1,"id":99,"op":"ping"}` + "\n")) }()
			if resp := readResponse(t, br); !resp.OK || resp.ID != 99 || resp.BootID != ta.bootID {
				t.Fatalf("ping after the bad line: %+v", resp)
			}
		})
	}
}

func readResponse(t testing.TB, br *bufio.Reader) Response {
	t.Helper()
	line, err := br.ReadBytes('\n')
	if err != nil {
		t.Fatalf("read answer: %v", err)
	}
	var resp Response
	if err := json.Unmarshal(line, &resp); err != nil {
		t.Fatalf("answer %q is not JSON: %v", line, err)
	}
	return resp
}

func TestConcurrentRequests(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ta := newTestAgent(t, nil)
			c := tr.serve(t, ta.Agent)
			ctx := context.Background()
			var wg sync.WaitGroup
			errs := make(chan error, 100)
			for i := range 40 {
				wg.Go(func() {
					if i%4 == 0 {
						word := fmt.Sprintf("w%d", i)
						res, err := c.Exec(ctx, ExecRequest{Path: "echo", Args: []string{word}})
						if err != nil {
							errs <- err
						} else if string(res.Stdout) != word+"\n" {
							errs <- fmt.Errorf("exec %d got %q: answers crossed", i, res.Stdout)
						}
						return
					}
					p, err := c.Ping(ctx)
					if err != nil {
						errs <- err
					} else if p.BootID != ta.bootID {
						errs <- fmt.Errorf("ping %d got boot id %q", i, p.BootID)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
		})
	}
}

// blockingRunner stands for a program writing to a frozen filesystem: it
// blocks until the fake freezer is thawed.
type blockingRunner struct {
	fz      *fakeFreezer
	started chan struct{}
}

func (r *blockingRunner) Run(ctx context.Context, req ExecRequest) (ExecResult, error) {
	close(r.started)
	if err := r.fz.waitWritable(ctx); err != nil {
		return ExecResult{}, err
	}
	return ExecResult{Stdout: []byte("written")}, nil
}

func TestStuckRequestDoesNotBlockThaw(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			fz := newFakeFreezer("/")
			runner := &blockingRunner{fz: fz, started: make(chan struct{})}
			ta := newTestAgent(t, func(o *AgentOptions) {
				o.Freezer = fz
				o.Runner = runner
			})
			c := tr.serve(t, ta.Agent)
			ctx := context.Background()
			mustFreeze(t, c)

			execDone := make(chan error, 1)
			go func() {
				res, err := c.Exec(ctx, ExecRequest{Path: "/bin/write-something"})
				if err == nil && string(res.Stdout) != "written" {
					err = fmt.Errorf("exec result %q", res.Stdout)
				}
				execDone <- err
			}()
			<-runner.started
			select {
			case err := <-execDone:
				t.Fatalf("exec finished while frozen (err %v): the fake does not block", err)
			default:
			}
			// Ping and thaw get through while the exec is stuck.
			within(t, 2*time.Second, "ping while a request is stuck", func() {
				if _, err := c.Ping(ctx); err != nil {
					t.Errorf("Ping: %v", err)
				}
			})
			within(t, 2*time.Second, "thaw while a request is stuck", func() { mustThaw(t, c) })
			within(t, 2*time.Second, "the stuck exec after thaw", func() {
				if err := <-execDone; err != nil {
					t.Errorf("Exec: %v", err)
				}
			})
		})
	}
}

func TestDeadlineThaw(t *testing.T) {
	ta := newTestAgent(t, nil)
	c := servePipe(t, ta.Agent)
	ctx := context.Background()
	if _, err := c.Freeze(ctx, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	ta.clock.Advance(29 * time.Second)
	if !ta.freezer.isFrozen() {
		t.Fatal("thawed before the deadline")
	}
	ta.clock.Advance(time.Second)
	if ta.freezer.isFrozen() || ta.Frozen() != nil {
		t.Fatal("still frozen at the deadline")
	}
	if err := c.Thaw(ctx); !errors.Is(err, ErrNotFrozen) {
		t.Fatalf("Thaw after the automatic thaw = %v, want ErrNotFrozen", err)
	}
}

func TestDeadlineThawOfEarlierFreezeIsIgnored(t *testing.T) {
	ta := newTestAgent(t, nil)
	c := servePipe(t, ta.Agent)
	ctx := context.Background()
	if _, err := c.Freeze(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	mustThaw(t, c)
	ta.clock.Advance(5 * time.Second)
	if _, err := c.Freeze(ctx, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ta.clock.Advance(6 * time.Second) // past the first freeze's deadline only
	if !ta.freezer.isFrozen() {
		t.Fatal("the first freeze's deadline thawed the second freeze")
	}
	ta.clock.Advance(4 * time.Second)
	if ta.freezer.isFrozen() {
		t.Fatal("the second freeze outlived its deadline")
	}
}

func TestFreezeDeadlineDefaultAndCap(t *testing.T) {
	tests := []struct {
		name    string
		ask     time.Duration
		thawsAt time.Duration
	}{
		{"default", 0, DefaultFreezeDeadline},
		{"capped", 24 * time.Hour, MaxFreezeDeadline},
		{"sub-millisecond rounds up", time.Microsecond, time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ta := newTestAgent(t, nil)
			c := servePipe(t, ta.Agent)
			if _, err := c.Freeze(context.Background(), tt.ask); err != nil {
				t.Fatal(err)
			}
			ta.clock.Advance(tt.thawsAt - time.Nanosecond)
			if !ta.freezer.isFrozen() {
				t.Fatalf("thawed before %s", tt.thawsAt)
			}
			ta.clock.Advance(time.Nanosecond)
			if ta.freezer.isFrozen() {
				t.Fatalf("still frozen at %s", tt.thawsAt)
			}
		})
	}
}

func TestPowerThawsFirst(t *testing.T) {
	ta := newTestAgent(t, nil)
	c := servePipe(t, ta.Agent)
	mustFreeze(t, c)
	if err := c.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ta.freezer.isFrozen() {
		t.Fatal("shutdown left the filesystems frozen")
	}
}

func TestThawAll(t *testing.T) {
	ta := newTestAgent(t, nil)
	c := servePipe(t, ta.Agent)
	mustFreeze(t, c)
	ta.ThawAll()
	if ta.freezer.isFrozen() {
		t.Fatal("ThawAll left the filesystems frozen")
	}
	ta.ThawAll() // nothing frozen: no-op
}

func TestBusy(t *testing.T) {
	fz := newFakeFreezer("/")
	runner := &blockingRunner{fz: fz, started: make(chan struct{})}
	ta := newTestAgent(t, func(o *AgentOptions) {
		o.Freezer = fz
		o.Runner = runner
		o.MaxInFlight = 1
	})
	c := servePipe(t, ta.Agent)
	ctx := context.Background()
	mustFreeze(t, c) // done: its slot is free again
	go func() { _, _ = c.Exec(ctx, ExecRequest{Path: "/x"}) }()
	<-runner.started
	if _, err := c.Ping(ctx); !errors.Is(err, ErrBusy) {
		t.Fatalf("Ping with the only slot taken = %v, want ErrBusy", err)
	}
	// Thaw needs no slot.
	within(t, 2*time.Second, "thaw with every slot taken", func() { mustThaw(t, c) })
}

// stuckPort behaves like a virtio-serial port whose host went away: it
// hands out one request, then a write blocks (as it does with no host
// connected) until Close, and the next read reports EOF.
type stuckPort struct {
	r       io.Reader
	writing chan struct{}
	closed  chan struct{}
	once    sync.Once
	wonce   sync.Once
}

func (p *stuckPort) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if n > 0 {
		return n, nil
	}
	<-p.writing // the answer is stuck by now
	return 0, err
}

func (p *stuckPort) Write(b []byte) (int, error) {
	p.wonce.Do(func() { close(p.writing) })
	<-p.closed
	return 0, os.ErrClosed
}

func (p *stuckPort) Close() error {
	p.once.Do(func() { close(p.closed) })
	return nil
}

func TestServeConnEndsWithAnAnswerStuckInWrite(t *testing.T) {
	ta := newTestAgent(t, nil)
	port := &stuckPort{
		r:       strings.NewReader(`{"v":1,"id":1,"op":"ping"}` + "\n"),
		writing: make(chan struct{}),
		closed:  make(chan struct{}),
	}
	within(t, 5*time.Second, "ServeConn with an answer stuck in Write", func() {
		if err := ta.ServeConn(context.Background(), port); err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
	select {
	case <-port.closed:
	default:
		t.Error("ServeConn returned without closing the port")
	}
}

func TestHostThatStopsReadingLosesItsSession(t *testing.T) {
	ta := newTestAgent(t, func(o *AgentOptions) { o.WriteTimeout = 100 * time.Millisecond })
	srv, cli := net.Pipe()
	defer cli.Close()
	done := make(chan error, 1)
	go func() { done <- ta.ServeConn(context.Background(), srv) }()
	if _, err := io.WriteString(cli, `{"v":1,"id":1,"op":"ping"}`+"\n"); err != nil {
		t.Fatal(err)
	}
	// Never read the answer: the agent gives up on this session.
	within(t, 5*time.Second, "ServeConn with a host that does not read", func() {
		if err := <-done; err != nil {
			t.Errorf("ServeConn: %v", err)
		}
	})
}

func TestSlowSyncDoesNotBlockThaw(t *testing.T) {
	release := make(chan struct{})
	syncing := make(chan struct{}, 1)
	ta := newTestAgent(t, func(o *AgentOptions) {
		o.Sync = func() {
			syncing <- struct{}{}
			<-release
		}
	})
	c := servePipe(t, ta.Agent)
	ctx := context.Background()
	froze := make(chan error, 1)
	go func() { _, err := c.Freeze(ctx, time.Minute); froze <- err }()
	<-syncing
	within(t, 2*time.Second, "thaw during a slow sync", func() {
		if err := c.Thaw(ctx); !errors.Is(err, ErrNotFrozen) {
			t.Errorf("Thaw during the sync = %v, want ErrNotFrozen", err)
		}
	})
	close(release)
	if err := <-froze; err != nil {
		t.Fatalf("Freeze: %v", err)
	}
	mustThaw(t, c)
}
