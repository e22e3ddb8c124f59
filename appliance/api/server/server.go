package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
	"github.com/superjolt/superjolt/version"
)

// Appliance is what the API serves: the verbs of *appliance.Appliance.
type Appliance interface {
	Clock() clock.Clock
	VMLogs(ctx context.Context, id string, lines int, follow bool, w io.Writer) error
	HaltVM(ctx context.Context, id string) (model.VM, error)
	Capacity(ctx context.Context) (model.Capacity, error)

	CreateAccount(ctx context.Context, req appliance.CreateAccountRequest) (model.Account, error)
	Accounts(ctx context.Context) ([]model.Account, error)
	Account(ctx context.Context, id string) (model.Account, error)
	TopUp(ctx context.Context, id string, amount model.Micro) (model.Account, error)
	Adjust(ctx context.Context, id string, amount model.Micro, reason string) (model.Account, error)
	SetAccountSSHKeys(ctx context.Context, id string, keys []string) (model.Account, error)
	Ledger(ctx context.Context, accountID string, limit int) ([]model.LedgerEntry, error)
	LedgerTotals(ctx context.Context, accountID string) (model.LedgerTotals, error)
	CreateToken(ctx context.Context, req appliance.CreateTokenRequest) (model.Token, string, error)
	Tokens(ctx context.Context, accountID string) ([]model.Token, error)
	RevokeToken(ctx context.Context, id string) (model.Token, error)

	Tiers(ctx context.Context) ([]model.Tier, error)
	Images(ctx context.Context) ([]model.Image, error)
	ImportImage(ctx context.Context, req appliance.ImportImageRequest, r io.Reader, progress func(string)) (model.Image, error)
	BuildImage(ctx context.Context, req appliance.BuildImageRequest, progress func(string)) (model.Image, error)
	DeleteImage(ctx context.Context, name string) (model.Image, error)
	PoolStatus(ctx context.Context) (appliance.PoolStatus, error)

	// Verbs that are operations answer once the operation is accepted; it
	// runs on in the daemon (see appliance's Submit methods).
	SubmitCreateVM(ctx context.Context, req appliance.CreateVMRequest) (model.Operation, error)
	VMs(ctx context.Context, f appliance.VMFilter) ([]model.VM, error)
	VMRows(ctx context.Context, f appliance.VMFilter, p appliance.Page) (appliance.Rows, error)
	VMUsage(ctx context.Context) ([]model.VMUsage, error)
	VM(ctx context.Context, id string) (model.VM, error)
	SubmitStopVM(ctx context.Context, id string) (model.Operation, error)
	SubmitStartVM(ctx context.Context, id string) (model.Operation, error)
	SubmitResumeVM(ctx context.Context, id string) (model.Operation, error)
	SubmitDestroyVM(ctx context.Context, id string) (model.Operation, error)
	Exec(ctx context.Context, id string, req guest.ExecRequest) (guest.ExecResult, error)
	ExecStream(ctx context.Context, id string, req guest.ExecRequest, eio guest.ExecIO) (guest.ExecResult, error)
	Console(ctx context.Context, id string, cio appliance.ConsoleIO) error
	ConsoleLog(ctx context.Context, id string, n int) ([]string, error)
	AddPort(ctx context.Context, id string, p model.Port) (model.VM, error)
	RemovePort(ctx context.Context, id string, p model.Port) (model.VM, error)
	AddDomain(ctx context.Context, id, domain string, port uint16) (model.VM, error)
	RemoveDomain(ctx context.Context, id, domain string) (model.VM, error)

	SubmitBackup(ctx context.Context, vmID string) (model.Operation, error)
	Backup(ctx context.Context, id string) (model.Backup, error)
	Backups(ctx context.Context, vmID string) ([]model.Backup, error)
	ListBackups(ctx context.Context, f appliance.BackupFilter) ([]model.Backup, error)
	BackupRows(ctx context.Context, f appliance.BackupFilter, p appliance.Page) (appliance.Rows, error)
	SubmitDeleteBackup(ctx context.Context, backupID string) (model.Operation, error)
	ResolveBackup(ctx context.Context, vmID, from string, loc *time.Location) (model.Backup, error)
	SubmitRestore(ctx context.Context, vmID, backupID string) (model.Operation, error)

	Operation(ctx context.Context, id string) (model.Operation, error)
	Operations(ctx context.Context, f appliance.OpFilter) ([]model.Operation, error)
	WaitOperation(ctx context.Context, id, step string) (model.Operation, error)
	CancelOperation(ctx context.Context, id string) (model.Operation, error)
	Events(ctx context.Context, afterSeq uint64, limit int) ([]model.Event, error)
	LastEvents(ctx context.Context, n int) ([]model.Event, error)
	WaitEvents(ctx context.Context, afterSeq uint64) ([]model.Event, error)

	AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error)
}

