package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// serve serves app on a UNIX socket in a temporary directory for the
// length of the test and returns a client for it.
func serve(tb testing.TB, app Appliance) (*api.Client, string) {
	tb.Helper()
	// UNIX socket paths are limited to 108 bytes; t.TempDir() can be long.
	dir, err := os.MkdirTemp("", "sjapi")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, path)
	if err != nil {
		tb.Fatal(err)
	}
	srv := New(app, Options{Logger: slog.New(slog.DiscardHandler)})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	c := api.NewClient(path)
	tb.Cleanup(func() {
		c.Close()
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("Serve: %v", err)
		}
	})
	return c, path
}

// rawDo sends a raw request over the socket and returns status and body.
func rawDo(tb testing.TB, socket, method, path, contentType string, body []byte) (int, []byte) {
	tb.Helper()
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", socket)
	}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://x"+path, bytes.NewReader(body))
	if err != nil {
		tb.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := hc.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("%w: vm-abc123 does not exist", model.ErrNotFound), 404, "not_found"},
		{fmt.Errorf("%w: bad name", model.ErrInvalid), 400, "invalid"},
		{fmt.Errorf("%w: vm-abc123 is being restored", model.ErrConflict), 409, "conflict"},
		{fmt.Errorf("%w: balance is 0", model.ErrInsufficientFunds), 402, "insufficient_funds"},
		{fmt.Errorf("%w: agent did not answer", model.ErrUnavailable), 503, "unavailable"},
		{fmt.Errorf("%w: the pool is full", model.ErrNoSpace), 507, "no_space"},
		{errors.New("disk on fire"), 500, "internal"},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			app := &errApp{err: tt.err}
			c, sock := serve(t, app)

			// On the wire: the status and the JSON shape.
			status, body := rawDo(t, sock, "GET", "/v1/vms/vm-abc123", "", nil)
			if status != tt.status {
				t.Errorf("status = %d, want %d", status, tt.status)
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil {
				t.Fatalf("error body %q is not JSON: %v", body, err)
			}
			if eb.Error.Code != tt.code || eb.Error.Message != tt.err.Error() {
				t.Errorf("error body = %+v, want code %q and message %q", eb.Error, tt.code, tt.err)
			}

			// Through the client: the category survives the socket.
			_, err := c.VM(context.Background(), "vm-abc123")
			var ae *api.Error
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("client error = %#v, want *api.Error with status %d code %q", err, tt.status, tt.code)
			}
			for _, cat := range []error{model.ErrNotFound, model.ErrInvalid, model.ErrConflict, model.ErrInsufficientFunds, model.ErrUnavailable, model.ErrNoSpace} {
				if want := errors.Is(tt.err, cat); errors.Is(err, cat) != want {
					t.Errorf("errors.Is(client error, %v) = %v, want %v", cat, !want, want)
				}
			}
			if model.Code(err) != tt.code {
				t.Errorf("model.Code(client error) = %q, want %q", model.Code(err), tt.code)
			}
		})
	}
}

