package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/clock"
)

// Authenticator tells who an account token's secret is.
// *appliance.Appliance satisfies it once account tokens are stored.
// It answers model.ErrUnauthenticated (or ErrNotFound) for a secret that is
// unknown, revoked or expired.
type Authenticator interface {
	Authenticate(ctx context.Context, secret string) (model.Principal, error)
}

// ActionRecorder records a change made with an account token (an event
// naming the token); *appliance.Appliance satisfies it.
type ActionRecorder interface {
	RecordTenantAction(ctx context.Context, act appliance.TenantAction) error
}

var _ ActionRecorder = (*appliance.Appliance)(nil)

// Limits of failed authentications per source IP address: a token bucket of
// AuthBurst failures, refilled one every AuthRefill. Successes cost nothing.
const (
	AuthBurst  = 10
	AuthRefill = 6 * time.Second
	// MaxTokenBytes caps the token in an Authorization header.
	MaxTokenBytes = 512
)

// RemoteOptions configure Remote.
type RemoteOptions struct {
	// Auth authenticates bearer tokens; required.
	Auth Authenticator
	// Recorder records every change made with a token (nil: none
	// recorded, for tests only).
	Recorder ActionRecorder
	// Clock times the rate limit (nil: the real clock).
	Clock clock.Clock
	// Logger (nil: slog.Default()).
	Logger *slog.Logger
	// MCP, when set, is served at MCPPath after the same authentication
	// and rate limit, with the token's principal in the request's context
	// (see mcpserver.Handler). It gets POST from read-only tokens too: it
	// offers them the read tools only, and Tenant refuses their changes.
	MCP http.Handler
}

// MCPPath is where the remote listener serves MCP (RemoteOptions.MCP).
const MCPPath = "/mcp"

// Remote is the handler of the remote API (superjoltd --listen): the same
// /v1 routes as the socket's Server, over a Tenant-scoped appliance, for
// requests with "Authorization: Bearer <token>" only. Over it the operator
// is never possible: no token is 401.
//
// In order, for each request:
//  1. a source IP address that has failed to authenticate AuthBurst times
//     (refilled one per AuthRefill) gets 429 with Retry-After, without its
//     token being looked at, even a valid one: a source that guesses is
//     slowed down whatever it sends next;
//  2. a missing or malformed Authorization header, or a token the
//     Authenticator refuses, is 401 and costs the source one failure;
//  3. a request to MCPPath goes to the MCP handler (RemoteOptions.MCP)
//     with the principal in its context, and ends there;
//  4. a read-only token asking anything but GET or HEAD is 403;
//  5. the request is served by the Server with the token's principal in its
//     context (appliance.WithPrincipal), so that Tenant scopes every call;
//  6. a request that changed something (not GET or HEAD) and succeeded (2xx)
//     is recorded by the ActionRecorder, naming the token.
type Remote struct {
	srv     *Server
	auth    Authenticator
	rec     ActionRecorder
	clk     clock.Clock
	log     *slog.Logger
	limiter *failLimiter
	mcp     http.Handler
}

var _ http.Handler = (*Remote)(nil)

// NewRemote returns the remote API's handler over app.
func NewRemote(app Appliance, opts RemoteOptions, sopts Options) *Remote {
	r := &Remote{srv: New(NewTenant(app), sopts), auth: opts.Auth, rec: opts.Recorder, clk: opts.Clock, log: opts.Logger, mcp: opts.MCP}
	if r.clk == nil {
		r.clk = clock.Real{}
	}
	if r.log == nil {
		r.log = r.srv.log
	}
	r.limiter = &failLimiter{burst: AuthBurst, refill: AuthRefill, buckets: map[string]*bucket{}}
	return r
}

// Routes returns the routes the remote API serves: the Server's.
func (rm *Remote) Routes() []string { return rm.srv.Routes() }