// Defaults and bounds of list queries.
const (
	DefaultEventLimit  = 100
	DefaultLedgerLimit = 100
	// DefaultConsoleLines is how many lines of a console log are answered
	// when the request does not say.
	DefaultConsoleLines = 50
)

// Options configure a Server. The zero value is usable.
type Options struct {
	// Logger receives a line per failed request (nil: slog.Default()).
	Logger *slog.Logger
	// CACert is the PEM certificate of the local CA that signs the HTTPS
	// certificates of the VMs' domains (nil: superjoltd serves no HTTPS
	// with a local CA).
	CACert []byte
}

// Server is the API's http.Handler.
type Server struct {
	app    Appliance
	log    *slog.Logger
	mux    *http.ServeMux
	caCert []byte
	// patterns are the routes, as registered (see Routes).
	patterns []string
}

var _ http.Handler = (*Server)(nil)

// New returns a Server over app.
func New(app Appliance, opts Options) *Server {
	s := &Server{app: app, log: opts.Logger, mux: http.NewServeMux(), caCert: opts.CACert}
	if s.log == nil {
		s.log = slog.Default()
	}
	s.routes()
	return s
}

// ServeHTTP serves one request. Paths and methods that match no route get
// a JSON error like every other failure.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if _, pattern := s.mux.Handler(r); pattern == "" {
		s.noRoute(w, r)
		return
	}
	s.mux.ServeHTTP(w, r)
}

// Serve serves the API on ln until ctx ends; see the package-level Serve.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	return Serve(ctx, ln, s, s.log)
}

// ShutdownGrace is how long Serve waits for requests under way (a restore,
// a VM boot) once its context ends, before it closes their connections.
const ShutdownGrace = 30 * time.Second

// streamsKey holds, in every request's context, a context that ends when the
// server starts shutting down: event streams end then, while ordinary
// requests get ShutdownGrace to finish.
type streamsKey struct{}

// Serve serves h on ln until ctx ends, then stops accepting, ends the event
// streams and waits up to ShutdownGrace for requests under way. A daemon that
// is still starting serves its own handler and swaps in a Server once the
// appliance is open.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	if log == nil {
		log = slog.Default()
	}
	streams, endStreams := context.WithCancel(context.Background())
	defer endStreams()
	base := context.WithValue(context.WithoutCancel(ctx), streamsKey{}, streams)
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	hs.RegisterOnShutdown(endStreams)
	done := make(chan error, 1)
	go func() { done <- hs.Serve(ln) }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	err := hs.Shutdown(sctx)
	<-done
	if errors.Is(err, context.DeadlineExceeded) {
		log.Warn("api: requests still under way after the shutdown grace; closing their connections", "grace", ShutdownGrace)
		_ = hs.Close()
		return nil
	}
	return err
}

// streamContext returns r's context, ended also when the server starts
// shutting down.
func streamContext(r *http.Request) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(r.Context())
	if sd, ok := ctx.Value(streamsKey{}).(context.Context); ok {
		stop := context.AfterFunc(sd, cancel)
		return ctx, func() { stop(); cancel() }
	}
	return ctx, cancel
}

// Unavailable returns a handler that answers every request with
// model.ErrUnavailable and msg: what a daemon serves while it starts.
func Unavailable(msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "2")
		writeJSON(w, http.StatusServiceUnavailable, api.ErrorBody{Error: api.ErrorDetail{Code: "unavailable", Message: msg}})
	})
}

