package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkRequests compares requests per second to a loopback backend
// directly and through the proxy, one client, keep-alive connections.
func BenchmarkRequests(b *testing.B) {
	body := []byte("hello from the VM\n")
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Write(body)
	}))
	defer backend.Close()
	p := New(Options{Router: routes{"bench.example.com": routeTo(b, backend.Listener.Addr())}})
	proxyAddr := startProxy(b, p)

	run := func(b *testing.B, addr string) {
		c := loopbackClient(addr)
		req, _ := http.NewRequest("GET", "http://bench.example.com/", nil)
		for b.Loop() {
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Fatalf("status %d", resp.StatusCode)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
	}
	b.Run("direct", func(b *testing.B) { run(b, backend.Listener.Addr().String()) })
	b.Run("proxy", func(b *testing.B) { run(b, proxyAddr) })
}

// BenchmarkTLSHandshake measures full TLS handshakes (no resumption) for a
// routed name whose local-CA certificate is already cached, and the cost of
// issuing one.
func BenchmarkTLSHandshake(b *testing.B) {
	ca, err := LoadOrCreateCA(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	backend := httptest.NewServer(http.NotFoundHandler())
	defer backend.Close()
	addr := startTLSProxy(b, New(Options{Router: routes{"tls.example.com": routeTo(b, backend.Listener.Addr())}, CA: ca}))
	cfg := &tls.Config{ServerName: "tls.example.com", RootCAs: poolOf(b, ca.CertPEM())}

	b.Run("handshake", func(b *testing.B) {
		for b.Loop() {
			conn, err := tls.Dial("tcp", addr, cfg)
			if err != nil {
				b.Fatal(err)
			}
			conn.Close()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
	})
	b.Run("issue", func(b *testing.B) {
		for b.Loop() {
			if _, err := ca.Issue("tls.example.com"); err != nil {
				b.Fatal(err)
			}
		}
	})
}