func (rm *Remote) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	src := sourceOf(r)
	now := rm.clk.Now()
	if wait := rm.limiter.wait(src, now); wait > 0 {
		secs := int(math.Ceil(wait.Seconds()))
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		writeJSON(w, http.StatusTooManyRequests, api.ErrorBody{Error: api.ErrorDetail{Code: "unauthenticated",
			Message: fmt.Sprintf("too many failed authentications from %s: try again in %d s", src, secs)}})
		return
	}
	secret, err := bearer(r.Header.Values("Authorization"))
	var p model.Principal
	if err == nil {
		p, err = rm.auth.Authenticate(r.Context(), secret)
		switch {
		case err == nil && p.Operator():
			// Never the operator over TCP, whatever the authenticator says.
			err = fmt.Errorf("%w: the token names no account", model.ErrUnauthenticated)
		case errors.Is(err, model.ErrNotFound):
			err = fmt.Errorf("%w: the token is unknown, revoked or expired", model.ErrUnauthenticated)
		}
	}
	if err != nil {
		if errors.Is(err, model.ErrUnauthenticated) {
			rm.limiter.fail(src, now)
			w.Header().Set("WWW-Authenticate", `Bearer realm="superjoltd"`)
			rm.log.Info("api: remote authentication failed", "source", src, "err", err)
		}
		rm.srv.fail(w, r, err)
		return
	}
	ctx := appliance.WithPrincipal(r.Context(), p)
	r = r.WithContext(ctx)
	if rm.mcp != nil && r.URL.Path == MCPPath {
		rm.mcp.ServeHTTP(w, r)
		return
	}
	changing := r.Method != http.MethodGet && r.Method != http.MethodHead
	if changing && p.ReadOnly {
		rm.srv.fail(w, r, fmt.Errorf("%w: token %q is read-only: it cannot %s %s", model.ErrForbidden, p.TokenName, r.Method, clip(r.URL.Path)))
		return
	}
	if !changing {
		rm.srv.ServeHTTP(w, r)
		return
	}
	// A full-duplex handler (exec, console, import) refused before it read
	// its body leaves the connection unfit for another request: changes
	// close it.
	w.Header().Set("Connection", "close")
	sw := &statusWriter{ResponseWriter: w}
	rm.srv.ServeHTTP(sw, r)
	if sw.status/100 != 2 {
		return
	}
	if rm.rec == nil {
		return
	}
	act := appliance.TenantAction{Verb: r.Method + " " + clip(r.URL.Path), Object: r.PathValue("id"), Status: sw.status}
	if act.Object == "" {
		act.Object = sw.object()
	}
	if err := rm.rec.RecordTenantAction(ctx, act); err != nil {
		rm.log.Error("api: cannot record a token's action", "token", p.TokenID, "account", p.AccountID, "verb", act.Verb, "err", err)
	}
}

// bearer returns the token of an "Authorization: Bearer <token>" header:
// exactly one such header, the scheme in any case, one space, a token of
// printable ASCII without spaces, at most MaxTokenBytes.
func bearer(hs []string) (string, error) {
	if len(hs) == 0 {
		return "", fmt.Errorf("%w: this API needs an account token: send Authorization: Bearer <token> (superjolt --server URL --token TOKEN)", model.ErrUnauthenticated)
	}
	if len(hs) > 1 {
		return "", fmt.Errorf("%w: give one Authorization header, not %d", model.ErrUnauthenticated, len(hs))
	}
	scheme, tok, ok := strings.Cut(hs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", fmt.Errorf("%w: the Authorization header must be Bearer <token>", model.ErrUnauthenticated)
	}
	if tok == "" || len(tok) > MaxTokenBytes {
		return "", fmt.Errorf("%w: the bearer token is empty or longer than %d bytes", model.ErrUnauthenticated, MaxTokenBytes)
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c >= 0x7f {
			return "", fmt.Errorf("%w: the bearer token has a space or a character outside printable ASCII", model.ErrUnauthenticated)
		}
	}
	return tok, nil
}

// sourceOf is the IP address a request comes from.
func sourceOf(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// statusWriter remembers the status of an answer and the start of its body
// (to name the object a creation made).
type statusWriter struct {
	http.ResponseWriter
	status int
	head   bytes.Buffer
}

// headBytes is how much of an answer statusWriter keeps.
const headBytes = 16 << 10

func (s *statusWriter) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusWriter) Write(p []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	if room := headBytes - s.head.Len(); room > 0 {
		s.head.Write(p[:min(len(p), room)])
	}
	return s.ResponseWriter.Write(p)
}

// Flush flushes the answer (streams type-assert http.Flusher).
func (s *statusWriter) Flush() { _ = http.NewResponseController(s.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the connection (full duplex).
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// object names what an answer is about: a VM's id, else the id it carries.
func (s *statusWriter) object() string {
	var v struct {
		ID   string `json:"id"`
		VMID string `json:"vm_id"`
	}
	if json.Unmarshal(s.head.Bytes(), &v) != nil {
		return ""
	}
	if v.VMID != "" {
		return v.VMID
	}
	return v.ID
}

// failLimiter is a token bucket of failed authentications per source.
type failLimiter struct {
	burst  int
	refill time.Duration

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

// maxSources bounds the sources remembered: past it, full buckets (the
// sources that have not failed lately) are forgotten.
const maxSources = 10000

func (l *failLimiter) level(src string, now time.Time) *bucket {
	b := l.buckets[src]
	if b == nil {
		if len(l.buckets) >= maxSources {
			for k, o := range l.buckets {
				if o.tokens+now.Sub(o.at).Seconds()/l.refill.Seconds() >= float64(l.burst) {
					delete(l.buckets, k)
				}
			}
		}
		b = &bucket{tokens: float64(l.burst), at: now}
		l.buckets[src] = b
		return b
	}
	if el := now.Sub(b.at); el > 0 {
		b.tokens = min(float64(l.burst), b.tokens+el.Seconds()/l.refill.Seconds())
		b.at = now
	}
	return b
}

// wait returns how long src must wait before it may try again (0: now).
func (l *failLimiter) wait(src string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.buckets[src]; !ok {
		return 0
	}
	b := l.level(src, now)
	if b.tokens >= 1 {
		return 0
	}
	return time.Duration((1 - b.tokens) * float64(l.refill))
}

// fail takes one failure from src's bucket.
func (l *failLimiter) fail(src string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.level(src, now)
	b.tokens = max(0, b.tokens-1)
}