// Routes returns the pattern of every route ("GET /v1/vms/{id}"), in the
// order they are registered: what tests walk to check that every route has
// a tenant rule.
func (s *Server) Routes() []string { return slices.Clone(s.patterns) }

// routeSet registers routes on a Server's mux and remembers their patterns.
type routeSet struct{ s *Server }

func (m routeSet) HandleFunc(pattern string, h http.HandlerFunc) {
	m.s.patterns = append(m.s.patterns, pattern)
	m.s.mux.HandleFunc(pattern, h)
}

func (s *Server) routes() {
	m := routeSet{s}
	m.HandleFunc("GET /v1/status", s.status)

	m.HandleFunc("GET /v1/accounts", s.accounts)
	m.HandleFunc("POST /v1/accounts", s.createAccount)
	m.HandleFunc("GET /v1/accounts/{id}", get(s, model.KindAccount, s.app.Account))
	m.HandleFunc("POST /v1/accounts/{id}/topup", post(s, model.KindAccount, s.topUp))
	m.HandleFunc("POST /v1/accounts/{id}/adjust", post(s, model.KindAccount, s.adjust))
	m.HandleFunc("PUT /v1/accounts/{id}/ssh-keys", post(s, model.KindAccount, s.setSSHKeys))
	m.HandleFunc("GET /v1/accounts/{id}/ledger", s.ledger)
	m.HandleFunc("GET /v1/accounts/{id}/ledger/totals", s.ledgerTotals)
	// Tokens are the operator's to make, list and revoke.
	m.HandleFunc("POST /v1/accounts/{id}/tokens", postStatus(s, model.KindAccount, http.StatusCreated, s.createToken))
	m.HandleFunc("GET /v1/accounts/{id}/tokens", get(s, model.KindAccount, s.tokens))
	m.HandleFunc("POST /v1/tokens/{id}/revoke", verb(s, model.KindToken, http.StatusOK, s.app.RevokeToken))

	m.HandleFunc("GET /v1/tiers", s.tiers)
	m.HandleFunc("GET /v1/images", s.images)
	m.HandleFunc("POST /v1/images/import", s.importImage)
	m.HandleFunc("POST /v1/images/build", s.buildImage)
	m.HandleFunc("DELETE /v1/images/{name}", s.deleteImage)
	m.HandleFunc("GET /v1/pool", s.pool)
	m.HandleFunc("GET /v1/ca", s.ca)

	m.HandleFunc("GET /v1/vms", s.vms)
	m.HandleFunc("POST /v1/vms", s.createVM)
	m.HandleFunc("GET /v1/vms/usage", s.vmUsage) // more specific than {id}: "usage" is no VM id
	m.HandleFunc("GET /v1/vms/{id}", get(s, model.KindVM, s.app.VM))
	m.HandleFunc("POST /v1/vms/{id}/stop", verb(s, model.KindVM, http.StatusAccepted, s.app.SubmitStopVM))
	m.HandleFunc("POST /v1/vms/{id}/start", verb(s, model.KindVM, http.StatusAccepted, s.app.SubmitStartVM))
	m.HandleFunc("POST /v1/vms/{id}/resume", verb(s, model.KindVM, http.StatusAccepted, s.app.SubmitResumeVM))
	m.HandleFunc("POST /v1/vms/{id}/halt", verb(s, model.KindVM, http.StatusOK, s.app.HaltVM))
	m.HandleFunc("POST /v1/vms/{id}/destroy", verb(s, model.KindVM, http.StatusAccepted, s.app.SubmitDestroyVM))
	m.HandleFunc("POST /v1/vms/{id}/exec", post(s, model.KindVM, s.exec))
	m.HandleFunc("POST /v1/vms/{id}/exec/stream", s.execStream)
	m.HandleFunc("POST /v1/vms/{id}/console", s.console)
	m.HandleFunc("GET /v1/vms/{id}/console/log", s.consoleLog)
	m.HandleFunc("GET /v1/vms/{id}/logs", s.vmLogs)
	m.HandleFunc("POST /v1/vms/{id}/ports", post(s, model.KindVM, s.addPort))
	m.HandleFunc("DELETE /v1/vms/{id}/ports/{proto}/{number}", s.removePort)
	m.HandleFunc("POST /v1/vms/{id}/domains", post(s, model.KindVM, s.addDomain))
	m.HandleFunc("DELETE /v1/vms/{id}/domains/{domain}", s.removeDomain)

	m.HandleFunc("GET /v1/vms/{id}/backups", get(s, model.KindVM, s.backups))
	m.HandleFunc("POST /v1/vms/{id}/backups", verb(s, model.KindVM, http.StatusAccepted, s.app.SubmitBackup))
	m.HandleFunc("GET /v1/vms/{id}/backups/resolve", s.resolveBackup)
	m.HandleFunc("POST /v1/vms/{id}/restore", postStatus(s, model.KindVM, http.StatusAccepted, s.restore))
	m.HandleFunc("GET /v1/backups", s.listBackups)
	m.HandleFunc("GET /v1/backups/{id}", get(s, model.KindBackup, s.app.Backup))
	m.HandleFunc("DELETE /v1/backups/{id}", s.deleteBackup)

	m.HandleFunc("GET /v1/operations", s.operations)
	m.HandleFunc("GET /v1/operations/{id}", s.operation)
	m.HandleFunc("POST /v1/operations/{id}/cancel", verb(s, model.KindOperation, http.StatusOK, s.app.CancelOperation))
	m.HandleFunc("GET /v1/events", s.events)

	m.HandleFunc("POST /v1/debug/clock/advance", s.advanceClock)
}

