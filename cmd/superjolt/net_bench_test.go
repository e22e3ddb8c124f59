package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netns"

	"github.com/superjolt/superjolt/appliance/model"
)

// nsDial dials from inside the named network namespace: the socket is
// made on a thread that entered the namespace, and keeps to it after. The
// thread is never given back (its goroutine ends locked), so no other
// goroutine runs in the namespace.
func nsDial(tb testing.TB, ns string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	tb.Helper()
	h, err := netns.GetFromName(ns)
	if err != nil {
		tb.Fatalf("namespace %s: %v", ns, err)
	}
	tb.Cleanup(func() { h.Close() })
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			runtime.LockOSThread() // not unlocked: the thread ends with the goroutine
			if err := netns.Set(h); err != nil {
				ch <- result{nil, err}
				return
			}
			c, err := (&net.Dialer{Timeout: 5 * time.Second}).DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// BenchmarkGuestHTTP measures HTTP to a real guest's busybox httpd from the
// stand-in LAN namespace three ways, in one run: directly (routed to the
// VM's address), through a port forward (DNAT on the box's address) and
// through superjoltd's domain proxy; latency of a small page
// (keep-alive, one request at a time) and throughput of a 4 MiB file.
// Guests run under TCG here, so the absolute figures say little; the
// ratios between the three ways are the point.
func BenchmarkGuestHTTP(b *testing.B) {
	needVMs(b)
	app, lan := newNetns(b, "sjbapp"), newNetns(b, "sjblan")
	link(b, app, lan)
	run(b, "ip", "-n", lan, "route", "add", "10.77.0.0/16", "via", appAddr)
	d := startDaemonIn(b, app, nil, "--clock=manual")
	acct := okJSON[model.Account](b, d, "account", "create", "bench", "--balance", "100")
	vm := okJSON[model.VM](b, d, "vm", "create", "--account", acct.ID, "--tier", "small", "--name", "bench-1")
	d.ok(b, "vm", "exec", vm.ID, "--", "sh", "-c",
		"mkdir -p /www && echo small > /www/index.html && dd if=/dev/zero of=/www/big bs=1M count=4 2>/dev/null && httpd -p 80 -h /www")
	d.ok(b, "vm", "ports", "add", vm.ID, "8080:80/tcp")
	d.ok(b, "vm", "domains", "add", vm.ID, "bench.example.com")

	client := &http.Client{Transport: &http.Transport{DialContext: nsDial(b, lan), MaxIdleConnsPerHost: 1, Proxy: nil}}
	ways := []struct{ name, url, host string }{
		{"direct", "http://" + vm.IP.String() + "/", ""},
		{"forward", "http://" + appAddr + ":8080/", ""},
		{"proxy", "http://" + appAddr + "/", "bench.example.com"},
	}
	get := func(b *testing.B, url, host string) int64 {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			b.Fatalf("GET %s (host %q): %d %v", url, host, resp.StatusCode, err)
		}
		return n
	}
	for _, w := range ways {
		get(b, w.url, w.host) // warm: a connection, the proxy's route
		b.Run("latency/"+w.name, func(b *testing.B) {
			for b.Loop() {
				get(b, w.url, w.host)
			}
		})
		b.Run("bulk4MiB/"+w.name, func(b *testing.B) {
			b.SetBytes(4 << 20)
			for b.Loop() {
				if n := get(b, w.url+"big", w.host); n != 4<<20 {
					b.Fatalf("got %d bytes", n)
				}
			}
		})
	}
}
