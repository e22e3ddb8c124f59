package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

// fakeAuth authenticates the secrets it was given. It stands in for the
// appliance's account tokens (another branch) and is all the remote API
// asks of them.
type fakeAuth map[string]model.Principal

func (f fakeAuth) Authenticate(_ context.Context, secret string) (model.Principal, error) {
	p, ok := f[secret]
	if !ok {
		return model.Principal{}, fmt.Errorf("%w: no such token", model.ErrUnauthenticated)
	}
	return p, nil
}

// tenantObjects are one account's objects in the fixture.
type tenantObjects struct{ acct, vm, bk, op string }

// tenantFixture is a real appliance (in-memory Badger, a real Btrfs pool)
// with two accounts, A and B, each with a VM, a backup and an operation,
// served by the remote API over TLS on loopback.
type tenantFixture struct {
	app  *appliance.Appliance
	st   *store.Store
	a, b tenantObjects
	rm   *Remote
	url  string
	hc   *http.Client
}

// Tokens of the fixture.
const (
	tokA   = "sjt_a_full"
	tokARO = "sjt_a_readonly"
	tokB   = "sjt_b_full"
)

func newTenantFixture(t *testing.T) *tenantFixture {
	t.Helper()
	app, st := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	ctx := context.Background()
	f := &tenantFixture{app: app, st: st}
	at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
	for i, o := range []*tenantObjects{&f.a, &f.b} {
		acct, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: []string{"alice", "bob"}[i], Balance: 5 * model.Credit})
		if err != nil {
			t.Fatal(err)
		}
		o.acct = acct.ID
		err = st.Update(ctx, func(tx *store.Tx) error {
			var err error
			if o.vm, err = tx.NewID(model.KindVM); err != nil {
				return err
			}
			if o.bk, err = tx.NewID(model.KindBackup); err != nil {
				return err
			}
			if o.op, err = tx.NewID(model.KindOperation); err != nil {
				return err
			}
			vm := model.VM{ID: o.vm, AccountID: o.acct, Name: "web", Tier: "nano", Image: appliance.DefaultImage,
				State: model.StateStopped, CreatedAt: at, StoppedAt: at, BilledUntil: at}
			if err := tx.PutVM(vm); err != nil {
				return err
			}
			if err := tx.PutBackup(model.Backup{ID: o.bk, VMID: o.vm, Kind: model.OnDemand, TakenAt: at, Consistency: model.Crash}); err != nil {
				return err
			}
			return tx.PutOperation(model.Operation{ID: o.op, Kind: model.OpBackup, VMID: o.vm, BackupID: o.bk,
				State: model.OpDone, Step: "done", Progress: 100, StartedAt: at, FinishedAt: at})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	auth := fakeAuth{
		tokA:   {AccountID: f.a.acct, TokenID: "tk-aaaaaaaaaa", TokenName: "laptop"},
		tokARO: {AccountID: f.a.acct, TokenID: "tk-aaaaaaaaab", TokenName: "dashboard", ReadOnly: true},
		tokB:   {AccountID: f.b.acct, TokenID: "tk-bbbbbbbbbb", TokenName: "mallory"},
	}
	f.rm = NewRemote(app, RemoteOptions{Auth: auth, Recorder: app, Logger: slog.New(slog.DiscardHandler)},
		Options{Logger: slog.New(slog.DiscardHandler), CACert: []byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")})
	ts := httptest.NewUnstartedServer(f.rm)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f.url, f.hc = ts.URL, ts.Client()
	return f
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

// do sends a request with a bearer token ("" none) and returns the status
// and body.
func (f *tenantFixture) do(t testing.TB, token, method, path, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, f.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
		if strings.HasSuffix(path, "/console") {
			req.Header.Set("Content-Type", "application/octet-stream")
		}
		if strings.HasSuffix(path, "/exec/stream") {
			req.Header.Set("Content-Type", "application/x-ndjson")
		}
	}
	resp, err := f.hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// How a route answers account B's token asking about account A's objects.
const (
	// asMissing: exactly what the same request about ids that do not exist
	// gets (status and body, with the ids swapped back).
	asMissingRule = "as missing"
	// operatorsRule: 403, the operator's verb.
	operatorsRule = "operator's"
	// filteredRule: 200, and nothing of account A in the answer.
	filteredRule = "filtered"
)

// tenantRequest is one request of the matrix: a route, the query and body
// to send, and how B's token is answered. A route may have several.
type tenantRequest struct {
	query, body string
	rule        string
}

// tenantRules holds, for EVERY route the server registers, the requests
// the matrix sends. A route missing here fails TestTenantMatrix: a new
// route needs its tenant rule decided (and Tenant a method for it).
// {acct}, {vm}, {bk}, {op} in query and body stand for the objects'
// ids.
var tenantRules = map[string][]tenantRequest{
	"GET /v1/status":                             {{rule: operatorsRule}},
	"GET /v1/accounts":                           {{rule: filteredRule}},
	"POST /v1/accounts":                          {{body: `{"name":"mallory"}`, rule: operatorsRule}},
	"GET /v1/accounts/{id}":                      {{rule: asMissingRule}},
	"POST /v1/accounts/{id}/topup":               {{body: `{"amount":1000000}`, rule: operatorsRule}},
	"POST /v1/accounts/{id}/adjust":              {{body: `{"amount":-1000000,"reason":"mine now"}`, rule: operatorsRule}},
	"PUT /v1/accounts/{id}/ssh-keys":             {{body: `{"ssh_keys":[]}`, rule: asMissingRule}},
	"GET /v1/accounts/{id}/ledger":               {{rule: asMissingRule}},
	"GET /v1/accounts/{id}/ledger/totals":        {{rule: asMissingRule}},
	"POST /v1/accounts/{id}/tokens":              {{body: `{"name":"minted"}`, rule: operatorsRule}},
	"GET /v1/accounts/{id}/tokens":               {{rule: operatorsRule}},
	"POST /v1/tokens/{id}/revoke":                {{rule: operatorsRule}},
	"GET /v1/tiers":                              {{rule: filteredRule}},
	"GET /v1/images":                             {{rule: filteredRule}},
	"POST /v1/images/import":                     {{query: "name=evil", body: "not a tarball", rule: operatorsRule}},
	"POST /v1/images/build":                      {{body: `{"recipe":"debian"}`, rule: operatorsRule}},
	"DELETE /v1/images/{name}":                   {{rule: operatorsRule}},
	"GET /v1/pool":                               {{rule: operatorsRule}},
	"GET /v1/ca":                                 {{rule: filteredRule}},
	"GET /v1/vms":                                {{rule: filteredRule}, {query: "account={acct}", rule: asMissingRule}, {query: "account={acct}&state=stopped", rule: asMissingRule}, {query: "limit=1", rule: filteredRule}, {query: "account={acct}&limit=1", rule: asMissingRule}},
	"POST /v1/vms":                               {{body: `{"account_id":"{acct}","tier":"nano"}`, rule: asMissingRule}},
	"GET /v1/vms/usage":                          {{rule: filteredRule}},
	"GET /v1/vms/{id}":                           {{rule: asMissingRule}},
	"POST /v1/vms/{id}/stop":                     {{rule: asMissingRule}},
	"POST /v1/vms/{id}/start":                    {{rule: asMissingRule}},
	"POST /v1/vms/{id}/resume":                   {{rule: asMissingRule}},
	"POST /v1/vms/{id}/halt":                     {{rule: operatorsRule}},
	"POST /v1/vms/{id}/destroy":                  {{rule: asMissingRule}},
	"POST /v1/vms/{id}/exec":                     {{body: `{"path":"/bin/rm","args":["-rf","/"]}`, rule: asMissingRule}},
	"POST /v1/vms/{id}/exec/stream":              {{body: `{"path":"/bin/sh"}` + "\n", rule: asMissingRule}},
	"POST /v1/vms/{id}/console":                  {{body: "root\n", rule: asMissingRule}},
	"GET /v1/vms/{id}/console/log":               {{rule: asMissingRule}},
	"GET /v1/vms/{id}/logs":                      {{rule: asMissingRule}},
	"POST /v1/vms/{id}/ports":                    {{body: `{"proto":"tcp","number":8080}`, rule: operatorsRule}},
	"DELETE /v1/vms/{id}/ports/{proto}/{number}": {{rule: operatorsRule}},
	"POST /v1/vms/{id}/domains":                  {{body: `{"domain":"a.example.com"}`, rule: operatorsRule}},
	"DELETE /v1/vms/{id}/domains/{domain}":       {{rule: operatorsRule}},
	"GET /v1/vms/{id}/backups":                   {{rule: asMissingRule}},
	"POST /v1/vms/{id}/backups":                  {{rule: asMissingRule}},
	"GET /v1/vms/{id}/backups/resolve":           {{query: "from=latest", rule: asMissingRule}},
	"POST /v1/vms/{id}/restore":                  {{body: `{"backup_id":"{bk}"}`, rule: asMissingRule}, {body: `{"from":"latest"}`, rule: asMissingRule}},
	"GET /v1/backups":                            {{rule: filteredRule}, {query: "account={acct}", rule: asMissingRule}, {query: "vm={vm}", rule: asMissingRule}, {query: "limit=1&kind=on_demand", rule: filteredRule}, {query: "vm={vm}&limit=1", rule: asMissingRule}},
	"GET /v1/backups/{id}":                       {{rule: asMissingRule}},
	"DELETE /v1/backups/{id}":                    {{rule: asMissingRule}},
	"GET /v1/operations":                         {{rule: filteredRule}, {query: "vm={vm}", rule: asMissingRule}},
	"GET /v1/operations/{id}":                    {{rule: asMissingRule}, {query: "wait=1&step=done", rule: asMissingRule}},
	"POST /v1/operations/{id}/cancel":            {{rule: asMissingRule}},
	"GET /v1/events":                             {{rule: filteredRule}, {query: "tail=1000", rule: filteredRule}, {query: "after=0&limit=1000", rule: filteredRule}},
	"POST /v1/debug/clock/advance":               {{body: `{"by":"24h"}`, rule: operatorsRule}},
}

// expand makes a concrete path, query and body of a route pattern about
// the objects o.
func expand(pattern string, req tenantRequest, o tenantObjects) (method, path, body string) {
	method, path, _ = strings.Cut(pattern, " ")
	id := ""
	switch {
	case strings.HasPrefix(path, "/v1/accounts/"):
		id = o.acct
	case strings.HasPrefix(path, "/v1/vms/"):
		id = o.vm
	case strings.HasPrefix(path, "/v1/backups/"):
		id = o.bk
	case strings.HasPrefix(path, "/v1/operations/"):
		id = o.op
	case strings.HasPrefix(path, "/v1/tokens/"):
		// Refused to every token before any lookup: any well-formed id.
		id = "tk-aaaaaaaaaa"
	}
	r := strings.NewReplacer("{id}", id, "{name}", "debian", "{proto}", "tcp", "{number}", "8080", "{domain}", "a.example.com",
		"{acct}", o.acct, "{vm}", o.vm, "{bk}", o.bk, "{op}", o.op)
	path = r.Replace(path)
	if req.query != "" {
		path += "?" + r.Replace(req.query)
	}
	return method, path, r.Replace(req.body)
}

// fresh returns ids of o's kinds that do not exist.
func fresh() tenantObjects {
	return tenantObjects{acct: model.NewID(model.KindAccount), vm: model.NewID(model.KindVM),
		bk: model.NewID(model.KindBackup), op: model.NewID(model.KindOperation)}
}

// swap replaces the ids of from with those of to in s.
func swap(s string, from, to tenantObjects) string {
	return strings.NewReplacer(from.acct, to.acct, from.vm, to.vm, from.bk, to.bk, from.op, to.op).Replace(s)
}

func mentions(s string, o tenantObjects) bool {
	return strings.Contains(s, o.acct) || strings.Contains(s, o.vm) || strings.Contains(s, o.bk) || strings.Contains(s, o.op)
}

// TestTenantMatrix: for every route, account B's token on account A's
// account, VM, backup and operation gets exactly what it gets for objects
// that do not exist (or 403 for an operator's verb), lists show nothing of
// A, and the store is unchanged byte for byte.
func TestTenantMatrix(t *testing.T) {
	f := newTenantFixture(t)
	for _, p := range f.rm.Routes() {
		if _, ok := tenantRules[p]; !ok {
			t.Errorf("route %q has no tenant rule in tenantRules: decide it (and Tenant's method) first", p)
		}
	}
	for p := range tenantRules {
		found := false
		for _, q := range f.rm.Routes() {
			found = found || p == q
		}
		if !found {
			t.Errorf("tenantRules has %q, which the server does not register", p)
		}
	}
	before := digest(t, f.st)
	for _, pattern := range f.rm.Routes() {
		for _, req := range tenantRules[pattern] {
			method, path, body := expand(pattern, req, f.a)
			t.Run(method+" "+path, func(t *testing.T) {
				status, got := f.do(t, tokB, method, path, body)
				if mentions(got, f.a) && req.rule != asMissingRule {
					t.Errorf("answer mentions account A's objects: %s", got)
				}
				switch req.rule {
				case operatorsRule:
					if status != http.StatusForbidden || !strings.Contains(got, "is the operator's") {
						t.Errorf("= %d %s, want 403 \"… is the operator's\"", status, got)
					}
				case filteredRule:
					if status != http.StatusOK {
						t.Errorf("= %d %s, want 200", status, got)
					}
				case asMissingRule:
					nobody := fresh()
					fm, fp, fb := expand(pattern, req, nobody)
					fstatus, fgot := f.do(t, tokB, fm, fp, fb)
					if status != fstatus || got != swap(fgot, nobody, f.a) {
						t.Errorf("about A's objects: %d %s\nabout missing ones: %d %s\nwant the same", status, got, fstatus, swap(fgot, nobody, f.a))
					}
					if status/100 == 2 && mentions(got, f.a) {
						t.Errorf("= %d %s, mentions A's objects", status, got)
					}
					if status/100 == 5 {
						t.Errorf("= %d %s", status, got)
					}
				default:
					t.Fatalf("unknown rule %q", req.rule)
				}
			})
		}
	}
	// Swapped objects: B's VM with A's backup.
	status, got := f.do(t, tokB, "POST", "/v1/vms/"+f.b.vm+"/restore", `{"backup_id":"`+f.a.bk+`"}`)
	nobody := fresh()
	fstatus, fgot := f.do(t, tokB, "POST", "/v1/vms/"+f.b.vm+"/restore", `{"backup_id":"`+nobody.bk+`"}`)
	if status != http.StatusNotFound || status != fstatus || got != swap(fgot, nobody, f.a) {
		t.Errorf("restoring B's VM from A's backup = %d %s; from a missing one %d %s; want the same 404", status, got, fstatus, fgot)
	}
	if after := digest(t, f.st); after != before {
		t.Fatalf("B's requests changed the store: %s before, %s after", before, after)
	}

	// B sees its own objects through the same routes.
	for _, path := range []string{"/v1/vms/" + f.b.vm, "/v1/backups/" + f.b.bk, "/v1/operations/" + f.b.op, "/v1/accounts/" + f.b.acct} {
		if status, got := f.do(t, tokB, "GET", path, ""); status != http.StatusOK || mentions(got, f.a) {
			t.Errorf("B: GET %s = %d %s, want 200", path, status, got)
		}
	}
	for _, path := range []string{"/v1/vms", "/v1/backups", "/v1/operations", "/v1/accounts"} {
		if status, got := f.do(t, tokB, "GET", path, ""); status != http.StatusOK || !mentions(got, f.b) || mentions(got, f.a) {
			t.Errorf("B: GET %s = %d %s, want B's objects and none of A's", path, status, got)
		}
	}
}

// TestTenantReadOnly: a read-only token gets 403 on every route that is not
// a GET, and the store is unchanged; its GETs on its own objects work.
func TestTenantReadOnly(t *testing.T) {
	f := newTenantFixture(t)
	before := digest(t, f.st)
	for _, pattern := range f.rm.Routes() {
		for _, req := range tenantRules[pattern] {
			method, path, body := expand(pattern, req, f.a)
			if method == http.MethodGet {
				continue
			}
			if status, got := f.do(t, tokARO, method, path, body); status != http.StatusForbidden || !strings.Contains(got, "read-only") {
				t.Errorf("read-only: %s %s = %d %s, want 403 read-only", method, path, status, got)
			}
		}
	}
	if after := digest(t, f.st); after != before {
		t.Fatalf("a read-only token changed the store: %s before, %s after", before, after)
	}
	if status, got := f.do(t, tokARO, "GET", "/v1/vms/"+f.a.vm, ""); status != http.StatusOK || !strings.Contains(got, f.a.vm) {
		t.Errorf("read-only: GET own VM = %d %s", status, got)
	}
}

// TestTenantActionEvent: a change made with a token is an event naming the
// token; the account's events show it to the account, not to others.
func TestTenantActionEvent(t *testing.T) {
	f := newTenantFixture(t)
	key := "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk3mX6n5m0l7qFvYJ0v0mF0nL3gDkqkJ4mZ3b1vS7nQ a@laptop"
	status, got := f.do(t, tokA, "PUT", "/v1/accounts/"+f.a.acct+"/ssh-keys", `{"ssh_keys":["`+key+`"]}`)
	if status != http.StatusOK {
		t.Fatalf("A sets its own SSH keys = %d %s", status, got)
	}
	es, err := f.app.LastEvents(context.Background(), 5)
	if err != nil {
		t.Fatal(err)
	}
	last := es[len(es)-1]
	if last.Type != "tenant.action" || last.Account != f.a.acct || last.Object != f.a.acct || !strings.Contains(last.Message, `"laptop"`) || !strings.Contains(last.Message, "PUT /v1/accounts/") {
		t.Fatalf("last event = %+v, want tenant.action naming token \"laptop\"", last)
	}
	if _, got := f.do(t, tokB, "GET", "/v1/events?tail=1000", ""); strings.Contains(got, "laptop") || strings.Contains(got, f.a.acct) {
		t.Errorf("B sees A's events: %s", got)
	}
	if _, got := f.do(t, tokA, "GET", "/v1/events?tail=1000", ""); !strings.Contains(got, "laptop") {
		t.Errorf("A does not see its own action: %s", got)
	}
}

// TestRemoteAuth: over TLS, no token, a malformed one and an unknown one are
// 401; after AuthBurst failures the source gets 429 with Retry-After, even
// with a valid token (the token is not looked at while the source waits),
// until the bucket refills.
func TestRemoteAuth(t *testing.T) {
	app, _ := newAppliance(t, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	acct, err := app.CreateAccount(context.Background(), appliance.CreateAccountRequest{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	limClock := clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
	rm := NewRemote(app, RemoteOptions{
		Auth:  fakeAuth{"good": {AccountID: acct.ID, TokenID: "tk-aaaaaaaaaa", TokenName: "laptop"}, "operator": {}},
		Clock: limClock, Logger: slog.New(slog.DiscardHandler),
	}, Options{Logger: slog.New(slog.DiscardHandler)})
	ts := httptest.NewTLSServer(rm)
	defer ts.Close()
	get := func(auth ...string) (int, http.Header, string) {
		req, _ := http.NewRequest("GET", ts.URL+"/v1/vms", nil)
		for _, a := range auth {
			req.Header.Add("Authorization", a)
		}
		resp, err := ts.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	if st, _, body := get("Bearer good"); st != 200 {
		t.Fatalf("valid token = %d %s", st, body)
	}
	bad := [][]string{
		nil, {"Basic Zm9vOmJhcg=="}, {"Bearer"}, {"Bearer "}, {"Bearer  good"}, {"Bearer g00d"}, {"Bearer unknown"},
		{"Bearer good", "Bearer good"}, {"Bearer operator"}, {"Bearer " + strings.Repeat("x", MaxTokenBytes+1)},
	}
	for i, h := range bad[:AuthBurst] {
		st, hdr, body := get(h...)
		if st != http.StatusUnauthorized || !strings.Contains(body, `"unauthenticated"`) || hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("bad auth %d %q = %d %s, want 401", i, h, st, body)
		}
	}
	st, hdr, body := get("Bearer good")
	if st != http.StatusTooManyRequests || hdr.Get("Retry-After") != "6" {
		t.Fatalf("after %d failures a valid token = %d (Retry-After %q) %s, want 429 Retry-After 6", AuthBurst, st, hdr.Get("Retry-After"), body)
	}
	limClock.Advance(AuthRefill)
	if st, _, body := get("Bearer good"); st != 200 {
		t.Fatalf("after the refill a valid token = %d %s, want 200", st, body)
	}
	// Successes cost nothing; one failure takes the refilled try.
	if st, _, _ := get("Bearer unknown"); st != http.StatusUnauthorized {
		t.Fatalf("a failure after the refill = %d, want 401", st)
	}
	if st, _, _ := get("Bearer unknown"); st != http.StatusTooManyRequests {
		t.Fatalf("the next failure = %d, want 429", st)
	}
}

func TestBearer(t *testing.T) {
	for _, tt := range []struct {
		hs   []string
		want string
	}{
		{[]string{"Bearer abc"}, "abc"},
		{[]string{"bearer abc"}, "abc"},
		{[]string{"BEARER a.b-c_d~e+f/g="}, "a.b-c_d~e+f/g="},
		{nil, ""}, {[]string{""}, ""}, {[]string{"Bearer"}, ""}, {[]string{"Bearer a b"}, ""},
		{[]string{"Token abc"}, ""}, {[]string{"Bearer abc", "Bearer abc"}, ""}, {[]string{"Bearer é"}, ""},
	} {
		got, err := bearer(tt.hs)
		if got != tt.want || (err == nil) != (tt.want != "") {
			t.Errorf("bearer(%q) = %q, %v; want %q", tt.hs, got, err, tt.want)
		}
	}
}

// FuzzRemote: whatever the Authorization header, path and body, the remote
// API never answers 5xx, and never 2xx without the valid token.
func FuzzRemote(f *testing.F) {
	for _, s := range []struct{ auth, method, path, body string }{
		{"Bearer good", "GET", "/v1/vms", ""},
		{"Bearer bad", "GET", "/v1/vms", ""},
		{"", "POST", "/v1/vms", `{"account_id":"ac-aaaaaa","tier":"nano"}`},
		{"Bearer good", "POST", "/v1/vms", `{"account_id":"ac-aaaaaa","tier":"nano"}`},
		{"Bearer good", "GET", "/v1/vms/vm-aaaaaa/../../v1/accounts", ""},
		{"bearer good", "DELETE", "/v1/backups/bk-0000000000", ""},
		{"Bearer good\x00", "GET", "/v1/events?tail=5", ""},
		{"Bearer good", "PUT", "/v1/accounts/ac-zzzzzz/ssh-keys", `{"ssh_keys":[1]}`},
	} {
		f.Add(s.auth, s.method, s.path, s.body)
	}
	app, _ := newAppliance(f, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	acct, err := app.CreateAccount(context.Background(), appliance.CreateAccountRequest{Name: "alice"})
	if err != nil {
		f.Fatal(err)
	}
	// A clock that never moves and a limit never reached: each input
	// comes from its own source address.
	rm := NewRemote(app, RemoteOptions{Auth: fakeAuth{"good": {AccountID: acct.ID, TokenID: "tk-aaaaaaaaaa", TokenName: "fuzz", ReadOnly: true}},
		Logger: slog.New(slog.DiscardHandler)}, Options{Logger: slog.New(slog.DiscardHandler)})
	var n uint32
	f.Fuzz(func(t *testing.T, auth, method, path, body string) {
		if !strings.HasPrefix(path, "/") {
			path = "/" + path
		}
		// Followed events and waited operations end with the request.
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, method, "https://sj"+path, bytes.NewReader([]byte(body)))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", auth)
		n++
		req.RemoteAddr = netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String() + ":4000"
		w := httptest.NewRecorder()
		rm.ServeHTTP(w, req)
		if w.Code >= 500 && w.Code != http.StatusServiceUnavailable {
			t.Fatalf("%q %s %q %q = %d %s", auth, method, path, body, w.Code, w.Body)
		}
		if w.Code/100 == 2 && auth != "Bearer good" && !strings.EqualFold(strings.TrimSuffix(auth, " good"), "bearer") {
			t.Fatalf("%q %s %q = %d without the valid token", auth, method, path, w.Code)
		}
	})
}

// TestTenantPages: a token's pages hold its account's VMs and backups
// only, every page of them, even from a cursor the operator's list gave
// out at another account's VM.
func TestTenantPages(t *testing.T) {
	f := newTenantFixture(t)
	at := func(i int) time.Time {
		return time.Date(2026, 10, 2, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Minute)
	}
	aVMs := append([]string{f.a.vm}, putVMs(t, f.st, f.a.acct, 9, at)...)
	bVMs := append([]string{f.b.vm}, putVMs(t, f.st, f.b.acct, 9, at)...)
	putBackups(t, f.st, aVMs[1:], 2)
	putBackups(t, f.st, bVMs[1:], 2)

	// walk follows X-Next-Cursor from cursor and returns the ids listed.
	walk := func(token, path, cursor string) []string {
		t.Helper()
		var got []string
		for range 100 {
			p := path
			if cursor != "" {
				p += "&cursor=" + cursor
			}
			req, err := http.NewRequest("GET", f.url+p, nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := f.hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var items []struct {
				ID string `json:"id"`
			}
			err = json.NewDecoder(resp.Body).Decode(&items)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || err != nil {
				t.Fatalf("GET %s = %d, %v", p, resp.StatusCode, err)
			}
			if n := resp.Header.Get("X-Count"); n != fmt.Sprint(len(items)) {
				t.Errorf("GET %s: X-Count %q for %d items", p, n, len(items))
			}
			for _, it := range items {
				got = append(got, it.ID)
			}
			if cursor = resp.Header.Get("X-Next-Cursor"); cursor == "" {
				return got
			}
		}
		t.Fatalf("GET %s: no last page after 100", path)
		return nil
	}
	sorted := func(ids []string) []string { return slices.Sorted(slices.Values(ids)) }
	if got := walk(tokB, "/v1/vms?limit=3", ""); !slices.Equal(sorted(got), sorted(bVMs)) {
		t.Errorf("B's pages of VMs = %v, want B's %v", got, bVMs)
	}
	opAll := walk(tokA, "/v1/vms?limit=1000", "")
	if len(opAll) != 10 {
		t.Fatalf("A sees %d VMs, want 10", len(opAll))
	}
	// The operator's cursor at A's first VM: B still sees only its own.
	rows, err := f.app.VMRows(context.Background(), appliance.VMFilter{}, appliance.Page{Limit: 1})
	if err != nil || rows.Next == "" {
		t.Fatalf("operator's first page: %v", err)
	}
	for _, id := range walk(tokB, "/v1/vms?limit=2", rows.Next) {
		if !slices.Contains(bVMs, id) {
			t.Errorf("B's pages from the operator's cursor list %s, not B's", id)
		}
	}
	bBackups := walk(tokB, "/v1/backups?limit=4", "")
	if len(bBackups) != 1+9*2 {
		t.Errorf("B's pages of backups = %d backups, want %d", len(bBackups), 1+9*2)
	}
	for _, id := range bBackups {
		if id == f.a.bk {
			t.Errorf("B's pages of backups list A's %s", id)
		}
	}
	aBackups, err := f.app.ListBackups(context.Background(), appliance.BackupFilter{AccountID: f.a.acct})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range aBackups {
		if slices.Contains(bBackups, b.ID) {
			t.Errorf("B's pages of backups list A's %s", b.ID)
		}
	}
}