// get serves GET on the object the path's {id} names, which must be an id of
// kind k: the answer is fn's result.
func get[T any](s *Server, k model.Kind, fn func(context.Context, string) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id", k)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v, err := fn(r.Context(), id)
		s.reply(w, r, http.StatusOK, v, err)
	}
}

// verb serves a POST that takes no request body on the object the path's
// {id} names, an id of kind k: the answer is fn's result, with status.
func verb[T any](s *Server, k model.Kind, status int, fn func(context.Context, string) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id", k)
		if err == nil {
			err = noBody(w, r)
		}
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v, err := fn(r.Context(), id)
		s.reply(w, r, status, v, err)
	}
}

// post serves a POST on the object the path's {id} names, an id of kind k,
// with the request body decoded (strictly) and validated as a Req: the answer
// is fn's result.
func post[Req request, T any](s *Server, k model.Kind, fn func(context.Context, string, Req) (T, error)) http.HandlerFunc {
	return postStatus(s, k, http.StatusOK, fn)
}

// postStatus is post answering with status.
func postStatus[Req request, T any](s *Server, k model.Kind, status int, fn func(context.Context, string, Req) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		id, err := pathID(r, "id", k)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		req, err := decodeRequest[Req](w, r)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		v, err := fn(r.Context(), id, req)
		s.reply(w, r, status, v, err)
	}
}

// ca answers the local CA's certificate, for clients of the VMs' domains
// over HTTPS to trust.
func (s *Server) ca(w http.ResponseWriter, r *http.Request) {
	if len(s.caCert) == 0 {
		s.fail(w, r, fmt.Errorf("%w: superjoltd has no local CA: it serves no HTTPS for domains (see --https-listen)", model.ErrNotFound))
		return
	}
	s.reply(w, r, http.StatusOK, api.CA{Cert: string(s.caCert)}, nil)
}

func (s *Server) status(w http.ResponseWriter, r *http.Request) {
	c := s.app.Clock()
	kind := "real"
	if _, ok := c.(*clock.Manual); ok {
		kind = "manual"
	}
	capa, err := s.app.Capacity(r.Context())
	s.reply(w, r, http.StatusOK, api.Status{Now: c.Now().UTC(), Clock: kind, Version: version.String(), Capacity: capa}, err)
}

func (s *Server) accounts(w http.ResponseWriter, r *http.Request) {
	as, err := s.app.Accounts(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(as), err)
}

