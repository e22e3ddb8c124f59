package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/mcpserver"
	"github.com/superjolt/superjolt/appliance/proxy"
)

// checkRemote checks the remote API's flags.
func (cfg config) checkRemote() error {
	if (cfg.tlsCert == "") != (cfg.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if cfg.listen == "" {
		if cfg.tlsCert != "" || len(cfg.listenNames) > 0 {
			return errors.New("--tls-cert, --tls-key and --listen-name are for the remote API: give --listen too")
		}
		return nil
	}
	if cfg.tlsCert != "" && len(cfg.listenNames) > 0 {
		return errors.New("--listen-name names the local CA's certificate; with --tls-cert the certificate names itself")
	}
	return nil
}

// remoteCert returns the remote API's certificate: the operator's, or one
// from the local CA (the one `superjolt ca` prints) for the --listen-name
// names (default: the hostname) and the listen address's IP (every address
// of the box when it listens on all of them). It also returns the local
// CA's certificate (nil with the operator's certificate).
func remoteCert(cfg config, addr net.Addr) (*tls.Certificate, []byte, error) {
	if cfg.tlsCert != "" {
		c, err := tls.LoadX509KeyPair(cfg.tlsCert, cfg.tlsKey)
		if err != nil {
			return nil, nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		return &c, nil, nil
	}
	ca, err := proxy.LoadOrCreateCA(filepath.Join(cfg.stateDir, "ca"))
	if err != nil {
		return nil, nil, fmt.Errorf("the local CA: %w", err)
	}
	names := cfg.listenNames
	if len(names) == 0 {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return nil, nil, fmt.Errorf("no hostname for the remote API's certificate: give --listen-name NAME")
		}
		names = []string{h}
	}
	var ips []net.IP
	if ta, ok := addr.(*net.TCPAddr); ok {
		if ta.IP.IsUnspecified() {
			as, _ := net.InterfaceAddrs()
			for _, a := range as {
				if n, ok := a.(*net.IPNet); ok {
					ips = append(ips, n.IP)
				}
			}
		} else {
			ips = append(ips, ta.IP)
		}
	}
	c, err := ca.IssueFor(names, ips)
	if err != nil {
		return nil, nil, err
	}
	return c, ca.CertPEM(), nil
}

// startRemote serves the remote API (see server.Remote) on --listen with
// TLS until stop is called. app must authenticate account tokens.
func startRemote(ctx context.Context, cfg config, app *appliance.Appliance, sopts *server.Options, log *slog.Logger) (stop func(), err error) {
	if cfg.listen == "" {
		return func() {}, nil
	}
	// Until the appliance stores account tokens, it cannot tell who a
	// token is: refuse to serve rather than serve nobody.
	auth, ok := any(app).(server.Authenticator)
	if !ok {
		return nil, errors.New("--listen: this superjoltd has no account tokens to authenticate with yet")
	}
	ln, err := net.Listen("tcp", cfg.listen)
	if err != nil {
		return nil, fmt.Errorf("the remote API's listener on %s: %w (choose another --listen)", cfg.listen, err)
	}
	cert, caPEM, err := remoteCert(cfg, ln.Addr())
	if err != nil {
		ln.Close()
		return nil, err
	}
	if len(sopts.CACert) == 0 {
		// `superjolt ca` prints it for the tenants, also without the
		// domain proxy's HTTPS.
		sopts.CACert = caPEM
	}
	// /mcp: the product page's verbs as MCP tools, over the same Tenant
	// scoping as /v1 (see mcpserver.Handler).
	mh := mcpserver.Handler(app, mcpserver.HTTPOptions{Recorder: app, ReadOnly: cfg.mcpReadOnly, Logger: log})
	h := server.NewRemote(app, server.RemoteOptions{Auth: auth, Recorder: app, Logger: log, MCP: mh}, *sopts)
	tln := tls.NewListener(ln, &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*cert},
		NextProtos:   []string{"http/1.1"},
	})
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := server.Serve(serveCtx, tln, h, log); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Error("the remote API stopped serving", "err", err)
		}
	}()
	if cert.Leaf != nil {
		log.Info("remote API listening", "addr", ln.Addr().String(), "names", cert.Leaf.DNSNames, "ips", cert.Leaf.IPAddresses)
	}
	return func() { stopServing(); <-done }, nil
}
