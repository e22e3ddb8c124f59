package guest

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/clock"
)

// testLogger logs through t.Log so that output shows only for failures;
// goroutines that outlive the test log nowhere.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	w := &tbWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct {
	t    testing.TB
	mu   sync.Mutex
	done bool
}

func (w *tbWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

// fakeProc makes a proc directory with a boot id and an uptime.
func fakeProc(t testing.TB, bootID string, uptime string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "sys/kernel/random"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "sys/kernel/random/boot_id"), []byte(bootID+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "uptime"), []byte(uptime+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// fakeFreezer records freezes and thaws; a filesystem "written" through
// waitWritable blocks while frozen, like a real frozen filesystem.
type fakeFreezer struct {
	fs []string

	mu       sync.Mutex
	frozen   map[string]bool
	log      []string // "freeze /x", "thaw /x" in order
	thawed   chan struct{}
	failOn   string // Freeze of this mount point fails
	skip     string // Freeze of this one wraps ErrNotFreezable
	listErr  error
	freezeCh chan struct{} // if set, Freeze blocks until it is closed
}

func newFakeFreezer(fs ...string) *fakeFreezer {
	return &fakeFreezer{fs: fs, frozen: map[string]bool{}, thawed: make(chan struct{})}
}

func (f *fakeFreezer) Filesystems() ([]string, error) {
	if f.listErr != nil {
		return nil, f.listErr
	}
	return append([]string{}, f.fs...), nil
}

func (f *fakeFreezer) Freeze(mp string) error {
	if f.freezeCh != nil {
		<-f.freezeCh
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch mp {
	case f.failOn:
		return fmt.Errorf("fake: cannot freeze %s", mp)
	case f.skip:
		return fmt.Errorf("%w: fake: %s", ErrNotFreezable, mp)
	}
	if f.frozen[mp] {
		return fmt.Errorf("fake: %s frozen twice", mp)
	}
	if len(f.frozen) == 0 {
		f.thawed = make(chan struct{})
	}
	f.frozen[mp] = true
	f.log = append(f.log, "freeze "+mp)
	return nil
}

func (f *fakeFreezer) Thaw(mp string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.frozen[mp] {
		return fmt.Errorf("fake: %s thawed while not frozen", mp)
	}
	delete(f.frozen, mp)
	f.log = append(f.log, "thaw "+mp)
	if len(f.frozen) == 0 {
		close(f.thawed)
	}
	return nil
}

// waitWritable blocks while any filesystem is frozen.
func (f *fakeFreezer) waitWritable(ctx context.Context) error {
	f.mu.Lock()
	ch := f.thawed
	n := len(f.frozen)
	f.mu.Unlock()
	if n == 0 {
		return nil
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeFreezer) events() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.log...)
}

func (f *fakeFreezer) isFrozen() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.frozen) > 0
}

// fakePower records power actions instead of carrying them out.
type fakePower struct {
	mu      sync.Mutex
	actions []string
	err     error
}

func (p *fakePower) power(_ context.Context, action PowerAction) (func(), error) {
	if p.err != nil {
		return nil, p.err
	}
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		p.actions = append(p.actions, action.String())
	}, nil
}

func (p *fakePower) done() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string{}, p.actions...)
}

// testAgent is an agent with fakes for everything that touches the
// machine, except exec, which runs real programs unless Runner is set.
type testAgent struct {
	*Agent
	freezer *fakeFreezer
	power   *fakePower
	clock   *clock.Manual
	bootID  string
}

func newTestAgent(t testing.TB, mod func(*AgentOptions)) *testAgent {
	t.Helper()
	ta := &testAgent{
		freezer: newFakeFreezer("/", "/data"),
		power:   &fakePower{},
		clock:   clock.NewManual(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)),
		bootID:  "0b5e3a1c-7d4e-4a53-9b0c-1f2e3d4c5b6a",
	}
	opts := AgentOptions{
		Version: "test-1",
		Freezer: ta.freezer,
		Power:   ta.power.power,
		Sync:    func() {},
		Clock:   ta.clock,
		Logger:  testLogger(t),
		ProcDir: fakeProc(t, ta.bootID, "123.45 99.00"),
	}
	if mod != nil {
		mod(&opts)
	}
	ta.Agent = NewAgent(opts)
	return ta
}

// servePipe serves the agent on one end of a net.Pipe and returns a client
// on the other; both end with the test.
func servePipe(t testing.TB, a *Agent, opts ...ClientOption) *Client {
	t.Helper()
	c := NewClient(rawConn(t, a), append([]ClientOption{WithTimeout(5 * time.Second), WithLogger(testLogger(t))}, opts...)...)
	t.Cleanup(func() { c.Close() }) // before rawConn's cleanup stops the agent
	return c
}

// serveUnix serves the agent on a UNIX socket, as QEMU's chardev would
// carry it, and returns a client dialled with DialSerial.
func serveUnix(t testing.TB, a *Agent, opts ...ClientOption) *Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, ln) }()
	conn, err := DialSerial(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	c := NewClient(conn, append([]ClientOption{WithTimeout(5 * time.Second), WithLogger(testLogger(t))}, opts...)...)
	t.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return c
}

// transports are the ways tests reach an agent.
var transports = []struct {
	name  string
	serve func(testing.TB, *Agent, ...ClientOption) *Client
}{
	{"pipe", servePipe},
	{"unix", serveUnix},
}

// rawConn serves the agent on a pipe and returns the raw client end, for
// tests that write lines by hand.
func rawConn(t testing.TB, a *Agent) net.Conn {
	t.Helper()
	srv, cli := net.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = a.ServeConn(ctx, srv)
	}()
	t.Cleanup(func() {
		cli.Close()
		cancel()
		<-done
	})
	return cli
}

// within fails the test if f does not return within d.
func within(t testing.TB, d time.Duration, what string, f func()) {
	t.Helper()
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	select {
	case <-done:
	case <-time.After(d):
		t.Fatalf("%s did not finish within %s", what, d)
	}
}

var _ io.Writer = (*tbWriter)(nil)
