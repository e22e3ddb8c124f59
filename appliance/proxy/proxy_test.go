package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// All traffic in these tests stays on 127.0.0.1.

// routes is a Router over a fixed map.
type routes map[string]Route

func (m routes) Route(host string) (Route, bool) { r, ok := m[host]; return r, ok }

func routeTo(t testing.TB, addr net.Addr) Route {
	t.Helper()
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		t.Fatal(err)
	}
	return Route{Addr: ap}
}

func listenLoopback(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// startProxy serves p over plain HTTP on loopback and returns its address.
func startProxy(t testing.TB, p *Proxy) string {
	t.Helper()
	ln := listenLoopback(t)
	done := make(chan error, 1)
	go func() { done <- p.Serve(ln) }()
	t.Cleanup(func() {
		p.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// loopbackClient dials only addr, whatever the URL says.
func loopbackClient(addr string) *http.Client {
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			Proxy: nil,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			},
		},
	}
}

// echoBackend answers with what it saw of the request.
func echoBackend(t testing.TB) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "backend says hi\nhost=%s\nxff=%s\nxfproto=%s\nxfhost=%s\npath=%s\n",
			r.Host, r.Header.Get("X-Forwarded-For"), r.Header.Get("X-Forwarded-Proto"),
			r.Header.Get("X-Forwarded-Host"), r.URL.RequestURI())
	}))
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, c *http.Client, host, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequest("GET", "http://proxy.invalid"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	req.Header.Set("X-Forwarded-For", "6.6.6.6") // a client's claim: must not pass
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

func TestRouting(t *testing.T) {
	app, other := echoBackend(t), echoBackend(t)
	rt := routes{"app.example.com": routeTo(t, app.Listener.Addr()), "other.example.org": routeTo(t, other.Listener.Addr())}
	c := loopbackClient(startProxy(t, New(Options{Router: rt})))
	appAddr, otherAddr := app.Listener.Addr().String(), other.Listener.Addr().String()

	tests := []struct {
		host     string
		code     int
		wantHost string // Host the backend saw
	}{
		{"app.example.com", 200, "app.example.com"},
		{"app.example.com:8080", 200, "app.example.com:8080"},
		{"APP.Example.COM", 200, "APP.Example.COM"},
		{"app.example.com.", 200, "app.example.com."},
		{"App.Example.Com.:80", 200, "App.Example.Com.:80"},
		{"unknown.example.com", 404, ""},
		{"example.com", 404, ""},
		{"127.0.0.1", 404, ""},
		{"[::1]:80", 404, ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			code, body := get(t, c, tt.host, "/a/b?c=d")
			if code != tt.code {
				t.Fatalf("status %d, want %d; body:\n%s", code, tt.code, body)
			}
			if code == 200 {
				for _, want := range []string{"backend says hi", "host=" + tt.wantHost + "\n", "xff=127.0.0.1\n", "xfproto=http\n", "xfhost=" + tt.wantHost + "\n", "path=/a/b?c=d\n"} {
					if !strings.Contains(body, want) {
						t.Errorf("body lacks %q:\n%s", want, body)
					}
				}
				return
			}
			if !strings.Contains(body, "No site is served under this name") {
				t.Errorf("404 page says:\n%s", body)
			}
			for _, leak := range []string{appAddr, otherAddr, "127.0.0.1", "app.example.com", "other.example.org", "unknown", "example"} {
				if strings.Contains(body, leak) {
					t.Errorf("404 page names %q:\n%s", leak, body)
				}
			}
		})
	}
}

func TestBackendDown(t *testing.T) {
	ln := listenLoopback(t)
	dead := ln.Addr()
	ln.Close() // nothing listens there now: connection refused
	c := loopbackClient(startProxy(t, New(Options{Router: routes{"down.example.com": routeTo(t, dead)}})))
	code, body := get(t, c, "down.example.com", "/")
	if code != http.StatusBadGateway {
		t.Fatalf("status %d, want 502; body:\n%s", code, body)
	}
	if !strings.Contains(body, "not answering") {
		t.Errorf("502 page says:\n%s", body)
	}
	ap := dead.(*net.TCPAddr)
	for _, leak := range []string{dead.String(), "127.0.0.1", fmt.Sprint(ap.Port)} {
		if strings.Contains(body, leak) {
			t.Errorf("502 page names %q:\n%s", leak, body)
		}
	}
}

func TestUpgradePassesThrough(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Upgrade"), "websocket") || r.Host != "ws.example.com" {
			http.Error(w, "want an upgrade to ws.example.com", http.StatusBadRequest)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		// Echo until the client closes.
		buf := make([]byte, 1024)
		for {
			n, err := brw.Read(buf)
			if n > 0 {
				conn.Write(buf[:n])
			}
			if err != nil {
				return
			}
		}
	}))
	defer backend.Close()
	addr := startProxy(t, New(Options{Router: routes{"ws.example.com": routeTo(t, backend.Listener.Addr())}}))

	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET /chat HTTP/1.1\r\nHost: ws.example.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d, want 101: %s", resp.StatusCode, b)
	}
	for _, msg := range []string{"hello", "through the proxy", strings.Repeat("x", 5000)} {
		if _, err := io.WriteString(conn, msg); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, len(msg))
		if _, err := io.ReadFull(br, got); err != nil {
			t.Fatal(err)
		}
		if string(got) != msg {
			t.Fatalf("echo %q, want %q", got[:min(len(got), 40)], msg[:min(len(msg), 40)])
		}
	}
}

func TestStreamingPassesThrough(t *testing.T) {
	release := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "first chunk\n")
		http.NewResponseController(w).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second chunk\n")
	}))
	defer backend.Close()
	defer close(release) // first: lets the handler end before backend.Close waits for it
	c := loopbackClient(startProxy(t, New(Options{Router: routes{"stream.example.com": routeTo(t, backend.Listener.Addr())}})))

	req, _ := http.NewRequest("GET", "http://stream.example.com/", nil)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make(chan string, 1)
	br := bufio.NewReader(resp.Body)
	go func() {
		line, _ := br.ReadString('\n')
		first <- line
	}()
	select {
	case line := <-first:
		if line != "first chunk\n" {
			t.Fatalf("first line %q", line)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the first chunk did not arrive while the backend was still writing")
	}
	release <- struct{}{} // the handler is waiting: it writes the rest
	rest, err := io.ReadAll(br)
	if err != nil || string(rest) != "second chunk\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"example.com":        "example.com",
		"Example.COM:443":    "example.com",
		"example.com.":       "example.com",
		"EXAMPLE.com.:8080":  "example.com",
		"[::1]:80":           "::1",
		"[::1]":              "::1",
		"127.0.0.1:80":       "127.0.0.1",
		"":                   "",
		"xn--bcher-kva.Test": "xn--bcher-kva.test",
	} {
		if got := NormalizeHost(in); got != want {
			t.Errorf("NormalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}