func (s *Server) createAccount(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRequest[api.CreateAccountRequest](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	a, err := s.app.CreateAccount(r.Context(), appliance.CreateAccountRequest{
		Name: req.Name, Balance: req.Balance, BackupRetention: req.BackupRetention,
	})
	s.reply(w, r, http.StatusCreated, a, err)
}

func (s *Server) topUp(ctx context.Context, id string, req api.TopUpRequest) (model.Account, error) {
	return s.app.TopUp(ctx, id, req.Amount)
}

func (s *Server) adjust(ctx context.Context, id string, req api.AdjustRequest) (model.Account, error) {
	return s.app.Adjust(ctx, id, req.Amount, req.Reason)
}

func (s *Server) setSSHKeys(ctx context.Context, id string, req api.SSHKeysRequest) (model.Account, error) {
	return s.app.SetAccountSSHKeys(ctx, id, req.SSHKeys)
}

func (s *Server) createToken(ctx context.Context, id string, req api.CreateTokenRequest) (api.CreatedToken, error) {
	t, secret, err := s.app.CreateToken(ctx, appliance.CreateTokenRequest{
		AccountID: id, Name: req.Name, ReadOnly: req.ReadOnly, ExpiresIn: time.Duration(req.ExpiresIn),
	})
	return api.CreatedToken{Token: t, Secret: secret}, err
}

func (s *Server) tokens(ctx context.Context, id string) ([]model.Token, error) {
	ts, err := s.app.Tokens(ctx, id)
	return nonNil(ts), err
}

func (s *Server) ledger(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindAccount)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	limit, err := queryLimit(r, DefaultLedgerLimit)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	es, err := s.app.Ledger(r.Context(), id, limit)
	s.reply(w, r, http.StatusOK, nonNil(es), err)
}

func (s *Server) ledgerTotals(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindAccount)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	t, err := s.app.LedgerTotals(r.Context(), id)
	s.reply(w, r, http.StatusOK, t, err)
}

func (s *Server) tiers(w http.ResponseWriter, r *http.Request) {
	ts, err := s.app.Tiers(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(ts), err)
}

func (s *Server) images(w http.ResponseWriter, r *http.Request) {
	is, err := s.app.Images(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(is), err)
}

// vms lists VMs, with the query parameters account, state, name_prefix
// and image as optional filters, and limit and cursor for a page (see
// api.Page).
func (s *Server) vms(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "account", "state", "name_prefix", "image", "limit", "cursor"); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	f := api.VMFilter{AccountID: q.Get("account"), State: model.VMState(q.Get("state")), NamePrefix: q.Get("name_prefix"), Image: q.Get("image")}
	if err := f.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := pageQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rows, err := s.app.VMRows(r.Context(), appliance.VMFilter{AccountID: f.AccountID, State: f.State, NamePrefix: f.NamePrefix, Image: f.Image}, p)
	s.replyRows(w, r, rows, err)
}

// pageQuery reads the query parameters limit and cursor.
func pageQuery(r *http.Request) (appliance.Page, error) {
	q := r.URL.Query()
	p := appliance.Page{Cursor: q.Get("cursor")}
	if l, ok := q["limit"]; ok {
		n, err := strconv.Atoi(l[0])
		if err != nil || n < 1 || n > api.MaxPageLimit {
			return p, invalidf("limit %q is not allowed: give a whole number of items a page from 1 to %d, or no limit for the whole list", clip(l[0]), api.MaxPageLimit)
		}
		p.Limit = n
	}
	return p, nil
}

// replyRows writes a page of stored rows as one JSON array, each row as it
// is (a row is its object's wire form, see appliance.Rows), with the
// number of items and the next page's cursor in its headers. The rows go
// straight to the connection's buffer: nothing is encoded or copied whole.
func (s *Server) replyRows(w http.ResponseWriter, r *http.Request, rows appliance.Rows, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	n := len("[]\n") + max(len(rows.Rows)-1, 0)
	for _, row := range rows.Rows {
		n += len(row)
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(n))
	h.Set(api.CountHeader, strconv.Itoa(len(rows.Rows)))
	if rows.Next != "" {
		h.Set(api.NextCursorHeader, rows.Next)
	}
	w.WriteHeader(http.StatusOK)
	sep := []byte{'['}
	for _, row := range rows.Rows {
		if _, err := w.Write(sep); err != nil {
			return
		}
		if _, err := w.Write(row); err != nil {
			return
		}
		sep[0] = ','
	}
	if len(rows.Rows) == 0 {
		_, _ = w.Write(sep)
	}
	_, _ = w.Write([]byte("]\n"))
}

