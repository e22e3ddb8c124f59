package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/proxy"
)

// listenPorts returns the TCP ports the domain proxy and the remote API
// listen on, which no port forward may take.
func (cfg config) listenPorts() ([]model.Port, error) {
	var ports []model.Port
	for _, l := range []struct{ flag, addr string }{{"--http-listen", cfg.httpListen}, {"--https-listen", cfg.httpsListen}, {"--listen", cfg.listen}} {
		if l.addr == "" {
			continue
		}
		_, p, err := net.SplitHostPort(l.addr)
		n, perr := strconv.ParseUint(p, 10, 16)
		if err != nil || perr != nil || n == 0 {
			return nil, fmt.Errorf("%s %q: give [HOST]:PORT like :80, or off", l.flag, l.addr)
		}
		ports = append(ports, model.Port{Proto: "tcp", Number: uint16(n)})
	}
	return ports, nil
}

// domainProxy is superjoltd's reverse proxy for the VMs' domains: plain
// HTTP and HTTPS by host name to the VM that holds the domain (app.Route),
// with certificates from --tls-cert-dir or, by default, from a local CA
// made once in the state directory.
type domainProxy struct {
	px     *proxy.Proxy
	caCert []byte
}

// startProxy listens on the proxy's addresses and serves until stop.
func startProxy(cfg config, app *appliance.Appliance, log *slog.Logger) (*domainProxy, error) {
	if cfg.httpListen == "" && cfg.httpsListen == "" {
		return &domainProxy{}, nil
	}
	ca, err := proxy.LoadOrCreateCA(filepath.Join(cfg.stateDir, "ca"))
	if err != nil {
		return nil, fmt.Errorf("the local CA: %w", err)
	}
	router := proxy.RouterFunc(func(host string) (proxy.Route, bool) {
		ap, ok := app.Route(host)
		return proxy.Route{Addr: ap}, ok
	})
	d := &domainProxy{px: proxy.New(proxy.Options{Router: router, CA: ca, CertDir: cfg.tlsCertDir, Logger: log}), caCert: ca.CertPEM()}
	if cfg.acmeEmail != "" {
		if err := d.px.UseACME(proxy.ACME{Email: cfg.acmeEmail, Directory: cfg.acmeCA, Dir: filepath.Join(cfg.stateDir, "acme")}); err != nil {
			return nil, err
		}
		log.Info("domain certificates from ACME", "email", cfg.acmeEmail, "ca", cfg.acmeCA)
	}
	serve := func(addr, what string, fn func(net.Listener) error) error {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("the domain proxy's %s listener on %s: %w (choose another with --%s-listen, or off)", what, addr, err, what)
		}
		go func() {
			if err := fn(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				log.Error("the domain proxy stopped serving", "listener", what, "err", err)
			}
		}()
		log.Info("domain proxy listening", "listener", what, "addr", ln.Addr().String())
		return nil
	}
	if cfg.httpListen != "" {
		if err := serve(cfg.httpListen, "http", d.px.Serve); err != nil {
			d.px.Close()
			return nil, err
		}
	}
	if cfg.httpsListen != "" {
		if err := serve(cfg.httpsListen, "https", d.px.ServeTLS); err != nil {
			d.px.Close()
			return nil, err
		}
	}
	return d, nil
}

// stop lets requests under way finish for a few seconds, then closes.
func (d *domainProxy) stop() {
	if d.px == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := d.px.Shutdown(ctx); err != nil {
		d.px.Close()
	}
}