// TestBadRequestsNeverReachTheAppliance sends malformed requests and checks
// that each is refused as invalid before the appliance is called.
func TestBadRequestsNeverReachTheAppliance(t *testing.T) {
	tests := []struct {
		name, method, path, ctype, body string
		status                          int
	}{
		{"malformed vm id", "GET", "/v1/vms/vm-ABC123", "", "", 400},
		{"vm id of wrong kind", "POST", "/v1/vms/ac-abc123/stop", "", "", 400},
		{"path traversal id", "GET", "/v1/vms/vm-..%2F..", "", "", 400},
		{"malformed account id", "GET", "/v1/accounts/alice", "", "", 400},
		{"malformed backup id", "DELETE", "/v1/backups/bk-1", "", "", 400},
		{"malformed operation id", "GET", "/v1/operations/op-x", "", "", 400},
		{"negative top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":-5}`, 400},
		{"zero top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":0}`, 400},
		{"absurd top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":9000000000000000000}`, 400},
		{"overflowing top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":99999999999999999999}`, 400},
		{"fractional top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":1.5}`, 400},
		{"string top-up", "POST", "/v1/accounts/ac-abc123/topup", "application/json", `{"amount":"10"}`, 400},
		{"unknown field", "POST", "/v1/accounts", "application/json", `{"name":"alice","admin":true}`, 400},
		{"trailing data", "POST", "/v1/accounts", "application/json", `{"name":"alice"}{"name":"bob"}`, 400},
		{"empty body", "POST", "/v1/accounts", "application/json", ``, 400},
		{"not json", "POST", "/v1/accounts", "application/json", `name=alice`, 400},
		{"array body", "POST", "/v1/accounts", "application/json", `[{"name":"alice"}]`, 400},
		{"wrong content type", "POST", "/v1/accounts", "text/plain", `{"name":"alice"}`, 400},
		{"too large", "POST", "/v1/accounts", "application/json", `{"name":"` + strings.Repeat("a", api.MaxRequestBytes) + `"}`, 400},
		{"bad account name", "POST", "/v1/accounts", "application/json", `{"name":" alice"}`, 400},
		{"negative balance", "POST", "/v1/accounts", "application/json", `{"name":"alice","balance":-1}`, 400},
		{"retention out of range", "POST", "/v1/accounts", "application/json", `{"name":"alice","backup_retention":1000}`, 400},
		{"adjust by zero", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":0,"reason":"nothing"}`, 400},
		{"adjust without reason", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":-1}`, 400},
		{"adjust blank reason", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":-1,"reason":"  "}`, 400},
		{"adjust overlong reason", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":5,"reason":"` + strings.Repeat("x", model.MaxReasonLen+1) + `"}`, 400},
		{"adjust reason with newline", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":5,"reason":"a\nb"}`, 400},
		{"adjust absurd", "POST", "/v1/accounts/ac-abc123/adjust", "application/json", `{"amount":-1000000000000001,"reason":"x"}`, 400},
		{"token of malformed account", "POST", "/v1/accounts/alice/tokens", "application/json", `{"name":"laptop"}`, 400},
		{"token list of malformed account", "GET", "/v1/accounts/ac-ABC/tokens", "", "", 400},
		{"token bad name", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"name":" laptop"}`, 400},
		{"token name with newline", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"name":"a\nb"}`, 400},
		{"token overlong name", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"name":"` + strings.Repeat("x", model.MaxTokenNameLen+1) + `"}`, 400},
		{"token expiry a number", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"expires_in":3600}`, 400},
		{"token expiry word", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"expires_in":"a month"}`, 400},
		{"token expiry negative", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"expires_in":"-1h"}`, 400},
		{"token expiry too short", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"expires_in":"10s"}`, 400},
		{"token expiry too long", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"expires_in":"3651d"}`, 400},
		{"token read_only a string", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"read_only":"yes"}`, 400},
		{"token asks for its secret", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"secret":"sjt_mine"}`, 400},
		{"token asks for another account", "POST", "/v1/accounts/ac-abc123/tokens", "application/json", `{"account_id":"ac-zzzzzz"}`, 400},
		{"revoke malformed token", "POST", "/v1/tokens/tk-1/revoke", "", "", 400},
		{"revoke an account id", "POST", "/v1/tokens/ac-abc123/revoke", "", "", 400},
		{"revoke with a body", "POST", "/v1/tokens/tk-0123456789/revoke", "application/json", `{"now":true}`, 400},
		{"vm without account", "POST", "/v1/vms", "application/json", `{"tier":"small"}`, 400},
		{"vm bad name", "POST", "/v1/vms", "application/json", `{"account_id":"ac-abc123","tier":"small","name":"Web_1"}`, 400},
		{"vm bad image", "POST", "/v1/vms", "application/json", `{"account_id":"ac-abc123","tier":"small","image":"../etc"}`, 400},
		{"vm private key", "POST", "/v1/vms", "application/json", `{"account_id":"ac-abc123","tier":"small","ssh_keys":["-----BEGIN OPENSSH PRIVATE KEY-----"]}`, 400},
		{"vm not a key", "POST", "/v1/vms", "application/json", `{"account_id":"ac-abc123","tier":"small","ssh_keys":["hello"]}`, 400},
		{"account keys not a key", "PUT", "/v1/accounts/ac-abc123/ssh-keys", "application/json", `{"ssh_keys":["ssh-ed25519 AAAA"]}`, 400},
		{"vm list bad state", "GET", "/v1/vms?state=deleted", "", "", 400},
		{"vm list unknown param", "GET", "/v1/vms?owner=me", "", "", 400},
		{"vm list bad name prefix", "GET", "/v1/vms?name_prefix=Web", "", "", 400},
		{"vm list bad image", "GET", "/v1/vms?image=../etc", "", "", 400},
		{"vm list limit zero", "GET", "/v1/vms?limit=0", "", "", 400},
		{"vm list limit huge", "GET", "/v1/vms?limit=1001", "", "", 400},
		{"vm list limit not a number", "GET", "/v1/vms?limit=all", "", "", 400},
		{"vm list limit twice", "GET", "/v1/vms?limit=5&limit=6", "", "", 400},
		{"vm usage with a param", "GET", "/v1/vms/usage?vm=vm-abc123", "", "", 400},
		{"backup list bad account", "GET", "/v1/backups?account=alice", "", "", 400},
		{"backup list vm id as account", "GET", "/v1/backups?account=vm-abc123", "", "", 400},
		{"backup list bad vm", "GET", "/v1/backups?vm=vm-1", "", "", 400},
		{"backup list unknown param", "GET", "/v1/backups?state=running", "", "", 400},
		{"backup list param twice", "GET", "/v1/backups?vm=vm-abc123&vm=vm-abc124", "", "", 400},
		{"backup list bad kind", "GET", "/v1/backups?kind=daily", "", "", 400},
		{"backup list negative limit", "GET", "/v1/backups?limit=-1", "", "", 400},
		{"stop with a body", "POST", "/v1/vms/vm-abc123/stop", "application/json", `{"force":true}`, 400},
		{"exec without program", "POST", "/v1/vms/vm-abc123/exec", "application/json", `{"args":["x"]}`, 400},
		{"exec negative timeout", "POST", "/v1/vms/vm-abc123/exec", "application/json", `{"path":"ls","timeout":"-1s"}`, 400},
		{"exec bad timeout", "POST", "/v1/vms/vm-abc123/exec", "application/json", `{"path":"ls","timeout":"soon"}`, 400},
		{"exec stdin not base64", "POST", "/v1/vms/vm-abc123/exec", "application/json", `{"path":"cat","stdin":"%%%"}`, 400},
		{"port zero", "POST", "/v1/vms/vm-abc123/ports", "application/json", `{"proto":"tcp","number":0}`, 400},
		{"port too big", "POST", "/v1/vms/vm-abc123/ports", "application/json", `{"proto":"tcp","number":70000}`, 400},
		{"port bad proto", "POST", "/v1/vms/vm-abc123/ports", "application/json", `{"proto":"sctp","number":80}`, 400},
		{"remove port bad proto", "DELETE", "/v1/vms/vm-abc123/ports/icmp/1", "", "", 400},
		{"domain bad", "POST", "/v1/vms/vm-abc123/domains", "application/json", `{"domain":"localhost"}`, 400},
		{"remove domain bad", "DELETE", "/v1/vms/vm-abc123/domains/ex_ample.com", "", "", 400},
		{"restore nothing", "POST", "/v1/vms/vm-abc123/restore", "application/json", `{}`, 400},
		{"restore both", "POST", "/v1/vms/vm-abc123/restore", "application/json", `{"backup_id":"bk-0123456789","from":"latest"}`, 400},
		{"restore bad from", "POST", "/v1/vms/vm-abc123/restore", "application/json", `{"from":"last week"}`, 400},
		{"resolve bad date", "GET", "/v1/vms/vm-abc123/backups/resolve?from=2026-13-01", "", "", 400},
		{"resolve unknown zone", "GET", "/v1/vms/vm-abc123/backups/resolve?from=yesterday&tz=Mars/Olympus", "", "", 400},
		{"restore unknown zone", "POST", "/v1/vms/vm-abc123/restore", "application/json", `{"from":"yesterday","tz":"Mars/Olympus"}`, 400},
		{"console log zero lines", "GET", "/v1/vms/vm-abc123/console/log?lines=0", "", "", 400},
		{"console log lines not a number", "GET", "/v1/vms/vm-abc123/console/log?lines=all", "", "", 400},
		{"console log unknown param", "GET", "/v1/vms/vm-abc123/console/log?follow=1", "", "", 400},
		{"console log bad id", "GET", "/v1/vms/vm-ABC/console/log", "", "", 400},
		{"events bad after", "GET", "/v1/events?after=-1", "", "", 400},
		{"events bad limit", "GET", "/v1/events?limit=0", "", "", 400},
		{"events bad follow", "GET", "/v1/events?follow=maybe", "", "", 400},
		{"events tail zero", "GET", "/v1/events?tail=0", "", "", 400},
		{"events tail huge", "GET", "/v1/events?tail=100000000", "", "", 400},
		{"events tail not a number", "GET", "/v1/events?tail=all", "", "", 400},
		{"events tail with after", "GET", "/v1/events?tail=5&after=3", "", "", 400},
		{"events tail with follow", "GET", "/v1/events?tail=5&follow=1", "", "", 400},
		{"ledger huge limit", "GET", "/v1/accounts/ac-abc123/ledger?limit=100000000", "", "", 400},
		{"clock advance zero", "POST", "/v1/debug/clock/advance", "application/json", `{"by":"0s"}`, 400},
		{"clock advance negative", "POST", "/v1/debug/clock/advance", "application/json", `{"by":"-24h"}`, 400},
		{"clock advance absurd", "POST", "/v1/debug/clock/advance", "application/json", `{"by":"100000d"}`, 400},
		{"clock advance number", "POST", "/v1/debug/clock/advance", "application/json", `{"by":3600}`, 400},
		{"unknown path", "GET", "/v1/nothing", "", "", 404},
		{"old version", "GET", "/v0/vms", "", "", 404},
		{"wrong method", "DELETE", "/v1/accounts", "", "", 405},
	}
	app := &errApp{}
	_, sock := serve(t, app)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := len(app.reached())
			status, body := rawDo(t, sock, tt.method, tt.path, tt.ctype, []byte(tt.body))
			if status != tt.status {
				t.Errorf("status = %d, want %d (body %s)", status, tt.status, clip(string(body)))
			}
			var eb api.ErrorBody
			if err := json.Unmarshal(body, &eb); err != nil || eb.Error.Code == "" || eb.Error.Message == "" {
				t.Errorf("body %q is not a JSON error: %v", clip(string(body)), err)
			}
			if tt.status == 400 && eb.Error.Code != "invalid" {
				t.Errorf("code = %q, want invalid", eb.Error.Code)
			}
			if calls := app.reached()[before:]; len(calls) > 0 {
				t.Errorf("the appliance was called: %+v", calls)
			}
		})
	}
}

