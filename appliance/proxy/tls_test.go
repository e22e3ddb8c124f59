package proxy

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startTLSProxy serves p over HTTPS on loopback and returns its address.
func startTLSProxy(t testing.TB, p *Proxy) string {
	t.Helper()
	ln := listenLoopback(t)
	done := make(chan error, 1)
	go func() { done <- p.ServeTLS(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return ln.Addr().String()
}

func poolOf(t testing.TB, pemCerts ...[]byte) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, p := range pemCerts {
		if !pool.AppendCertsFromPEM(p) {
			t.Fatal("no certificate in PEM")
		}
	}
	return pool
}

// httpsGet fetches https://name/ through the proxy at addr, trusting only pool.
func httpsGet(t *testing.T, addr, name string, pool *x509.CertPool) (*http.Response, string, error) {
	t.Helper()
	c := loopbackClient(addr)
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: pool}
	c.Transport.(*http.Transport).ForceAttemptHTTP2 = true
	resp, err := c.Get("https://" + name + "/")
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, string(body), err
}

func TestHTTPSWithLocalCA(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	backend := echoBackend(t)
	addr := startTLSProxy(t, New(Options{Router: routes{"site.example.com": routeTo(t, backend.Listener.Addr())}, CA: ca}))
	pool := poolOf(t, ca.CertPEM())

	resp, body, err := httpsGet(t, addr, "site.example.com", pool)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 || !strings.Contains(body, "host=site.example.com\n") || !strings.Contains(body, "xfproto=https\n") {
		t.Fatalf("status %d, body:\n%s", resp.StatusCode, body)
	}
	if resp.ProtoMajor != 2 {
		t.Errorf("protocol %s, want HTTP/2 over TLS", resp.Proto)
	}
	leaf := resp.TLS.PeerCertificates[0]
	if got := leaf.DNSNames; len(got) != 1 || got[0] != "site.example.com" {
		t.Errorf("SANs %v", got)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Errorf("key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 89*24*time.Hour || d > 91*24*time.Hour {
		t.Errorf("valid for %v, want 90 days", d)
	}
	if leaf.Issuer.CommonName != "superjolt local CA" {
		t.Errorf("issuer %q", leaf.Issuer.CommonName)
	}

	// The same certificate for the next handshake (cached per name).
	resp2, _, err := httpsGet(t, addr, "site.example.com", pool)
	if err != nil {
		t.Fatal(err)
	}
	if !resp2.TLS.PeerCertificates[0].Equal(leaf) {
		t.Error("a second handshake got another certificate")
	}

	// Unknown names get no certificate at all: the server ends the
	// handshake, even for a client that would accept anything.
	for _, name := range []string{"unknown.example.com", "", "127.0.0.1"} {
		conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err == nil {
			conn.Close()
			t.Errorf("handshake for %q succeeded", name)
		}
	}
	if _, _, err := httpsGet(t, addr, "unknown.example.com", pool); err == nil {
		t.Error("https to an unknown name succeeded")
	}
}

func TestHTTPSWithoutCA(t *testing.T) {
	backend := echoBackend(t)
	addr := startTLSProxy(t, New(Options{Router: routes{"site.example.com": routeTo(t, backend.Listener.Addr())}}))
	conn, err := tls.Dial("tcp", addr, &tls.Config{ServerName: "site.example.com", InsecureSkipVerify: true})
	if err == nil {
		conn.Close()
		t.Error("a handshake succeeded with no CA and no operator certificate")
	}
}

// testCA is an operator's own CA, for operator certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "operator test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert, key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// writeLeaf writes base.crt and base.key in dir: a certificate with the
// given serial number and SANs.
func (ca *testCA) writeLeaf(t *testing.T, dir, base string, serial int64, names ...string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: names[0]}, DNSNames: names,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	if err := os.WriteFile(filepath.Join(dir, base+".crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, base+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestOperatorCertificateWins(t *testing.T) {
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	op := newTestCA(t)
	certDir := t.TempDir()
	op.writeLeaf(t, certDir, "own.example.com", 100, "own.example.com")
	op.writeLeaf(t, certDir, "default", 200, "*.wild.example.com")
	backend := echoBackend(t)
	route := routeTo(t, backend.Listener.Addr())
	addr := startTLSProxy(t, New(Options{
		Router:  routes{"own.example.com": route, "local.example.com": route, "a.wild.example.com": route},
		CA:      ca,
		CertDir: certDir,
	}))
	opPool, localPool := poolOf(t, op.pem), poolOf(t, ca.CertPEM())

	serial := func(name string, pool *x509.CertPool) int64 {
		t.Helper()
		resp, body, err := httpsGet(t, addr, name, pool)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(body, "backend says hi") {
			t.Fatalf("%s: body %s", name, body)
		}
		return resp.TLS.PeerCertificates[0].SerialNumber.Int64()
	}
	// The operator's certificate for its name; the local CA's is not used.
	if got := serial("own.example.com", opPool); got != 100 {
		t.Errorf("own.example.com: serial %d, want the operator's 100", got)
	}
	if _, _, err := httpsGet(t, addr, "own.example.com", localPool); err == nil {
		t.Error("own.example.com verified against the local CA: the operator's certificate was not used")
	}
	// The default covers a routed name; others fall to the local CA.
	if got := serial("a.wild.example.com", opPool); got != 200 {
		t.Errorf("a.wild.example.com: serial %d, want the operator default's 200", got)
	}
	serial("local.example.com", localPool)

	// Replaced files are read again.
	op.writeLeaf(t, certDir, "own.example.com", 101, "own.example.com")
	future := time.Now().Add(time.Minute)
	os.Chtimes(filepath.Join(certDir, "own.example.com.crt"), future, future)
	if got := serial("own.example.com", opPool); got != 101 {
		t.Errorf("after replacing the files: serial %d, want 101", got)
	}
}

func TestCAPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca1, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	ca2, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ca1.CertPEM(), ca2.CertPEM()) {
		t.Fatal("a second LoadOrCreateCA made another CA")
	}
	for file, want := range map[string]os.FileMode{"ca.key": 0o600, "ca.crt": 0o644} {
		fi, err := os.Stat(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", file, fi.Mode().Perm(), want)
		}
	}
	c := ca2.Certificate()
	if !c.IsCA || c.Subject.CommonName != "superjolt local CA" || c.NotAfter.Sub(c.NotBefore) < 10*365*24*time.Hour {
		t.Errorf("CA certificate: IsCA %v, CN %q, valid %v", c.IsCA, c.Subject.CommonName, c.NotAfter.Sub(c.NotBefore))
	}
	// A certificate issued by the reloaded CA verifies against the first's PEM.
	leaf, err := ca2.Issue("x.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "x.example.com", Roots: poolOf(t, ca1.CertPEM())}); err != nil {
		t.Error(err)
	}

	// A lone key is refused, not paired with a new certificate.
	os.Remove(filepath.Join(dir, "ca.crt"))
	if _, err := LoadOrCreateCA(dir); err == nil {
		t.Error("LoadOrCreateCA made a CA next to a lone ca.key")
	}
}

func TestGetCertificateNames(t *testing.T) {
	for name, ok := range map[string]bool{
		"example.com": true, "a-b.c_d.example": true, "localhost": true,
		"": false, "../etc/passwd": false, "a..b": false, ".a": false, "a/b": false, "a b": false, "*.example.com": false,
	} {
		if validName(name) != ok {
			t.Errorf("validName(%q) = %v", name, !ok)
		}
	}
}
