package main

import (
	"context"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
)

func TestParseFlags(t *testing.T) {
	tests := []struct {
		args []string
		ok   bool
		want func(config) bool
	}{
		{nil, true, func(c config) bool {
			return c.stateDir == "/var/lib/superjolt" && c.poolImage == "/var/lib/superjolt/pool.img" && c.poolSize == 20<<30 &&
				c.socket == "/run/superjolt/superjolt.sock" && c.subnet.String() == appliance.DefaultSubnet && !c.manual &&
				c.network && c.bridge == "sjbr0" && len(c.dns) == 0 && c.httpListen == ":80" && c.httpsListen == ":443" &&
				c.historyWindow == 30*24*time.Hour
		}},
		{[]string{"--http-listen", "off", "--https-listen", "127.0.0.1:8443"}, true, func(c config) bool {
			ports, err := c.listenPorts()
			return c.httpListen == "" && err == nil && len(ports) == 1 && ports[0].Number == 8443
		}},
		{[]string{"--http-listen", "80"}, false, nil},
		{[]string{"--listen", ":8443", "--listen-name", "box.example.com", "--listen-name", "box"}, true, func(c config) bool {
			ports, err := c.listenPorts()
			return c.listen == ":8443" && len(c.listenNames) == 2 && c.listenNames[1] == "box" && err == nil && len(ports) == 3 && ports[2].Number == 8443
		}},
		{[]string{"--listen", ":8443", "--tls-cert", "/etc/sj/api.crt", "--tls-key", "/etc/sj/api.key"}, true, func(c config) bool {
			return c.tlsCert == "/etc/sj/api.crt" && c.tlsKey == "/etc/sj/api.key"
		}},
		{[]string{"--listen", "8443"}, false, nil},
		{[]string{"--listen", ":8443", "--tls-cert", "/etc/sj/api.crt"}, false, nil},
		{[]string{"--listen", ":8443", "--tls-cert", "a", "--tls-key", "b", "--listen-name", "box"}, false, nil},
		{[]string{"--listen-name", "box"}, false, nil},
		{[]string{"--listen", ":8443", "--listen-name", "https://box"}, false, nil},
		{[]string{"--acme-email", "ops@example.com", "--acme-ca", "https://acme-staging-v02.api.letsencrypt.org/directory"}, true, func(c config) bool {
			return c.acmeEmail == "ops@example.com" && strings.HasPrefix(c.acmeCA, "https://")
		}},
		{[]string{"--acme-email", "not an email"}, false, nil},
		{[]string{"--acme-email", "ops@example.com", "--acme-ca", "http://insecure.example/dir"}, false, nil},
		{[]string{"--acme-ca", "https://ca.example/dir"}, false, nil},
		{[]string{"--https-listen", ":0"}, false, nil},
		{[]string{"--https-listen", ":https"}, false, nil},
		{[]string{"--network=off", "--bridge", "br-vms", "--dns", "192.0.2.53, 198.51.100.53"}, true, func(c config) bool {
			return !c.network && c.bridge == "br-vms" && len(c.dns) == 2 && c.dns[1].String() == "198.51.100.53"
		}},
		{[]string{"--network=maybe"}, false, nil},
		{[]string{"--bridge", "a-bridge-name-too-long"}, false, nil},
		{[]string{"--bridge", ""}, false, nil},
		{[]string{"--dns", "resolver.example"}, false, nil},
		{[]string{"--dns", "2001:db8::53"}, false, nil},
		{[]string{"--state-dir", "/srv/sj", "--pool-size", "1G", "--clock=manual"}, true, func(c config) bool {
			return c.poolImage == "/srv/sj/pool.img" && c.poolSize == 1<<30 && c.manual
		}},
		{[]string{"--pool", "/mnt/btrfs/sj"}, true, func(c config) bool { return c.pool == "/mnt/btrfs/sj" }},
		{[]string{"--pool", "/mnt/btrfs", "--pool-size", "1G"}, false, nil},
		{[]string{"--pool", "/mnt/btrfs", "--pool-image", "/x.img"}, false, nil},
		{[]string{"--pool-size", "lots"}, false, nil},
		{[]string{"--pool-size", "-1G"}, false, nil},
		{[]string{"--subnet", "10.77.0.0"}, false, nil},
		{[]string{"--subnet", "fd00::/64"}, false, nil},
		{[]string{"--clock=fast"}, false, nil},
		{[]string{"--log-level", "loud"}, false, nil},
		{[]string{"--history-window", "90d"}, true, func(c config) bool { return c.historyWindow == 90*24*time.Hour }},
		{[]string{"--history-window", "36h"}, true, func(c config) bool { return c.historyWindow == 36*time.Hour }},
		{[]string{"--history-window", "1h"}, false, nil},
		{[]string{"--history-window", "-3d"}, false, nil},
		{[]string{"--history-window", "forever"}, false, nil},
		{[]string{"--bogus"}, false, nil},
		{[]string{"extra"}, false, nil},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			cfg, err := parseFlagsQuiet(tt.args)
			if (err == nil) != tt.ok {
				t.Fatalf("parseFlags(%q) = %v, want ok=%v", tt.args, err, tt.ok)
			}
			if tt.ok && !tt.want(cfg) {
				t.Fatalf("parseFlags(%q) = %+v", tt.args, cfg)
			}
		})
	}
}