// testKey is an OpenSSH public key for requests.
const testKey = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop"

// TestGoodRequestsReachTheAppliance checks the other side: well-formed
// requests get through, with their values intact.
func TestGoodRequestsReachTheAppliance(t *testing.T) {
	tests := []struct {
		method, path, body string
		verb               string
		args               string // fmt %v of the recorded arguments
	}{
		{"POST", "/v1/accounts", `{"name":"Alice Müller","balance":2500000,"backup_retention":2}`, "CreateAccount", "[{Alice Müller 2.5 2}]"},
		{"POST", "/v1/accounts/ac-abc123/topup", `{"amount":1}`, "TopUp", "[ac-abc123 0.000001]"},
		{"POST", "/v1/accounts/ac-abc123/adjust", `{"amount":-2500000,"reason":"top-up typed twice"}`, "Adjust", "[ac-abc123 -2.5 top-up typed twice]"},
		{"GET", "/v1/accounts/ac-abc123/ledger?limit=5", ``, "Ledger", "[ac-abc123 5]"},
		{"GET", "/v1/accounts/ac-abc123/ledger/totals", ``, "LedgerTotals", "[ac-abc123]"},
		{"POST", "/v1/accounts/ac-abc123/tokens", `{"name":"Claude's laptop","read_only":true,"expires_in":"30d"}`, "CreateToken", "[{ac-abc123 Claude's laptop true 720h0m0s}]"},
		{"POST", "/v1/accounts/ac-abc123/tokens", `{}`, "CreateToken", "[{ac-abc123  false 0s}]"},
		{"GET", "/v1/accounts/ac-abc123/tokens", ``, "Tokens", "[ac-abc123]"},
		{"POST", "/v1/tokens/tk-0123456789/revoke", ``, "RevokeToken", "[tk-0123456789]"},
		{"GET", "/v1/vms?account=ac-abc123&state=graveyard", ``, "VMRows", "[{ac-abc123 graveyard  } {0 }]"},
		{"GET", "/v1/vms?name_prefix=web-&image=debian-12&limit=7&cursor=abc", ``, "VMRows", "[{  web- debian-12} {7 abc}]"},
		{"POST", "/v1/vms", `{"account_id":"ac-abc123","tier":"small","name":"web-1"}`, "SubmitCreateVM", "[{ac-abc123 small  web-1 false []}]"},
		{"PUT", "/v1/accounts/ac-abc123/ssh-keys", `{"ssh_keys":["` + testKey + `"]}`, "SetAccountSSHKeys", "[ac-abc123 1]"},
		{"DELETE", "/v1/vms/vm-abc123/domains/APP.Example.com", ``, "RemoveDomain", "[vm-abc123 app.example.com]"},
		{"POST", "/v1/vms/vm-abc123/stop", `{}`, "SubmitStopVM", "[vm-abc123]"},
		{"POST", "/v1/vms/vm-abc123/backups", ``, "SubmitBackup", "[vm-abc123]"},
		{"DELETE", "/v1/backups/bk-0123456789", ``, "SubmitDeleteBackup", "[bk-0123456789]"},
		{"GET", "/v1/backups?account=ac-abc123&vm=vm-abc123", ``, "BackupRows", "[{ac-abc123 vm-abc123 } {0 }]"},
		{"GET", "/v1/backups?kind=on_demand&limit=1000&cursor=abc", ``, "BackupRows", "[{  on_demand} {1000 abc}]"},
		{"GET", "/v1/vms/usage", ``, "VMUsage", "[]"},
		{"GET", "/v1/operations?vm=vm-abc123&running=1&limit=5", ``, "Operations", "[{vm-abc123 true 5}]"},
		{"GET", "/v1/operations/op-0123456789?wait=1&step=frozen", ``, "WaitOperation", "[op-0123456789 frozen]"},
		{"POST", "/v1/operations/op-0123456789/cancel", ``, "CancelOperation", "[op-0123456789]"},
		{"POST", "/v1/vms/vm-abc123/exec", `{"path":"sh","args":["-c","echo hi"],"stdin":"aGk=","timeout":"1m"}`, "Exec", "[vm-abc123 {sh [-c echo hi] [104 105] 1m0s false  {0 0}}]"},
		{"DELETE", "/v1/vms/vm-abc123/ports/udp/53", ``, "RemovePort", "[vm-abc123 53/udp]"},
		{"DELETE", "/v1/vms/vm-abc123/domains/app.example.com", ``, "RemoveDomain", "[vm-abc123 app.example.com]"},
		{"GET", "/v1/vms/vm-abc123/backups/resolve?from=2026-11-28", ``, "ResolveBackup", "[vm-abc123 2026-11-28 UTC]"},
		{"GET", "/v1/vms/vm-abc123/backups/resolve?from=yesterday&tz=Pacific/Chatham", ``, "ResolveBackup", "[vm-abc123 yesterday Pacific/Chatham]"},
		{"POST", "/v1/vms/vm-abc123/restore", `{"backup_id":"bk-0123456789"}`, "SubmitRestore", "[vm-abc123 bk-0123456789]"},
		{"GET", "/v1/pool", ``, "PoolStatus", "[]"},
		{"GET", "/v1/events?after=7&limit=3", ``, "Events", "[7 3]"},
		{"GET", "/v1/events?tail=50", ``, "LastEvents", "[50]"},
		{"POST", "/v1/debug/clock/advance", `{"by":"7d"}`, "AdvanceClock", "[168h0m0s]"},
	}
	for _, tt := range tests {
		t.Run(tt.verb, func(t *testing.T) {
			app := &errApp{}
			_, sock := serve(t, app)
			status, body := rawDo(t, sock, tt.method, tt.path, "application/json", []byte(tt.body))
			if status/100 != 2 {
				t.Fatalf("status = %d (%s)", status, body)
			}
			calls := app.reached()
			if len(calls) != 1 || calls[0].verb != tt.verb || fmt.Sprint(calls[0].args) != tt.args {
				t.Fatalf("calls = %+v, want one %s with %s", calls, tt.verb, tt.args)
			}
		})
	}
}

