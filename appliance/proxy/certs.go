package proxy

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// defaultCertName is the base name of the operator's default certificate in
// CertDir (default.crt, default.key).
const defaultCertName = "default"

// TLSConfig returns the TLS configuration of the HTTPS listener: TLS 1.2 and
// up, certificates chosen per server name as the package documentation says.
func (p *Proxy) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: p.getCertificate,
	}
}

var errNoCertificate = errors.New("no site is served under this name")

func (p *Proxy) getCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	name := NormalizeHost(hello.ServerName)
	if !validName(name) {
		return nil, errNoCertificate
	}
	// (a) the operator's own certificate for the name, routed or not.
	if cert, err := p.operatorCert(name); cert != nil || err != nil {
		return cert, err
	}
	if _, ok := p.route(name); !ok {
		return nil, errNoCertificate
	}
	// (b) the operator's default certificate, if it covers the name.
	if cert, err := p.operatorCert(defaultCertName); err == nil && cert != nil && cert.Leaf.VerifyHostname(name) == nil {
		return cert, nil
	}
	// (c) an ACME CA, where the operator configured one.
	if p.acme != nil {
		return p.acme.getCertificate(hello)
	}
	// (d) the local CA.
	if p.ca == nil {
		return nil, errNoCertificate
	}
	return p.certs.issued(p.ca, name)
}

// validName says whether name is a plausible DNS name, safe to use as a
// file name in CertDir: letters, digits, hyphens and dots, no empty label.
func validName(name string) bool {
	if name == "" || len(name) > 253 {
		return false
	}
	prev := byte('.')
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_':
		case c == '.':
			if prev == '.' {
				return false
			}
		default:
			return false
		}
		prev = c
	}
	return prev != '.'
}

// operatorCert returns the operator's certificate NAME.crt/NAME.key from
// CertDir, nil if there is none. The files are stat'ed on each call and read
// again when they changed.
func (p *Proxy) operatorCert(name string) (*tls.Certificate, error) {
	if p.certDir == "" {
		return nil, nil
	}
	crtPath := filepath.Join(p.certDir, name+".crt")
	keyPath := filepath.Join(p.certDir, name+".key")
	crtInfo, err1 := os.Stat(crtPath)
	keyInfo, err2 := os.Stat(keyPath)
	if errors.Is(err1, fs.ErrNotExist) || errors.Is(err2, fs.ErrNotExist) {
		return nil, nil
	}
	if err := errors.Join(err1, err2); err != nil {
		p.log.Warn("proxy: operator certificate", "name", name, "err", err)
		return nil, fmt.Errorf("certificate for %s: %w", name, err)
	}
	stamp := fileStamp{crtInfo.ModTime(), crtInfo.Size(), keyInfo.ModTime(), keyInfo.Size()}
	if cert := p.certs.operator(name, stamp); cert != nil {
		return cert, nil
	}
	cert, err := tls.LoadX509KeyPair(crtPath, keyPath)
	if err != nil {
		// Broken files are the operator's to fix; say so rather than fall
		// back to the local CA behind their back.
		p.log.Warn("proxy: operator certificate", "name", name, "err", err)
		return nil, fmt.Errorf("certificate for %s: %w", name, err)
	}
	p.certs.setOperator(name, stamp, &cert)
	p.log.Info("proxy: loaded operator certificate", "name", name, "not_after", cert.Leaf.NotAfter)
	return &cert, nil
}

type fileStamp struct {
	crtMod  time.Time
	crtSize int64
	keyMod  time.Time
	keySize int64
}

type operatorEntry struct {
	stamp fileStamp
	cert  *tls.Certificate
}

// certCache keeps the operator's certificates by name (with the stamp of
// their files) and the local CA's by name.
type certCache struct {
	mu       sync.Mutex
	operated map[string]operatorEntry
	local    map[string]*tls.Certificate
}

func (c *certCache) init() {
	c.operated = map[string]operatorEntry{}
	c.local = map[string]*tls.Certificate{}
}

func (c *certCache) operator(name string, stamp fileStamp) *tls.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.operated[name]
	if !ok || !e.stamp.crtMod.Equal(stamp.crtMod) || !e.stamp.keyMod.Equal(stamp.keyMod) ||
		e.stamp.crtSize != stamp.crtSize || e.stamp.keySize != stamp.keySize {
		return nil
	}
	return e.cert
}

func (c *certCache) setOperator(name string, stamp fileStamp, cert *tls.Certificate) {
	c.mu.Lock()
	c.operated[name] = operatorEntry{stamp, cert}
	c.mu.Unlock()
}

// issued returns the local CA's certificate for name, issuing one when there
// is none or it has less than leafRenewAhead left. Issuing happens under the
// lock: it takes well under a millisecond, and concurrent handshakes for a
// new name then share one certificate.
func (c *certCache) issued(ca *CA, name string) (*tls.Certificate, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert, ok := c.local[name]; ok && time.Until(cert.Leaf.NotAfter) > leafRenewAhead {
		return cert, nil
	}
	cert, err := ca.Issue(name)
	if err != nil {
		return nil, err
	}
	c.local[name] = cert
	return cert, nil
}
