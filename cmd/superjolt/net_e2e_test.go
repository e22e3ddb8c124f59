package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// Networking end to end, every packet inside namespaces the test makes:
// APP holds superjoltd, its bridge, TAPs, firewall and guests; LAN stands
// in for the network outside, joined to APP by a veth pair with addresses
// of a documentation range (198.51.100.0/24) that exist only in these two
// namespaces.
const (
	appAddr = "198.51.100.1" // APP's end: the box's "uplink" address
	lanAddr = "198.51.100.2" // LAN's end: a client or server outside
)

// newNetns makes a named network namespace with its loopback up, deleted
// when the test ends.
func newNetns(t testing.TB, prefix string) string {
	t.Helper()
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip (iproute2)")
	}
	name := fmt.Sprintf("%s-%d", prefix, os.Getpid())
	exec.Command("ip", "netns", "del", name).Run() // a leftover of a killed run
	run(t, "ip", "netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", name).Run() })
	run(t, "ip", "-n", name, "link", "set", "lo", "up")
	return name
}

// run runs a command that must succeed and returns its output.
func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// try runs a command in namespace ns and returns its output and error.
func try(ns string, timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, args...)...).CombinedOutput()
	return string(out), err
}

// link joins APP and LAN with a veth pair.
func link(t testing.TB, app, lan string) {
	t.Helper()
	run(t, "ip", "link", "add", "sjv-app", "netns", app, "type", "veth", "peer", "name", "sjv-lan", "netns", lan)
	run(t, "ip", "-n", app, "addr", "add", appAddr+"/24", "dev", "sjv-app")
	run(t, "ip", "-n", app, "link", "set", "sjv-app", "up")
	run(t, "ip", "-n", lan, "addr", "add", lanAddr+"/24", "dev", "sjv-lan")
	run(t, "ip", "-n", lan, "link", "set", "sjv-lan", "up")
}

// get fetches http://addr/ from namespace ns with curl.
func get(ns, url string) (string, error) {
	return try(ns, 15*time.Second, "curl", "-sS", "--max-time", "5", url)
}

// serveWeb starts busybox httpd on port 80 in the guest, serving a page
// that names the guest.
func serveWeb(t *testing.T, d *daemon, vm string) {
	t.Helper()
	d.ok(t, "vm", "exec", vm, "--", "sh", "-c", "mkdir -p /www && echo hello-from-$(hostname) > /www/index.html && httpd -p 80 -h /www")
}

