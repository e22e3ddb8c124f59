package mcpserver

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/api/server"
)

// BenchmarkListVMs: an authenticated list of the account's VMs over the
// remote API (HTTPS, a token), over MCP at /mcp (HTTPS, the same token, one
// tools/call), against the operator's UNIX-socket API, on the same real
// appliance. Run: go test ./appliance/mcpserver -run '^$' -bench ListVMs
func BenchmarkListVMs(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()

	dir, err := os.MkdirTemp("", "sjmcp")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	sctx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	ln, err := server.Listen(sctx, filepath.Join(dir, "api.sock"))
	if err != nil {
		b.Fatal(err)
	}
	go server.New(f.app, server.Options{Logger: slog.New(slog.DiscardHandler)}).Serve(sctx, ln)
	sock := api.NewClient(filepath.Join(dir, "api.sock"))
	b.Cleanup(func() { sock.Close() })
	remote, err := api.NewRemoteClient(api.RemoteOptions{Server: f.url, Token: f.tokA, CAPEM: f.certPEM})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { remote.Close() })
	cs := f.httpSession(b, f.tokA)

	b.Run("socket", func(b *testing.B) {
		for b.Loop() {
			if _, err := sock.VMs(ctx, api.VMFilter{AccountID: f.acctA}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("https", func(b *testing.B) {
		for b.Loop() {
			if vms, err := remote.VMs(ctx, api.VMFilter{}); err != nil || len(vms) != 1 {
				b.Fatal(vms, err)
			}
		}
	})
	b.Run("mcp", func(b *testing.B) {
		for b.Loop() {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: ToolListVMs, Arguments: map[string]any{}})
			if err != nil || res.IsError {
				b.Fatal(res, err)
			}
		}
	})
}
