package api

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// serveRaw answers every request with body and headers, on a UNIX socket,
// for a client to read.
func serveRaw(t *testing.T, body string, headers map[string]string) *Client {
	t.Helper()
	dir, err := os.MkdirTemp("", "sjapi")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		for k, v := range headers {
			w.Header().Set(k, v)
		}
		_, _ = w.Write([]byte(body))
	})}
	go srv.Serve(ln)
	c := NewClient(sock)
	t.Cleanup(func() { c.Close(); srv.Close() })
	return c
}

// TestListDecoding: the client's list decoder reads what encoding/json
// reads, escapes and all, whatever sizes the headers claim, and refuses
// what is not one JSON list.
func TestListDecoding(t *testing.T) {
	ctx := context.Background()
	body := `[{"id":"vm-abc123","name":"web-1","domains":["a\u003cb.example.com","caf\u00e9"]},` + "\n" + `{"id":"vm-abc124","stop_reason":"\"quoted\" \\ slash"}]` + "\n"
	for _, h := range []map[string]string{nil, {CountHeader: "2"}, {CountHeader: "1000000000"}, {CountHeader: "-4"}, {CountHeader: "1", NextCursorHeader: "abc"}} {
		c := serveRaw(t, body, h)
		vms, next, err := c.VMPage(ctx, VMFilter{}, Page{})
		if err != nil || len(vms) != 2 {
			t.Fatalf("headers %v: VMPage = %d VMs, %v", h, len(vms), err)
		}
		if vms[0].Domains[0] != "a<b.example.com" || vms[0].Domains[1] != "café" || vms[1].StopReason != `"quoted" \ slash` || vms[1].ID != "vm-abc124" {
			t.Errorf("headers %v: decoded %+v", h, vms)
		}
		if next != h[NextCursorHeader] {
			t.Errorf("headers %v: next cursor %q", h, next)
		}
	}
	for _, bad := range []string{`[{"id":"vm-abc123"}] [`, `[{"id":`, `{"id":"vm-abc123"}`, `[{"id":"vm-abc123"}]x`} {
		c := serveRaw(t, bad, nil)
		if vms, _, err := c.VMPage(ctx, VMFilter{}, Page{}); err == nil || !strings.Contains(err.Error(), "cannot read the answer") {
			t.Errorf("body %s: VMPage = %v, %v; want an error", bad, vms, err)
		}
	}
	c := serveRaw(t, "[]\n", map[string]string{CountHeader: "0"})
	if vms, err := c.VMs(ctx, VMFilter{}); err != nil || vms == nil || len(vms) != 0 {
		t.Errorf("empty list = %#v, %v; want an empty, non-nil list", vms, err)
	}
}
