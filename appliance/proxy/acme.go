package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"path/filepath"

	"github.com/caddyserver/certmagic"
)

// ACME configures certificates from an ACME CA (Let's Encrypt by default)
// for the routed names, where the box is reachable from the internet on
// ports 80 (the HTTP-01 challenge, answered by the plain listener) and 443
// (TLS-ALPN-01). It cannot be tested on machines without a public address:
// the tests only check that it is asked for routed names and no others.
type ACME struct {
	// Email is the account's contact at the CA. Required.
	Email string
	// Directory is the CA's directory URL (default: Let's Encrypt's
	// production one, certmagic.LetsEncryptProductionCA).
	Directory string
	// Dir keeps the account and the certificates across restarts.
	Dir string
}

// acme is a proxy's ACME manager.
type acme struct {
	cfg    *certmagic.Config
	issuer *certmagic.ACMEIssuer
}

// newACME returns a manager that obtains certificates on demand, at the
// first handshake for a name, and only for names routed allows.
func newACME(o ACME, routed func(name string) bool) (*acme, error) {
	if o.Email == "" || o.Dir == "" {
		return nil, errors.New("proxy: ACME needs an email and a directory to keep its state")
	}
	var cfg *certmagic.Config
	cache := certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return cfg, nil },
	})
	cfg = certmagic.New(cache, certmagic.Config{
		Storage: &certmagic.FileStorage{Path: filepath.Clean(o.Dir)},
		OnDemand: &certmagic.OnDemandConfig{
			DecisionFunc: func(_ context.Context, name string) error {
				if !routed(NormalizeHost(name)) {
					return errNoCertificate
				}
				return nil
			},
		},
	})
	dir := o.Directory
	if dir == "" {
		dir = certmagic.LetsEncryptProductionCA
	}
	issuer := certmagic.NewACMEIssuer(cfg, certmagic.ACMEIssuer{CA: dir, Email: o.Email, Agreed: true})
	cfg.Issuers = []certmagic.Issuer{issuer}
	return &acme{cfg: cfg, issuer: issuer}, nil
}

// getCertificate obtains (at the first handshake) or returns the name's
// certificate.
func (a *acme) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.cfg.GetCertificate(hello)
}

// httpHandler answers the CA's HTTP-01 challenges before h sees a request.
func (a *acme) httpHandler(h http.Handler) http.Handler { return a.issuer.HTTPChallengeHandler(h) }

// UseACME makes the proxy get certificates for routed names without one
// of the operator's from an ACME CA (instead of the local CA). Call it
// before serving.
func (p *Proxy) UseACME(o ACME) error {
	a, err := newACME(o, func(name string) bool { _, ok := p.route(name); return ok })
	if err != nil {
		return err
	}
	p.acme = a
	return nil
}