func TestListen(t *testing.T) {
	dir, err := os.MkdirTemp("", "sjlisten")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	path := filepath.Join(dir, "sub", "api.sock")

	ln, err := Listen(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != SocketMode {
		t.Fatalf("socket mode = %v, %v; want %v", fi.Mode().Perm(), err, SocketMode)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	// A live daemon on the socket: refused, and the socket is left alone.
	if _, err := Listen(ctx, path); !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "another superjoltd") {
		t.Fatalf("second Listen = %v, want a conflict naming the other daemon", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the live socket was removed: %v", err)
	}

	// A stale socket (its listener gone without unlinking): replaced.
	ln.SetUnlinkOnClose(false)
	ln.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket should still be there for this test: %v", err)
	}
	ln2, err := Listen(ctx, path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Close left the socket file behind: %v", err)
	}

	// Not a socket: never removed.
	if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(ctx, path); !errors.Is(err, model.ErrConflict) {
		t.Fatalf("Listen over a regular file = %v, want conflict", err)
	}
	if b, _ := os.ReadFile(path); string(b) != "keep me" {
		t.Fatal("Listen touched a file that is not a socket")
	}
}

func TestClientUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "nobody.sock")
	c := api.NewClient(path)
	_, err := c.Accounts(context.Background())
	if !errors.Is(err, model.ErrUnavailable) || !strings.Contains(err.Error(), "cannot reach superjoltd at "+path) || !strings.Contains(err.Error(), "is it running?") {
		t.Fatalf("err = %v, want unavailable saying how to start the daemon", err)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	app := &errApp{}
	dir, _ := os.MkdirTemp("", "sjstop")
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	ctx, cancel := context.WithCancel(context.Background())
	ln, err := Listen(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- New(app, Options{}).Serve(ctx, ln) }()
	c := api.NewClient(path)
	if _, err := c.Tiers(ctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Fatalf("Serve = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its context ended")
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind after Serve: %v", err)
	}
}

