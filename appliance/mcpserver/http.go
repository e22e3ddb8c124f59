package mcpserver

import (
	"log/slog"
	"net/http"
	"sync"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
)

// HTTPOptions configure Handler.
type HTTPOptions struct {
	// Recorder records every change made with a token (nil: none).
	Recorder server.ActionRecorder
	// Confirmer is shared by the servers of every token (nil: a new one).
	Confirmer *Confirmer
	// ReadOnly exposes only the read tools, whatever the token.
	ReadOnly bool
	// Logger (nil: discard).
	Logger *slog.Logger
}

// MaxBodyBytes caps a request to /mcp.
const MaxBodyBytes = 1 << 20

// Handler is superjoltd's /mcp: MCP over streamable HTTP, stateless (each
// POST stands alone: no session to hijack or to keep), for a request whose
// context carries an account token's principal, put there by server.Remote
// after the same bearer authentication and rate limit as /v1. The request
// is served by an MCP server over Local(app, principal), so that every tool
// runs through server.Tenant; a read-only token's server has the read tools
// only. Without a principal (the operator has no token over TCP) it is 401.
func Handler(app server.Appliance, opts HTTPOptions) http.Handler {
	h := &httpHandler{app: app, opts: opts, servers: map[model.Principal]*mcp.Server{}}
	if h.opts.Confirmer == nil {
		h.opts.Confirmer = NewConfirmer(nil)
	}
	if h.opts.Logger == nil {
		h.opts.Logger = slog.New(slog.DiscardHandler)
	}
	h.sh = mcp.NewStreamableHTTPHandler(h.server, &mcp.StreamableHTTPOptions{
		Stateless: true, JSONResponse: true, Logger: h.opts.Logger, MaxRequestBodyBytes: MaxBodyBytes,
	})
	return h
}

type httpHandler struct {
	app  server.Appliance
	opts HTTPOptions
	sh   *mcp.StreamableHTTPHandler

	mu      sync.Mutex
	servers map[model.Principal]*mcp.Server
}

// maxServers bounds the servers kept (one per token seen).
const maxServers = 1000

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if appliance.PrincipalFrom(r.Context()).Operator() {
		w.Header().Set("WWW-Authenticate", `Bearer realm="superjoltd"`)
		http.Error(w, "unauthenticated: /mcp needs an account token: send Authorization: Bearer <token>", http.StatusUnauthorized)
		return
	}
	h.sh.ServeHTTP(w, r)
}

// server returns the MCP server of the request's principal.
func (h *httpHandler) server(r *http.Request) *mcp.Server {
	p := appliance.PrincipalFrom(r.Context())
	if p.Operator() {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if s := h.servers[p]; s != nil {
		return s
	}
	if len(h.servers) >= maxServers {
		clear(h.servers)
	}
	s := New(Local(h.app, p, h.opts.Recorder), Options{
		ReadOnly:  h.opts.ReadOnly || p.ReadOnly,
		Caller:    "token " + p.TokenID,
		Confirmer: h.opts.Confirmer,
		Logger:    h.opts.Logger,
	})
	h.servers[p] = s
	return s
}
