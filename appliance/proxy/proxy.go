package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Timeouts of the proxy's servers and of its connections to the VMs.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
	DialTimeout       = 5 * time.Second
)

// Route is where a routed host name goes: the VM's address and port.
type Route struct {
	Addr netip.AddrPort
}

// Router answers, for a normalized host name (see [NormalizeHost]), where the
// VM that holds it listens. It is called on every request and every TLS
// handshake, from many goroutines at once.
type Router interface {
	Route(host string) (Route, bool)
}

// RouterFunc makes a function a [Router].
type RouterFunc func(host string) (Route, bool)

// Route calls f.
func (f RouterFunc) Route(host string) (Route, bool) { return f(host) }

// Options configure a [Proxy].
type Options struct {
	// Router says which VM serves which host name. Required.
	Router Router
	// CA issues certificates for routed names that have none of the
	// operator's; nil: no local CA.
	CA *CA
	// CertDir holds the operator's own certificates, NAME.crt and NAME.key
	// (PEM) per domain and optionally default.crt and default.key; "": none.
	CertDir string
	// Logger gets the proxy's log lines; nil: discarded.
	Logger *slog.Logger
}

// Proxy is the reverse proxy. Its methods are safe for concurrent use.
type Proxy struct {
	router  Router
	ca      *CA
	certDir string
	log     *slog.Logger
	rp      *httputil.ReverseProxy
	certs   certCache
	acme    *acme

	mu      sync.Mutex
	servers map[*http.Server]struct{}
	closed  bool
}

// New returns a Proxy for opts.
func New(opts Options) *Proxy {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p := &Proxy{
		router:  opts.Router,
		ca:      opts.CA,
		certDir: opts.CertDir,
		log:     log,
		servers: map[*http.Server]struct{}{},
	}
	p.certs.init()
	p.rp = &httputil.ReverseProxy{
		Rewrite:       rewrite,
		FlushInterval: -1, // flush every write: streaming responses pass through
		Transport: &http.Transport{
			Proxy:                 nil, // never an HTTP proxy from the environment
			DialContext:           (&net.Dialer{Timeout: DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:          256,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			ExpectContinueTimeout: time.Second,
		},
		ErrorHandler: p.backendError,
		ErrorLog:     slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	return p
}

type routeKey struct{}

func rewrite(pr *httputil.ProxyRequest) {
	rt := pr.In.Context().Value(routeKey{}).(Route)
	pr.SetURL(&url.URL{Scheme: "http", Host: rt.Addr.String()})
	pr.Out.Host = pr.In.Host // the VM sees the name it was asked for
	pr.SetXForwarded()
}

// Handler returns the proxy's HTTP handler: it routes by Host and
// reverse-proxies to the VM, for plain HTTP and for HTTPS alike (the
// X-Forwarded-Proto it sets follows the request's TLS state).
func (p *Proxy) Handler() http.Handler { return http.HandlerFunc(p.serve) }

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	host := NormalizeHost(r.Host)
	rt, ok := p.route(host)
	if !ok {
		p.log.Debug("proxy: unknown host", "host", host, "remote", r.RemoteAddr)
		page(w, http.StatusNotFound, "No site here", "No site is served under this name.")
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), routeKey{}, rt)))
}

func (p *Proxy) route(host string) (Route, bool) {
	if host == "" || p.router == nil {
		return Route{}, false
	}
	rt, ok := p.router.Route(host)
	return rt, ok && rt.Addr.IsValid()
}

func (p *Proxy) backendError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.log.Warn("proxy: backend not answering", "host", NormalizeHost(r.Host), "err", err)
	page(w, http.StatusBadGateway, "Site not answering", "The virtual machine that serves this site is not answering.")
}

func page(w http.ResponseWriter, code int, title, text string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, "<!doctype html>\n<html><head><title>"+title+"</title></head>\n<body><h1>"+title+"</h1>\n<p>"+text+"</p></body></html>\n")
}

// NormalizeHost reduces a Host header or TLS server name to the form routes
// are kept in: the port stripped, IPv6 brackets removed, lowercase, no
// trailing dot.
func NormalizeHost(host string) string {
	if i := strings.LastIndexByte(host, ':'); i >= 0 && i > strings.LastIndexByte(host, ']') {
		host = host[:i]
	}
	host = strings.TrimPrefix(strings.TrimSuffix(host, "]"), "[")
	return strings.ToLower(strings.TrimSuffix(host, "."))
}

func (p *Proxy) newServer(tlsOn bool) (*http.Server, error) {
	srv := &http.Server{
		Handler:           p.Handler(),
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		// Handshake failures for unknown names are routine: debug level.
		ErrorLog: slog.NewLogLogger(p.log.Handler(), slog.LevelDebug),
	}
	if tlsOn {
		srv.TLSConfig = p.TLSConfig()
	} else if p.acme != nil {
		srv.Handler = p.acme.httpHandler(srv.Handler)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, http.ErrServerClosed
	}
	p.servers[srv] = struct{}{}
	return srv, nil
}

func (p *Proxy) forget(srv *http.Server) {
	p.mu.Lock()
	delete(p.servers, srv)
	p.mu.Unlock()
}

// Serve serves plain HTTP on ln (the daemon's --http-listen) until the proxy
// is closed; it then returns [http.ErrServerClosed].
func (p *Proxy) Serve(ln net.Listener) error {
	srv, err := p.newServer(false)
	if err != nil {
		ln.Close()
		return err
	}
	defer p.forget(srv)
	return srv.Serve(ln)
}

// ServeTLS serves HTTPS on ln (the daemon's --https-listen), with
// certificates chosen by [Proxy.TLSConfig], until the proxy is closed; it
// then returns [http.ErrServerClosed].
func (p *Proxy) ServeTLS(ln net.Listener) error {
	srv, err := p.newServer(true)
	if err != nil {
		ln.Close()
		return err
	}
	defer p.forget(srv)
	return srv.ServeTLS(ln, "", "")
}

// Shutdown stops the servers started by Serve and ServeTLS gracefully (see
// [http.Server.Shutdown]; upgraded connections are not waited for).
func (p *Proxy) Shutdown(ctx context.Context) error {
	var errs []error
	for _, srv := range p.stop() {
		errs = append(errs, srv.Shutdown(ctx))
	}
	p.rp.Transport.(*http.Transport).CloseIdleConnections()
	return errors.Join(errs...)
}

// Close stops the servers started by Serve and ServeTLS at once, closing
// their connections. A closed Proxy serves no more.
func (p *Proxy) Close() error {
	var errs []error
	for _, srv := range p.stop() {
		errs = append(errs, srv.Close())
	}
	p.rp.Transport.(*http.Transport).CloseIdleConnections()
	return errors.Join(errs...)
}

func (p *Proxy) stop() []*http.Server {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var list []*http.Server
	for srv := range p.servers {
		list = append(list, srv)
	}
	return list
}