func (s *Server) vmUsage(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r); err != nil {
		s.fail(w, r, err)
		return
	}
	us, err := s.app.VMUsage(r.Context())
	s.reply(w, r, http.StatusOK, nonNil(us), err)
}

func (s *Server) createVM(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRequest[api.CreateVMRequest](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.app.SubmitCreateVM(r.Context(), appliance.CreateVMRequest{
		AccountID: req.AccountID, Tier: req.Tier, Image: req.Image, Name: req.Name, Overcommit: req.Overcommit,
		SSHKeys: req.SSHKeys,
	})
	s.reply(w, r, http.StatusAccepted, op, err)
}

func (s *Server) exec(ctx context.Context, id string, req api.ExecRequest) (api.ExecResult, error) {
	if req.TTY {
		return api.ExecResult{}, invalidf("exec: a terminal (tty) needs the streaming exec, POST /v1/vms/%s/exec/stream", id)
	}
	res, err := s.app.Exec(ctx, id, guest.ExecRequest{
		Path: req.Path, Args: req.Args, Stdin: req.Stdin, Timeout: time.Duration(req.Timeout),
	})
	return api.ExecResult{
		ExitCode: res.ExitCode, Signal: res.Signal, Stdout: res.Stdout, Stderr: res.Stderr,
		Truncated: res.Truncated, TimedOut: res.TimedOut,
	}, err
}

func (s *Server) addPort(ctx context.Context, id string, p portRequest) (model.VM, error) {
	return s.app.AddPort(ctx, id, model.Port(p))
}

func (s *Server) removePort(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindVM)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := api.ParsePort(r.PathValue("number") + "/" + r.PathValue("proto"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	vm, err := s.app.RemovePort(r.Context(), id, p)
	s.reply(w, r, http.StatusOK, vm, err)
}

func (s *Server) addDomain(ctx context.Context, id string, req api.DomainRequest) (model.VM, error) {
	return s.app.AddDomain(ctx, id, model.NormalizeDomain(req.Domain), req.Port)
}

func (s *Server) removeDomain(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindVM)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := model.NormalizeDomain(r.PathValue("domain"))
	if err := model.ValidateDomain(d); err != nil {
		s.fail(w, r, err)
		return
	}
	vm, err := s.app.RemoveDomain(r.Context(), id, d)
	s.reply(w, r, http.StatusOK, vm, err)
}

func (s *Server) backups(ctx context.Context, vmID string) ([]model.Backup, error) {
	bs, err := s.app.Backups(ctx, vmID)
	return nonNil(bs), err
}

// consoleLog answers the last lines (?lines=N, default
// DefaultConsoleLines) of a VM's serial console log.
func (s *Server) consoleLog(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := model.ValidateID(model.KindVM, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := onlyQuery(r, "lines"); err != nil {
		s.fail(w, r, err)
		return
	}
	n := DefaultConsoleLines
	if v := r.URL.Query().Get("lines"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > model.MaxListLimit {
			s.fail(w, r, invalidf("lines=%q: use a number from 1 to %d", clip(v), model.MaxListLimit))
			return
		}
	}
	lines, err := s.app.ConsoleLog(r.Context(), id, n)
	s.reply(w, r, http.StatusOK, api.ConsoleLog{Lines: nonNil(lines)}, err)
}

// vmLogs streams a VM's log as text (?lines=N, default
// appliance.DefaultLogLines; ?follow=true goes on until the client goes).
// An error found before the first line is answered as usual; one after
// ends the stream.
func (s *Server) vmLogs(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if err := model.ValidateID(model.KindVM, id); err != nil {
		s.fail(w, r, err)
		return
	}
	if err := onlyQuery(r, "lines", "follow"); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	n := appliance.DefaultLogLines
	if v := q.Get("lines"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > model.MaxListLimit {
			s.fail(w, r, invalidf("lines=%q: use a number from 1 to %d", clip(v), model.MaxListLimit))
			return
		}
	}
	follow := false
	if v := q.Get("follow"); v != "" {
		var err error
		if follow, err = strconv.ParseBool(v); err != nil {
			s.fail(w, r, invalidf("follow=%q: use true or false", clip(v)))
			return
		}
	}
	ctx, cancel := streamContext(r)
	defer cancel()
	sw := &startedWriter{w: w}
	err := s.app.VMLogs(ctx, id, n, follow, sw)
	if err != nil && !sw.started {
		s.fail(w, r, err)
	}
}

// startedWriter writes a text answer, with its header on the first write,
// flushing each write so that a followed log arrives as it comes.
type startedWriter struct {
	w       http.ResponseWriter
	started bool
}

func (sw *startedWriter) Write(p []byte) (int, error) {
	if !sw.started {
		sw.w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		sw.w.WriteHeader(http.StatusOK)
		sw.started = true
	}
	n, err := sw.w.Write(p)
	if f, ok := sw.w.(http.Flusher); ok {
		f.Flush()
	}
	return n, err
}

// listBackups lists backups across VMs, with the query parameters account,
// vm and kind as optional filters, and limit and cursor for a page (see
// api.Page).
func (s *Server) listBackups(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "account", "vm", "kind", "limit", "cursor"); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	f := api.BackupFilter{AccountID: q.Get("account"), VMID: q.Get("vm"), Kind: model.BackupKind(q.Get("kind"))}
	if err := f.Validate(); err != nil {
		s.fail(w, r, err)
		return
	}
	p, err := pageQuery(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rows, err := s.app.BackupRows(r.Context(), appliance.BackupFilter{AccountID: f.AccountID, VMID: f.VMID, Kind: f.Kind}, p)
	s.replyRows(w, r, rows, err)
}

func (s *Server) resolveBackup(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindVM)
	if err == nil {
		err = onlyQuery(r, "from", "tz")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	from := r.URL.Query().Get("from")
	if err := model.ValidateFrom(from); err != nil {
		s.fail(w, r, err)
		return
	}
	loc, err := api.LoadZone(r.URL.Query().Get("tz"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.app.ResolveBackup(r.Context(), id, from, loc)
	s.reply(w, r, http.StatusOK, b, err)
}

// restore restores the backup req names, or the one req.From resolves to.
func (s *Server) restore(ctx context.Context, vmID string, req api.RestoreRequest) (model.Operation, error) {
	bk := req.BackupID
	if bk == "" {
		loc, err := api.LoadZone(req.TZ)
		if err != nil {
			return model.Operation{}, err
		}
		b, err := s.app.ResolveBackup(ctx, vmID, req.From, loc)
		if err != nil {
			return model.Operation{}, err
		}
		bk = b.ID
	}
	return s.app.SubmitRestore(ctx, vmID, bk)
}

func (s *Server) deleteBackup(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindBackup)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	op, err := s.app.SubmitDeleteBackup(r.Context(), id)
	s.reply(w, r, http.StatusAccepted, op, err)
}

func (s *Server) operations(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "vm", "running", "limit"); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	f := appliance.OpFilter{VMID: q.Get("vm")}
	if f.VMID != "" {
		if err := model.ValidateID(model.KindVM, f.VMID); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	var err error
	if f.Running, err = queryBool(r, "running"); err != nil {
		s.fail(w, r, err)
		return
	}
	if f.Limit, err = queryLimit(r, model.MaxListLimit); err != nil {
		s.fail(w, r, err)
		return
	}
	ops, err := s.app.Operations(r.Context(), f)
	s.reply(w, r, http.StatusOK, nonNil(ops), err)
}

// operation answers an operation; with ?wait=1&step=S, once its step is
// not S or it has ended, or after api.OperationWaitMax as it is then.
func (s *Server) operation(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindOperation)
	if err == nil {
		err = onlyQuery(r, "wait", "step")
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	wait, err := queryBool(r, "wait")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !wait {
		if r.URL.Query().Has("step") {
			s.fail(w, r, invalidf("step= goes with wait=1: the step last seen, to wait for the next"))
			return
		}
		op, err := s.app.Operation(r.Context(), id)
		s.reply(w, r, http.StatusOK, op, err)
		return
	}
	ctx, cancel := streamContext(r)
	defer cancel()
	ctx, cancelWait := context.WithTimeout(ctx, api.OperationWaitMax)
	defer cancelWait()
	op, err := s.app.WaitOperation(ctx, id, clip(r.URL.Query().Get("step")))
	s.reply(w, r, http.StatusOK, op, err)
}

func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "after", "limit", "follow", "tail"); err != nil {
		s.fail(w, r, err)
		return
	}
	q := r.URL.Query()
	if v := q.Get("tail"); v != "" {
		// The newest events: no after, limit or follow with it (a follower
		// goes on with after= the last one's seq).
		if q.Has("after") || q.Has("limit") || q.Has("follow") {
			s.fail(w, r, invalidf("tail=%q goes alone: the newest N events; follow on with after=<the last one's seq>", clip(v)))
			return
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > model.MaxListLimit {
			s.fail(w, r, invalidf("tail=%q: use a number from 1 to %d", clip(v), model.MaxListLimit))
			return
		}
		es, err := s.app.LastEvents(r.Context(), n)
		s.reply(w, r, http.StatusOK, nonNil(es), err)
		return
	}
	var after uint64
	if v := q.Get("after"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			s.fail(w, r, invalidf("after=%q: give the sequence number of the last event seen, 0 for all", clip(v)))
			return
		}
		after = n
	}
	follow, err := queryBool(r, "follow")
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if !follow {
		limit, err := queryLimit(r, DefaultEventLimit)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		es, err := s.app.Events(r.Context(), after, limit)
		s.reply(w, r, http.StatusOK, nonNil(es), err)
		return
	}
	s.followEvents(w, r, after)
}

// followEvents streams events as NDJSON until the client leaves or the
// server shuts down.
func (s *Server) followEvents(w http.ResponseWriter, r *http.Request, after uint64) {
	ctx, cancel := streamContext(r)
	defer cancel()
	rc := http.NewResponseController(w)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if err := rc.Flush(); err != nil {
		return
	}
	enc := json.NewEncoder(w)
	for {
		es, err := s.app.WaitEvents(ctx, after)
		if err != nil {
			if ctx.Err() == nil {
				s.log.Warn("api: event stream ended", "err", err)
			}
			return
		}
		for _, ev := range es {
			if err := enc.Encode(ev); err != nil {
				return
			}
			after = ev.Seq
		}
		if err := rc.Flush(); err != nil {
			return
		}
	}
}

func (s *Server) advanceClock(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRequest[api.AdvanceClockRequest](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	now, err := s.app.AdvanceClock(r.Context(), time.Duration(req.By))
	s.reply(w, r, http.StatusOK, api.ClockResult{Now: now.UTC()}, err)
}

// reply writes v as JSON with status, or the error.
func (s *Server) reply(w http.ResponseWriter, r *http.Request, status int, v any, err error) {
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, status, v)
}

// fail writes err as a JSON error with the status of its category.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil && errors.Is(err, r.Context().Err()) {
		// The client left; nobody reads the answer.
		return
	}
	status, body := api.Body(err)
	level := slog.LevelDebug
	if status >= 500 {
		level = slog.LevelWarn
	}
	s.log.Log(r.Context(), level, "api: request failed", "method", r.Method, "path", r.URL.Path, "code", body.Error.Code, "err", err)
	writeJSON(w, status, body)
}

// noRoute answers a path or method that matches no route.
func (s *Server) noRoute(w http.ResponseWriter, r *http.Request) {
	h, _ := s.mux.Handler(r)
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if rec.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", rec.header.Get("Allow"))
		writeJSON(w, http.StatusMethodNotAllowed, api.ErrorBody{Error: api.ErrorDetail{
			Code: "invalid", Message: "method " + r.Method + " is not allowed on " + clip(r.URL.Path) + " (allowed: " + rec.header.Get("Allow") + ")",
		}})
		return
	}
	writeJSON(w, http.StatusNotFound, api.ErrorBody{Error: api.ErrorDetail{
		Code: "not_found", Message: "no API endpoint " + r.Method + " " + clip(r.URL.Path) + "; is the client newer than superjoltd?",
	}})
}

type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(status int)      { s.status = status }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		b, _ = json.Marshal(api.ErrorBody{Error: api.ErrorDetail{Code: "internal", Message: "encode answer: " + err.Error()}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

// nonNil makes an empty list encode as [] rather than null.
func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

var _ Appliance = (*appliance.Appliance)(nil)
