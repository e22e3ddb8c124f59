package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/vishvananda/netns"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// dialIn dials from inside the named network namespace ns (where the
// daemon's loopback listener is): the socket is made on a thread moved
// there, and stays there.
func dialIn(ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		orig, err := netns.Get()
		if err != nil {
			return nil, err
		}
		defer orig.Close()
		h, err := netns.GetFromName(ns)
		if err != nil {
			return nil, err
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			return nil, err
		}
		defer netns.Set(orig)
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

type bearer struct {
	tok string
	rt  http.RoundTripper
}

func (b bearer) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set("Authorization", "Bearer "+b.tok)
	return b.rt.RoundTrip(r)
}

// mcpCall calls a tool and decodes its structured content into out; it
// returns the error text of a tool error.
func mcpCall(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, out any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: tool, Arguments: args})
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
		return s
	}
	if out != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("%s: %v in %s", tool, err, b)
		}
	}
	return ""
}

func mcpOK(t *testing.T, cs *mcp.ClientSession, tool string, args map[string]any, out any) {
	t.Helper()
	if e := mcpCall(t, cs, tool, args, out); e != "" {
		t.Fatalf("%s %v: %s", tool, args, e)
	}
}

// mcpOp is what the tools say of an operation; mcpPreview the first phase
// of a destructive one.
type mcpOp struct {
	ID, Kind, VM, Backup, State, Step, Error string
}

type mcpDestructive struct {
	Done    bool `json:"done"`
	Preview *struct {
		Lost, Undo, Confirm string
	} `json:"preview"`
	Operation *mcpOp `json:"operation"`
}

func mcpFollow(t *testing.T, cs *mcp.ClientSession, op mcpOp) mcpOp {
	t.Helper()
	for i := 0; op.State == "running" && i < 20; i++ {
		mcpOK(t, cs, "get_operation", map[string]any{"operation": op.ID, "waitSeconds": 30}, &op)
	}
	if op.State != "done" {
		t.Fatalf("operation %s: %s %s", op.ID, op.State, op.Error)
	}
	return op
}

