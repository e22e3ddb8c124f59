package mcpserver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
)

// stubHypervisor runs no VM: its "guest" answers ping, freeze and thaw. It
// stands in for QEMU in these tests, whose subject is the MCP boundary:
// everything below it (store, Btrfs pool, snapshots, restore, graveyard)
// is the real appliance. The VM lifecycle with real guests is tested in
// package appliance and cmd/superjolt.
type stubHypervisor struct {
	mu      sync.Mutex
	running map[string]*stubMachine
}

func (h *stubHypervisor) Launch(_, _ context.Context, spec appliance.MachineSpec) (appliance.Machine, error) {
	for _, f := range []string{spec.Kernel, spec.Initrd, spec.Rootfs} {
		if _, err := os.Stat(f); err != nil {
			return nil, err
		}
	}
	id := make([]byte, 16)
	rand.Read(id)
	m := &stubMachine{boot: hex.EncodeToString(id), exited: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.running == nil {
		h.running = map[string]*stubMachine{}
	}
	h.running[spec.ID] = m
	return m, nil
}

func (h *stubHypervisor) Attach(_, _ context.Context, spec appliance.MachineSpec) (appliance.Machine, error) {
	return nil, fmt.Errorf("%w: stub: %s", appliance.ErrNoMachine, spec.ID)
}
func (h *stubHypervisor) Leftovers(string) []string { return nil }
func (h *stubHypervisor) Kill(_, id string) error {
	h.mu.Lock()
	m := h.running[id]
	h.mu.Unlock()
	if m != nil {
		m.Kill()
	}
	return nil
}

type stubMachine struct {
	boot   string
	once   sync.Once
	exited chan struct{}
}

func (m *stubMachine) BootID() string             { return m.boot }
func (m *stubMachine) Rebooted() <-chan struct{}  { return nil }
func (m *stubMachine) Exit() appliance.Exit       { return appliance.ExitUnasked }
func (m *stubMachine) Agent() appliance.Agent     { return m }
func (m *stubMachine) Kill() error                { return m.Shutdown(context.Background()) }
func (m *stubMachine) Detach()                    {}
func (m *stubMachine) Thaw(context.Context) error { return nil }
func (m *stubMachine) Shutdown(context.Context) error {
	m.once.Do(func() { close(m.exited) })
	return nil
}
func (m *stubMachine) Wait(ctx context.Context) error {
	select {
	case <-m.exited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
func (m *stubMachine) Ping(context.Context) (guest.PingResult, error) {
	return guest.PingResult{BootID: m.boot}, nil
}
func (m *stubMachine) Freeze(context.Context, time.Duration) (guest.FreezeResult, error) {
	return guest.FreezeResult{Filesystems: []string{"/"}}, nil
}
func (m *stubMachine) Exec(context.Context, guest.ExecRequest) (guest.ExecResult, error) {
	return guest.ExecResult{}, errors.New("stub: no guest to exec in")
}

// fixture is a real appliance (Badger in memory, a real loop-backed Btrfs
// pool, the stub hypervisor) with accounts A and B, a running VM each and
// real account tokens, served by the remote listener (server.Remote with
// /mcp) over TLS on loopback.
type fixture struct {
	app *appliance.Appliance
	st  *store.Store
	clk *clock.Manual
	// Account ids, VM ids, and the secrets of A's token, a second token of
	// A, A's read-only token and B's token.
	acctA, acctB         string
	vmA, vmB             string
	tokA, tokA2, tokARO  string
	tokB                 string
	url                  string
	hc                   *http.Client
	certPEM              []byte
	principalA, principB model.Principal
}

var t0 = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func newFixture(t testing.TB) *fixture {
	t.Helper()
	pool := btrfstest.NewPool(t, 0)
	ctx := context.Background()
	if err := pool.CreateImage(ctx, appliance.DefaultImage, func(dir string) error {
		for _, f := range []string{appliance.KernelFile, appliance.InitrdFile} {
			if err := os.WriteFile(filepath.Join(dir, f), []byte("not a kernel\n"), 0o644); err != nil {
				return err
			}
		}
		return os.WriteFile(filepath.Join(dir, appliance.RootfsFile), make([]byte, 64<<10), 0o644)
	}); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(ctx, store.Options{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	clk := clock.NewManual(t0)
	app, err := appliance.New(ctx, appliance.Options{
		Store: st, Pool: pool, Clock: clk, RunDir: t.TempDir(), Hypervisor: &stubHypervisor{},
		Subnet: netip.MustParsePrefix("10.77.0.0/24"), HostMemoryMiB: 64 << 10,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.CloseAndHalt() })
	f := &fixture{app: app, st: st, clk: clk}
	for i, name := range []string{"alice", "bob"} {
		acct, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: name, Balance: 50 * model.Credit})
		if err != nil {
			t.Fatal(err)
		}
		op, err := app.SubmitCreateVM(ctx, appliance.CreateVMRequest{AccountID: acct.ID, Tier: "nano", Name: name + "-web"})
		if err != nil {
			t.Fatal(err)
		}
		waitOp(t, app, op.ID)
		if i == 0 {
			f.acctA, f.vmA = acct.ID, op.VMID
		} else {
			f.acctB, f.vmB = acct.ID, op.VMID
		}
	}
	tok := func(acct, name string, ro bool) string {
		_, secret, err := app.CreateToken(ctx, appliance.CreateTokenRequest{AccountID: acct, Name: name, ReadOnly: ro})
		if err != nil {
			t.Fatal(err)
		}
		return secret
	}
	f.tokA, f.tokA2, f.tokARO, f.tokB = tok(f.acctA, "claude", false), tok(f.acctA, "laptop", false), tok(f.acctA, "dashboard", true), tok(f.acctB, "mallory", false)
	if f.principalA, err = app.Authenticate(ctx, f.tokA); err != nil {
		t.Fatal(err)
	}
	if f.principB, err = app.Authenticate(ctx, f.tokB); err != nil {
		t.Fatal(err)
	}
	// Old enough for the graveyard.
	if _, err := app.AdvanceClock(ctx, 2*time.Hour); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	rm := server.NewRemote(app, server.RemoteOptions{Auth: app, Recorder: app, Logger: log,
		MCP: Handler(app, HTTPOptions{Recorder: app, Logger: log})}, server.Options{Logger: log})
	ts := httptest.NewUnstartedServer(rm)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f.url, f.hc = ts.URL, ts.Client()
	f.certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	return f
}

func waitOp(t testing.TB, app *appliance.Appliance, id string) model.Operation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	op, err := app.Operation(ctx, id)
	for err == nil && op.State == model.OpRunning && ctx.Err() == nil {
		op, err = app.WaitOperation(ctx, id, op.Step)
	}
	if err != nil || op.State != model.OpDone {
		t.Fatalf("operation %s: %+v, %v", id, op, err)
	}
	return op
}

// digest hashes every key and value of the store.
func digest(t testing.TB, st *store.Store) string {
	t.Helper()
	d, err := st.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// bearerRT adds a bearer token to every request.
type bearerRT struct {
	tok string
	rt  http.RoundTripper
}

func (b bearerRT) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

// httpSession connects the go-sdk's client to /mcp with a token.
func (f *fixture) httpSession(t testing.TB, tok string) *mcp.ClientSession {
	t.Helper()
	hc := &http.Client{Transport: bearerRT{tok: tok, rt: f.hc.Transport}}
	c := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil)
	cs, err := c.Connect(context.Background(), &mcp.StreamableClientTransport{Endpoint: f.url + "/mcp", HTTPClient: hc,
		DisableStandaloneSSE: true, MaxRetries: -1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// memSession connects the go-sdk's client in memory to a server over b.
func memSession(t testing.TB, b Backend, opts Options) *mcp.ClientSession {
	t.Helper()
	ct, st := mcp.NewInMemoryTransports()
	ctx := context.Background()
	ss, err := New(b, opts).Connect(ctx, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	cs, err := mcp.NewClient(&mcp.Implementation{Name: "test", Version: "1"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	return cs
}

// call calls a tool; the result's text when it is an error, else its
// structured content decoded into out (when not nil).
func call(t testing.TB, cs *mcp.ClientSession, tool string, args any, out any) (errText string) {
	t.Helper()
	res, err := cs.CallTool(context.Background(), &mcp.CallToolParams{Name: tool, Arguments: args})
	if err != nil {
		return "protocol error: " + err.Error()
	}
	if res.IsError {
		var s string
		for _, c := range res.Content {
			if tc, ok := c.(*mcp.TextContent); ok {
				s += tc.Text
			}
		}
		if s == "" {
			s = "(error without text)"
		}
		return s
	}
	if out != nil {
		b, err := json.Marshal(res.StructuredContent)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v in %s", tool, err, b)
		}
	}
	return ""
}

// mustCall is call that fails the test on a tool error.
func mustCall(t testing.TB, cs *mcp.ClientSession, tool string, args any, out any) {
	t.Helper()
	if e := call(t, cs, tool, args, out); e != "" {
		t.Fatalf("%s %v: %s", tool, args, e)
	}
}

// follow waits for an operation with get_operation.
func follow(t testing.TB, cs *mcp.ClientSession, op OperationView) OperationView {
	t.Helper()
	for i := 0; op.State == string(model.OpRunning) && i < 10; i++ {
		mustCall(t, cs, ToolGetOperation, map[string]any{"operation": op.ID, "waitSeconds": 10}, &op)
	}
	if op.State != string(model.OpDone) {
		t.Fatalf("operation %s ended %s: %s", op.ID, op.State, op.Error)
	}
	return op
}