func parseFlagsQuiet(args []string) (config, error) {
	stderr := os.Stderr
	null, _ := os.Open(os.DevNull)
	os.Stderr = null
	defer func() { os.Stderr = stderr; null.Close() }()
	return parseFlags(args)
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{"20G": 20 << 30, "20GiB": 20 << 30, "512m": 512 << 20, "1T": 1 << 40, "4096": 4096, "64K": 64 << 10} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "G", "1.5G", "-1G", "0", "1P", "99999999999T"} {
		if got, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) = %d, want an error", in, got)
		}
	}
}

// TestManualClockSurvivesRestart: a manual clock advanced past the wall
// clock starts where it was, never back at the wall clock.
func TestManualClockSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c, err := openManualClock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(c.Now()); d < 0 || d > time.Minute {
		t.Fatalf("a new manual clock starts at %v, not now", c.Now())
	}
	want := c.Advance(7 * 24 * time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); saveManualClock(ctx, c, dir, slog.New(slog.DiscardHandler)) }()
	cancel()
	<-done
	again, err := openManualClock(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !again.Now().Equal(want) {
		t.Fatalf("after a restart the manual clock reads %v, want %v", again.Now(), want)
	}
	if err := os.WriteFile(filepath.Join(dir, manualClockFile), []byte("yesterday"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openManualClock(dir); err == nil {
		t.Fatal("a corrupt clock file was accepted")
	}
}

// TestRemoteCert: the remote API's certificate from the local CA names the
// --listen-name names and the listen IP, and chains to the CA that
// `superjolt ca` prints.
func TestRemoteCert(t *testing.T) {
	cfg := config{stateDir: t.TempDir(), listen: "127.0.0.1:8443", listenNames: []string{"box.example.com"}}
	cert, caPEM, err := remoteCert(cfg, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("no CA certificate")
	}
	for _, name := range []string{"box.example.com", "127.0.0.1"} {
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: roots}); err != nil {
			t.Errorf("the certificate does not verify for %s: %v", name, err)
		}
	}
	if _, err := cert.Leaf.Verify(x509.VerifyOptions{DNSName: "other.example.com", Roots: roots}); err == nil {
		t.Error("the certificate verifies for a name it was not issued for")
	}
	// The same CA as the domain proxy's: made once in the state directory.
	_, again, err := remoteCert(cfg, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8443})
	if err != nil || string(again) != string(caPEM) {
		t.Fatalf("a second certificate comes from another CA (%v)", err)
	}
}
