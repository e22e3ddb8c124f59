package mcpserver

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
)

const initBody = `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"curl","version":"1"}}}`

// post sends a raw JSON-RPC body to /mcp with a token ("" none).
func (f *fixture) post(t testing.TB, tok, method, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+"/mcp", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json, text/event-stream")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestHTTPBoundary: /mcp is behind the remote API's authentication: no,
// malformed, unknown, revoked or expired tokens are 401 before any MCP is
// spoken; oversized and malformed bodies get clear errors; nothing changes.
func TestHTTPBoundary(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	tk, revoked, err := f.app.CreateToken(ctx, appliance.CreateTokenRequest{AccountID: f.acctA, Name: "old"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.app.RevokeToken(ctx, tk.ID); err != nil {
		t.Fatal(err)
	}
	_, expiring, err := f.app.CreateToken(ctx, appliance.CreateTokenRequest{AccountID: f.acctA, Name: "brief", ExpiresIn: model.MinTokenLifetime})
	if err != nil {
		t.Fatal(err)
	}
	f.app.AdvanceClock(ctx, model.MinTokenLifetime+time.Minute)

	if code, body := f.post(t, f.tokA, http.MethodPost, initBody); code != 200 || !strings.Contains(body, `"serverInfo"`) {
		t.Fatalf("initialize with a good token: %d %s", code, body)
	}
	before := digest(t, f.st)
	for _, c := range []struct {
		name, tok, method, body string
		code                    int
		want                    string
	}{
		{"no token", "", http.MethodPost, initBody, 401, "account token"},
		{"malformed token", "a b", http.MethodPost, initBody, 401, "Bearer"},
		{"unknown token", "sjt_tk-aaaaaaaaaa_" + strings.Repeat("A", 43), http.MethodPost, initBody, 401, ""},
		{"revoked token", revoked, http.MethodPost, initBody, 401, ""},
		{"expired token", expiring, http.MethodPost, initBody, 401, ""},
		{"oversized body", f.tokA, http.MethodPost, `{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"x":"` + strings.Repeat("x", MaxBodyBytes) + `"}}`, 413, ""},
		{"not JSON", f.tokA, http.MethodPost, `{{{`, 400, ""},
		{"GET", f.tokA, http.MethodGet, "", 405, ""},
		{"unknown method", f.tokA, http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/destroy_everything","params":{}}`, 400, "unsupported"},
		{"unknown tool", f.tokA, http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"rm_rf","arguments":{}}}`, 200, "unknown tool"},
		{"destroy without confirm", f.tokA, http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"destroy_vm","arguments":{"vm":"` + f.vmA + `"}}}`, 200, "confirm"},
		{"destroy with a forged confirm", f.tokA, http.MethodPost, `{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"destroy_vm","arguments":{"vm":"` + f.vmA + `","confirm":"sjc1.` + strings.Repeat("A", 54) + `"}}}`, 200, "confirmation refused"},
	} {
		code, body := f.post(t, c.tok, c.method, c.body)
		if code != c.code || !strings.Contains(strings.ToLower(body), strings.ToLower(c.want)) {
			t.Errorf("%s: %d %.300s; want %d mentioning %q", c.name, code, body, c.code, c.want)
		}
		if digest(t, f.st) != before {
			t.Fatalf("%s changed the store", c.name)
		}
	}
}