// TestNetworkEndToEnd: a VM on the bridge has its address, route and name;
// a port forward carries HTTP from the LAN and from the box itself to a
// server in the guest; a domain reaches it through superjoltd's proxy over
// HTTP and HTTPS (local CA), an unknown name gets a 404, the proxy's port
// cannot be forwarded and a domain is one VM's; the guest reaches the LAN
// through NAT; another
// account's VM cannot reach it and one of the same account can; the
// address and the forward survive a restore, a stop and start and a
// restart of superjoltd; in the graveyard the forward refuses and the
// address is free; a resume brings both back; a reclaim leaves nothing of
// the VM in the firewall and no TAP.
func TestNetworkEndToEnd(t *testing.T) {
	needVMs(t)
	for _, tool := range []string{"curl", "nft", "python3"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (scripts/install-deps installs it)", tool)
		}
	}
	app, lan := newNetns(t, "sjapp"), newNetns(t, "sjlan")
	link(t, app, lan)
	d := startDaemonIn(t, app, nil, "--clock=manual")
	begin := time.Now()
	step := func(what string) { t.Logf("%-60s %5.1fs", what, time.Since(begin).Seconds()) }

	alice := okJSON[model.Account](t, d, "account", "create", "alice", "--balance", "100")
	bob := okJSON[model.Account](t, d, "account", "create", "bob", "--balance", "100")
	web := okJSON[model.VM](t, d, "vm", "create", "--account", alice.ID, "--tier", "nano", "--name", "net-1")
	d.ok(t, "debug", "clock", "advance", "2h") // past its first hour: a destroy goes to the graveyard
	step("VM created: " + web.ID + " at " + web.IP.String())

	// Inside the guest: its address, its default route, its name.
	addr := d.ok(t, "vm", "exec", web.ID, "--", "ip", "-4", "addr")
	if !strings.Contains(addr, "inet "+web.IP.String()+"/16") {
		t.Fatalf("ip -4 addr in the guest does not show %s/16:\n%s", web.IP, addr)
	}
	if route := d.ok(t, "vm", "exec", web.ID, "--", "ip", "route"); !strings.Contains(route, "default via 10.77.0.1") {
		t.Fatalf("ip route in the guest has no default via the bridge's 10.77.0.1:\n%s", route)
	}
	if host := strings.TrimSpace(d.ok(t, "vm", "exec", web.ID, "--", "hostname")); host != "net-1" {
		t.Fatalf("the guest's hostname is %q, want net-1", host)
	}
	step("guest: address, route, hostname")

	// A forward: host port 8080 to the guest's 80, from the LAN and from the
	// box itself.
	serveWeb(t, d, web.ID)
	d.ok(t, "vm", "ports", "add", web.ID, "8080:80/tcp")
	want := "hello-from-net-1"
	forwardWorks := func(when string) {
		t.Helper()
		var out string
		var err error
		for i := 0; i < 20; i++ { // the guest's httpd may take a moment after a boot
			if out, err = get(lan, "http://"+appAddr+":8080/"); err == nil && strings.Contains(out, want) {
				break
			}
			time.Sleep(250 * time.Millisecond)
		}
		if err != nil || !strings.Contains(out, want) {
			t.Fatalf("%s: from the LAN through the forward: %v %q\nfirewall:\n%s", when, err, out, nftTable(app))
		}
		if out, err := get(app, "http://"+appAddr+":8080/"); err != nil || !strings.Contains(out, want) {
			t.Fatalf("%s: from the box itself through the forward: %v %q", when, err, out)
		}
		if out, err := get(app, "http://"+web.IP.String()+"/"); err != nil || !strings.Contains(out, want) {
			t.Fatalf("%s: from the box to the guest directly: %v %q", when, err, out)
		}
	}
	forwardWorks("after ports add")
	step("forward 8080:80 from the LAN and the box")

	// A domain: superjoltd's proxy serves it over HTTP and HTTPS (a
	// certificate of the local CA, which `superjolt ca` prints); an unknown
	// name gets a 404 that names no VM.
	d.ok(t, "vm", "domains", "add", web.ID, "Net.Example.com")
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, []byte(d.ok(t, "ca")), 0o644); err != nil {
		t.Fatal(err)
	}
	domainWorks := func(when string) {
		t.Helper()
		for _, u := range []string{"http://net.example.com/", "https://net.example.com/"} {
			port := map[bool]string{true: "443", false: "80"}[strings.HasPrefix(u, "https")]
			out, err := try(lan, 15*time.Second, "curl", "-sS", "--max-time", "5", "--cacert", caFile,
				"--resolve", "net.example.com:"+port+":"+appAddr, u)
			if err != nil || !strings.Contains(out, want) {
				t.Fatalf("%s: %s from the LAN through the proxy: %v %q", when, u, err, out)
			}
		}
	}
	domainWorks("after domains add")
	code, _ := try(lan, 15*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
		"--resolve", "unknown.example.com:80:"+appAddr, "http://unknown.example.com/")
	page, _ := try(lan, 15*time.Second, "curl", "-s", "--max-time", "5", "--resolve", "unknown.example.com:80:"+appAddr, "http://unknown.example.com/")
	if code != "404" || strings.Contains(page, web.ID) || strings.Contains(page, "net.example.com") || strings.Contains(page, web.IP.String()) {
		t.Fatalf("an unknown name: HTTP %s %q, want a 404 that names no VM", code, page)
	}
	// A domain to another port of the VM (--port).
	d.ok(t, "vm", "exec", web.ID, "--", "sh", "-c", "mkdir -p /alt && echo alt-page > /alt/index.html && httpd -p 8081 -h /alt")
	d.ok(t, "vm", "domains", "add", web.ID, "alt.example.com", "--port", "8081")
	if out, err := try(lan, 15*time.Second, "curl", "-sS", "--max-time", "5", "--resolve", "alt.example.com:80:"+appAddr, "http://alt.example.com/"); err != nil || !strings.Contains(out, "alt-page") {
		t.Fatalf("a domain to the VM's port 8081: %v %q", err, out)
	}
	if r := d.sj(t, "vm", "ports", "add", web.ID, "80/tcp"); r.code != exitConflict || !strings.Contains(r.stderr, "superjoltd's own") {
		t.Fatalf("a forward of the proxy's port 80: exit %d %q, want a conflict saying it is superjoltd's", r.code, r.stderr)
	}
	step("domain over HTTP and HTTPS (local CA), unknown name 404")

	// The guest reaches the LAN, which sees the box's address (masquerade).
	srv := exec.Command("ip", "netns", "exec", lan, "python3", "-m", "http.server", "9000", "--bind", lanAddr)
	var srvLog bytes.Buffer
	srv.Stdout, srv.Stderr = &srvLog, &srvLog
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	var reply string
	for i := 0; i < 20 && !strings.Contains(reply, "200"); i++ {
		time.Sleep(250 * time.Millisecond)
		r := d.sj(t, "vm", "exec", web.ID, "--", "sh", "-c", "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 5 "+lanAddr+" 9000 | head -1")
		reply = r.stdout
	}
	if !strings.Contains(reply, "200") {
		t.Fatalf("the guest did not reach the LAN's server: %q\n%s", reply, srvLog.String())
	}
	if !strings.Contains(srvLog.String(), appAddr) || strings.Contains(srvLog.String(), web.IP.String()) {
		t.Fatalf("the LAN's server saw the guest as other than the box's %s:\n%s", appAddr, srvLog.String())
	}
	step("guest -> LAN, seen as the box's address")

	// Accounts: bob's VM cannot open a TCP connection to alice's; alice's
	// second VM can.
	other := okJSON[model.VM](t, d, "vm", "create", "--account", bob.ID, "--tier", "nano", "--name", "bob-1")
	same := okJSON[model.VM](t, d, "vm", "create", "--account", alice.ID, "--tier", "nano", "--name", "net-2")
	probe := "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 " + web.IP.String() + " 80 | head -1"
	if got := d.sj(t, "vm", "exec", other.ID, "--", "sh", "-c", probe).stdout; strings.Contains(got, "200") {
		t.Fatalf("a VM of another account reached %s: %q", web.IP, got)
	}
	if got := d.sj(t, "vm", "exec", same.ID, "--", "sh", "-c", probe).stdout; !strings.Contains(got, "200") {
		t.Fatalf("a VM of the same account did not reach %s: %q\nfirewall:\n%s", web.IP, got, nftTable(app))
	}
	if r := d.sj(t, "vm", "domains", "add", same.ID, "net.example.com"); r.code != exitConflict || !strings.Contains(r.stderr, web.ID) {
		t.Fatalf("a second VM claiming net.example.com: exit %d %q, want a conflict naming %s", r.code, r.stderr, web.ID)
	}
	step("another account cannot reach it; the same account can; a domain is one VM's")

	// Same address and forward after a restore, a stop and start, and a
	// restart of superjoltd.
	bk := okJSON[model.Backup](t, d, "backup", "create", web.ID)
	d.ok(t, "backup", "restore", web.ID, bk.ID, "--yes")
	serveWeb(t, d, web.ID)
	forwardWorks("after a restore")
	d.ok(t, "vm", "stop", web.ID)
	if out, err := get(lan, "http://"+appAddr+":8080/"); err == nil {
		t.Fatalf("the forward answered while the VM was stopped: %q", out)
	}
	d.ok(t, "vm", "start", web.ID)
	serveWeb(t, d, web.ID)
	forwardWorks("after stop and start")
	boot := okJSON[model.VM](t, d, "vm", "show", web.ID).BootID
	d.restart(t)
	if got := okJSON[model.VM](t, d, "vm", "show", web.ID); got.BootID != boot {
		t.Fatalf("a restart of superjoltd rebooted the guest (boot %s -> %s)", boot, got.BootID)
	}
	// The guest and its web server ran on through the restart.
	forwardWorks("after a restart of superjoltd")
	domainWorks("after a restart of superjoltd (same local CA)")
	if got := okJSON[model.VM](t, d, "vm", "show", web.ID); got.IP != web.IP {
		t.Fatalf("the VM's address moved from %s to %s", web.IP, got.IP)
	}
	step("same IP and forward after restore, stop/start; a daemon restart reboots nothing")

	// The graveyard: the forward refuses, the address is free, no TAP.
	d.ok(t, "vm", "destroy", web.ID, "--yes")
	if out, err := get(lan, "http://"+appAddr+":8080/"); err == nil {
		t.Fatalf("the forward of a VM in the graveyard answered: %q", out)
	}
	if code, _ := try(lan, 15*time.Second, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "5",
		"--resolve", "net.example.com:80:"+appAddr, "http://net.example.com/"); code != "404" {
		t.Fatalf("the domain of a VM in the graveyard: HTTP %s, want 404", code)
	}
	if got := okJSON[model.VM](t, d, "vm", "show", web.ID); got.IP.IsValid() || got.LastIP != web.IP {
		t.Fatalf("in the graveyard: IP %v (want none: it is free) and last IP %v (want %s kept)", got.IP, got.LastIP, web.IP)
	}
	tap := "sjt-" + strings.TrimPrefix(web.ID, "vm-")
	if links := run(t, "ip", "-n", app, "-br", "link"); strings.Contains(links, tap) {
		t.Fatalf("TAP %s left while the VM is in the graveyard:\n%s", tap, links)
	}
	if table := nftTable(app); strings.Contains(table, web.IP.String()) {
		t.Fatalf("the firewall still has %s of a VM in the graveyard:\n%s", web.IP, table)
	}
	d.ok(t, "vm", "resume", web.ID)
	serveWeb(t, d, web.ID)
	forwardWorks("after a resume")
	domainWorks("after a resume")
	step("graveyard: forward refused, TAP gone; resume: back")

	// A reclaim: nothing of the VM in the firewall, no TAP.
	d.ok(t, "vm", "destroy", web.ID, "--yes")
	d.ok(t, "debug", "clock", "advance", "25h")
	if r := d.sj(t, "vm", "show", web.ID); r.code != exitNotFound {
		t.Fatalf("vm show after the reclaim: exit %d %s", r.code, r.stderr)
	}
	table := nftTable(app)
	for _, s := range []string{web.ID, web.IP.String(), ":8080", "dport 8080"} {
		if strings.Contains(table, s) {
			t.Fatalf("the firewall still mentions %q after the reclaim:\n%s", s, table)
		}
	}
	if links := run(t, "ip", "-n", app, "-br", "link"); strings.Contains(links, tap) {
		t.Fatalf("TAP %s left after the reclaim:\n%s", tap, links)
	}
	step("reclaim: nothing left in the firewall, no TAP")
}

// nftTable lists superjolt's tables in namespace ns.
func nftTable(ns string) string {
	a, _ := try(ns, 10*time.Second, "nft", "list", "table", "inet", "superjolt")
	b, _ := try(ns, 10*time.Second, "nft", "list", "table", "bridge", "superjolt")
	return a + b
}