// slowApp blocks SubmitStopVM until release is closed, and WaitEvents until its
// context ends, like the real appliance with no events coming.
type slowApp struct {
	errApp
	entered chan struct{}
	release chan struct{}
}

func (a *slowApp) SubmitStopVM(ctx context.Context, id string) (model.Operation, error) {
	close(a.entered)
	select {
	case <-a.release:
		return model.Operation{ID: "op-0123456789", VMID: id, State: model.OpRunning}, nil
	case <-ctx.Done():
		return model.Operation{}, ctx.Err()
	}
}

func (a *slowApp) WaitEvents(ctx context.Context, after uint64) ([]model.Event, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestShutdownEndsStreamsButFinishesRequests: when the daemon stops, event
// followers are let go at once, while a request under way (a restore, a
// boot) is given time to finish rather than being cancelled.
func TestShutdownEndsStreamsButFinishesRequests(t *testing.T) {
	app := &slowApp{entered: make(chan struct{}), release: make(chan struct{})}
	dir, err := os.MkdirTemp("", "sjshut")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "s.sock")
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	ln, err := Listen(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- New(app, Options{Logger: slog.New(slog.DiscardHandler)}).Serve(ctx, ln) }()
	c := api.NewClient(path)
	defer c.Close()

	followed := make(chan error, 1)
	go func() {
		followed <- c.FollowEvents(context.Background(), 0, func(model.Event) error { return nil })
	}()
	stopped := make(chan error, 1)
	go func() {
		_, err := c.StopVM(context.Background(), "vm-abc123")
		stopped <- err
	}()
	<-app.entered
	time.Sleep(50 * time.Millisecond) // let the follow request arrive too

	stop()
	select {
	case err := <-followed:
		if !errors.Is(err, model.ErrUnavailable) {
			t.Fatalf("FollowEvents at shutdown = %v, want unavailable", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the event stream did not end when the server shut down")
	}
	select {
	case err := <-stopped:
		t.Fatalf("the request under way ended before it was done: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(app.release)
	if err := <-stopped; err != nil {
		t.Fatalf("the request under way failed at shutdown: %v", err)
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve = %v", err)
	}
}
