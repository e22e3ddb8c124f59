package proxy

import (
	"context"
	"strings"
	"testing"
)

// ACME cannot be exercised here (no public address for a CA to reach);
// what can: it is asked only for routed names, it needs its settings, and
// plain HTTP still routes with its challenge handler in front.
func TestACME(t *testing.T) {
	app := echoBackend(t)
	p := New(Options{Router: routes{"app.example.com": routeTo(t, app.Listener.Addr())}})
	if err := p.UseACME(ACME{Dir: t.TempDir()}); err == nil {
		t.Fatal("ACME without an email was accepted")
	}
	// A directory on loopback that nothing serves: the test must not reach
	// out, and nothing here asks for a certificate.
	if err := p.UseACME(ACME{Email: "ops@example.com", Dir: t.TempDir(), Directory: "https://127.0.0.1:9/directory"}); err != nil {
		t.Fatal(err)
	}
	decide := p.acme.cfg.OnDemand.DecisionFunc
	if err := decide(context.Background(), "app.example.com"); err != nil {
		t.Errorf("ACME refused the routed name: %v", err)
	}
	for _, name := range []string{"APP.example.com.", "app.example.com"} {
		if err := decide(context.Background(), name); err != nil {
			t.Errorf("ACME refused %q: %v", name, err)
		}
	}
	for _, name := range []string{"other.example.com", "example.com", "127.0.0.1"} {
		if err := decide(context.Background(), name); err == nil {
			t.Errorf("ACME would get a certificate for %q, which is not routed", name)
		}
	}
	c := loopbackClient(startProxy(t, p))
	if code, body := get(t, c, "app.example.com", "/"); code != 200 || !strings.Contains(body, "app.example.com") {
		t.Errorf("plain HTTP with ACME on: %d %q", code, body)
	}
	if code, _ := get(t, c, "other.example.com", "/.well-known/acme-challenge/x"); code != 404 {
		t.Errorf("an unknown challenge for an unknown name: %d, want 404", code)
	}
}