// TestMCPEndToEnd: the go-sdk's MCP client, over stdio (`superjolt mcp
// --server --token`, the tenant's way, in the daemon's namespace) and over
// HTTPS (superjoltd's /mcp on --listen), with real account tokens, against
// a real superjoltd with a real guest: list, backup, list newest first,
// "restore from yesterday" after a clock advance (two-phase: the first
// call changes nothing), destroy (two-phase) -> graveyard -> resume_vm;
// Bob's token gets "not found" for Alice's VM as for a missing one.
func TestMCPEndToEnd(t *testing.T) {
	needVMs(t)
	ns := newNetns(t, "sjmcp")
	port := "8443"
	d := startDaemonIn(t, ns, nil, "--clock=manual", "--network=off", "--listen", "127.0.0.1:"+port, "--listen-name", "box.test")
	okJSON[model.Account](t, d, "account", "create", "alice", "--balance", "50")
	okJSON[model.Account](t, d, "account", "create", "bob", "--balance", "50")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", "alice", "--tier", "nano", "--name", "web")
	// Old enough for the graveyard.
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "2h")
	secret := func(acct string, args ...string) string {
		return okJSON[api.CreatedToken](t, d, append([]string{"account", "token", "create", acct}, args...)...).Secret
	}
	aliceTok, bobTok := secret("alice", "--name", "assistant"), secret("bob", "--name", "bobs")
	caPEM := d.ok(t, "ca")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(caPEM), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	client := mcp.NewClient(&mcp.Implementation{Name: "e2e", Version: "1"}, nil)

	// stdio: superjolt mcp as an assistant would start it.
	cmd := exec.Command("ip", "netns", "exec", ns, filepath.Join(d.bin, "superjolt"), "mcp",
		"--server", "https://127.0.0.1:"+port, "--ca", ca)
	cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET=/nonexistent", "SUPERJOLT_TOKEN="+aliceTok)
	stdio, err := client.Connect(ctx, &mcp.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatalf("superjolt mcp: %v", err)
	}
	defer stdio.Close()

	// HTTPS: /mcp on the remote listener.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(caPEM))
	httpFor := func(tok string) *mcp.ClientSession {
		tr := &http.Transport{DialContext: dialIn(ns), TLSClientConfig: &tls.Config{RootCAs: pool}}
		cs, err := client.Connect(ctx, &mcp.StreamableClientTransport{Endpoint: "https://127.0.0.1:" + port + "/mcp",
			HTTPClient: &http.Client{Transport: bearer{tok, tr}}, DisableStandaloneSSE: true, MaxRetries: -1}, nil)
		if err != nil {
			t.Fatalf("/mcp: %v", err)
		}
		t.Cleanup(func() { cs.Close() })
		return cs
	}
	web, bob := httpFor(aliceTok), httpFor(bobTok)

	for name, cs := range map[string]*mcp.ClientSession{"stdio": stdio, "https": web} {
		tools, err := cs.ListTools(ctx, nil)
		if err != nil || len(tools.Tools) != 13 {
			t.Fatalf("%s: tools/list: %v, %d tools", name, err, len(tools.Tools))
		}
		var vms struct{ VMs []struct{ ID, State string } }
		mcpOK(t, cs, "list_vms", map[string]any{}, &vms)
		if len(vms.VMs) != 1 || vms.VMs[0].ID != vm.ID || vms.VMs[0].State != "running" {
			t.Fatalf("%s: list_vms = %+v", name, vms)
		}
		var acct struct {
			Balance         string
			Runway          string
			BackupRetention int
		}
		mcpOK(t, cs, "get_account", map[string]any{}, &acct)
		if acct.BackupRetention != model.DefaultBackupRetention || acct.Runway == "" {
			t.Fatalf("%s: get_account = %+v", name, acct)
		}
	}
	missing := mcpCall(t, bob, "get_vm", map[string]any{"vm": "vm-zzzzzz"}, nil)
	theirs := mcpCall(t, bob, "get_vm", map[string]any{"vm": vm.ID}, nil)
	if theirs == "" || strings.ReplaceAll(theirs, vm.ID, "vm-zzzzzz") != missing {
		t.Fatalf("bob's get_vm of alice's VM = %q; of a missing one %q", theirs, missing)
	}
	if e := mcpCall(t, bob, "create_backup", map[string]any{"vm": vm.ID}, nil); !strings.Contains(e, "not found") && !strings.Contains(e, "does not exist") {
		t.Fatalf("bob's create_backup of alice's VM = %q", e)
	}

	// A backup yesterday (over stdio), one today (over HTTPS).
	var op mcpOp
	mcpOK(t, stdio, "create_backup", map[string]any{"vm": vm.ID}, &op)
	yesterday := mcpFollow(t, stdio, op).Backup
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "25h")
	mcpOK(t, web, "create_backup", map[string]any{"vm": vm.ID}, &op)
	today := mcpFollow(t, web, op).Backup
	var bl struct {
		Backups []struct {
			ID, Kind, TakenAt, Consistency string
			SizeBytes                      int64
		}
	}
	mcpOK(t, web, "list_backups", map[string]any{"vm": vm.ID}, &bl)
	if len(bl.Backups) < 2 || bl.Backups[0].ID != today {
		t.Fatalf("list_backups = %+v; want %s first", bl, today)
	}
	for i, b := range bl.Backups {
		if i > 0 && b.TakenAt > bl.Backups[i-1].TakenAt || b.Kind == "" || b.Consistency != "frozen" || b.SizeBytes < 0 {
			t.Fatalf("list_backups = %+v", bl)
		}
	}

	// What the operator sees, to tell that a first call changed nothing.
	state := func() string {
		return d.ok(t, "vm", "show", vm.ID, "-o", "json") + d.ok(t, "backup", "list", vm.ID, "-o", "json") + d.ok(t, "op", "list", "-o", "json")
	}
	before := state()
	var pre mcpDestructive
	mcpOK(t, stdio, "restore_vm_from_backup", map[string]any{"vm": vm.ID, "backup": "yesterday"}, &pre)
	if pre.Done || pre.Preview == nil || pre.Preview.Confirm == "" || !strings.Contains(pre.Preview.Lost, "since") {
		t.Fatalf("restore preview = %+v", pre)
	}
	if state() != before {
		t.Fatal("the first call of restore_vm_from_backup changed something")
	}
	// Not over HTTPS: the confirmation is the stdio server's.
	if e := mcpCall(t, web, "restore_vm_from_backup", map[string]any{"vm": vm.ID, "backup": "yesterday", "confirm": pre.Preview.Confirm}, nil); !strings.Contains(e, "confirmation refused") {
		t.Fatalf("a confirmation replayed elsewhere = %q", e)
	}
	var done mcpDestructive
	mcpOK(t, stdio, "restore_vm_from_backup", map[string]any{"vm": vm.ID, "backup": "yesterday", "confirm": pre.Preview.Confirm}, &done)
	if !done.Done || done.Operation == nil {
		t.Fatalf("restore = %+v", done)
	}
	rop := mcpFollow(t, stdio, *done.Operation)
	if rop.Kind != "restore" {
		t.Fatalf("restore operation = %+v", rop)
	}
	_ = yesterday

	// Destroy over HTTPS, two-phase; graveyard; resume over stdio.
	before = state()
	mcpOK(t, web, "destroy_vm", map[string]any{"vm": vm.ID}, &pre)
	if pre.Done || pre.Preview == nil || !strings.Contains(pre.Preview.Undo, "graveyard") {
		t.Fatalf("destroy preview = %+v", pre)
	}
	if state() != before {
		t.Fatal("the first call of destroy_vm changed something")
	}
	if e := mcpCall(t, bob, "destroy_vm", map[string]any{"vm": vm.ID, "confirm": pre.Preview.Confirm}, nil); !strings.Contains(e, "not found") && !strings.Contains(e, "does not exist") {
		t.Fatalf("bob's destroy_vm of alice's VM with her confirmation = %q", e)
	}
	mcpOK(t, web, "destroy_vm", map[string]any{"vm": vm.ID, "confirm": pre.Preview.Confirm}, &done)
	mcpFollow(t, web, *done.Operation)
	var got struct{ State, ReclaimAt string }
	mcpOK(t, stdio, "get_vm", map[string]any{"vm": vm.ID}, &got)
	if got.State != "graveyard" || got.ReclaimAt == "" {
		t.Fatalf("after destroy_vm: %+v", got)
	}
	mcpOK(t, stdio, "resume_vm", map[string]any{"vm": vm.ID}, &op)
	mcpFollow(t, stdio, op)
	mcpOK(t, web, "get_vm", map[string]any{"vm": vm.ID}, &got)
	if got.State != "running" {
		t.Fatalf("after resume_vm: %+v", got)
	}
	// The operator's stdio server, over the socket: every account's VMs;
	// get_account asks which account.
	op2 := exec.Command(filepath.Join(d.bin, "superjolt"), "mcp", "--read-only")
	op2.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+d.socket)
	operator, err := client.Connect(ctx, &mcp.CommandTransport{Command: op2}, nil)
	if err != nil {
		t.Fatalf("superjolt mcp (operator): %v", err)
	}
	defer operator.Close()
	if tools, err := operator.ListTools(ctx, nil); err != nil || len(tools.Tools) != 5 {
		t.Fatalf("superjolt mcp --read-only: %v, %+v", err, tools)
	}
	if e := mcpCall(t, operator, "get_account", map[string]any{}, nil); !strings.Contains(e, "say which account") {
		t.Fatalf("the operator's get_account without an account = %q", e)
	}
	var ovms struct {
		VMs []struct{ ID, Account string }
	}
	mcpOK(t, operator, "list_vms", map[string]any{}, &ovms)
	if len(ovms.VMs) != 1 || ovms.VMs[0].ID != vm.ID {
		t.Fatalf("the operator's list_vms = %+v", ovms)
	}

	if ev := d.ok(t, "events", "--tail", "40"); !strings.Contains(ev, "assistant") || !strings.Contains(ev, "MCP destroy_vm") {
		t.Fatalf("no event names the token's MCP actions:\n%s", ev)
	}
}
