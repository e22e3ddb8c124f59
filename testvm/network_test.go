package testvm_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/testvm"
)

// TestHostname boots a guest named by the host and checks that the guest
// and its agent's ping agree.
func TestHostname(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{Hostname: "web-1"})
	if got := strings.TrimSpace(vm.Exec(t, "hostname")); got != "web-1" {
		t.Errorf("hostname = %q, want web-1", got)
	}
	if got := vm.Exec(t, "cat", "/etc/hostname"); got != "web-1\n" {
		t.Errorf("/etc/hostname = %q", got)
	}
	if got := vm.Exec(t, "cat", "/etc/hosts"); !strings.Contains(got, "\tweb-1\n") {
		t.Errorf("/etc/hosts has no line for web-1:\n%s", got)
	}
	ping, err := vm.Client().Ping(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if ping.Hostname != "web-1" || ping.BootConfigError != "" {
		t.Errorf("ping: hostname %q, boot config error %q", ping.Hostname, ping.BootConfigError)
	}
	// No NIC: the guest has no address to report.
	if len(ping.Addresses) != 0 {
		t.Errorf("ping reports addresses %v for a guest without a NIC", ping.Addresses)
	}
}

// TestBadBootConfig: a malformed superjolt.net (the host validates, so
// only a host bug passes one) does not stop the boot; ping says what went
// wrong, and the guest keeps the hostname on its disk.
func TestBadBootConfig(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{KernelArgs: "superjolt.net=10.77.0.2/16"})
	ping, err := vm.Client().Ping(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ping.BootConfigError, `superjolt.net="10.77.0.2/16"`) {
		t.Errorf("ping's boot config error %q does not name the bad value", ping.BootConfigError)
	}
	if ping.Hostname != "superjolt" || len(ping.Addresses) != 0 {
		t.Errorf("ping: hostname %q, addresses %v; want superjolt and none", ping.Hostname, ping.Addresses)
	}
}

// TestNetwork boots a guest whose NIC is on a TAP device in a network
// namespace this test makes (the guest's traffic can reach nothing else),
// and checks the guest's address and route, and TCP both ways.
func TestNetwork(t *testing.T) {
	ns := newNetNS(t)
	openTAP(t, ns, "sjtap0")
	ipIn(t, ns, "link", "set", "lo", "up")
	ipIn(t, ns, "addr", "add", "10.77.0.1/16", "dev", "sjtap0")
	ipIn(t, ns, "link", "set", "sjtap0", "up")

	vm := testvm.Boot(t, testvm.Options{
		Hostname: "net-1",
		Net: &vmm.GuestNet{
			Addr:    netip.MustParsePrefix("10.77.0.2/16"),
			Gateway: netip.MustParseAddr("10.77.0.1"),
			DNS:     []netip.Addr{netip.MustParseAddr("10.77.0.1")},
			MAC:     net.HardwareAddr{0x02, 0x53, 0x4a, 0x00, 0x00, 0x02},
			TAP:     "sjtap0",
			NetNS:   "/run/netns/" + ns,
		},
	})

	for _, line := range strings.Split(vm.Console(), "\n") {
		if strings.Contains(line, "boot config") {
			t.Log("guest: " + strings.TrimSpace(line))
		}
	}
	// The address is up before the agent says the boot is done: the first
	// ping after the boot reports it.
	ping, err := vm.Client().Ping(ctxT(t, 30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if want := netip.MustParsePrefix("10.77.0.2/16"); !slices.Contains(ping.Addresses, want) {
		t.Errorf("ping addresses %v lack %s", ping.Addresses, want)
	}
	if ping.Hostname != "net-1" || ping.BootConfigError != "" {
		t.Errorf("ping: hostname %q, boot config error %q", ping.Hostname, ping.BootConfigError)
	}
	if out := vm.Exec(t, "ip", "-4", "addr"); !strings.Contains(out, "inet 10.77.0.2/16") {
		t.Errorf("ip -4 addr in the guest:\n%s", out)
	}
	if out := vm.Exec(t, "ip", "route"); !strings.Contains(out, "default via 10.77.0.1") {
		t.Errorf("ip route in the guest:\n%s", out)
	}
	if out := vm.Exec(t, "ip", "link", "show", "eth0"); !strings.Contains(out, "02:53:4a:00:00:02") {
		t.Errorf("eth0 does not have the MAC the host gave:\n%s", out)
	}
	if out := vm.Exec(t, "cat", "/etc/resolv.conf"); out != "nameserver 10.77.0.1\n" {
		t.Errorf("/etc/resolv.conf = %q", out)
	}

	t.Run("namespace reaches a server in the guest", func(t *testing.T) {
		vm.Exec(t, "sh", "-c", "mkdir -p /tmp/www && echo hello-from-guest > /tmp/www/index.html && httpd -p 8080 -h /tmp/www")
		var body string
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := inNetNS(ns, func() error {
				var err error
				body, err = httpGet("10.77.0.2:8080")
				return err
			})
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("GET http://10.77.0.2:8080/ from the namespace: %v", err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		if !strings.Contains(body, "hello-from-guest") {
			t.Errorf("guest's httpd answered %q", body)
		}
	})

	t.Run("guest reaches a server in the namespace", func(t *testing.T) {
		var (
			mu      sync.Mutex
			clients []string
		)
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			clients = append(clients, r.RemoteAddr)
			mu.Unlock()
			io.WriteString(w, "hello-from-namespace\n")
		})}
		var l net.Listener
		if err := inNetNS(ns, func() error {
			var err error
			l, err = net.Listen("tcp", "10.77.0.1:8081")
			return err
		}); err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Close() })
		// busybox nc, not wget: the static busybox's wget crashes (SIGSEGV) in glibc's static NSS.
		out := vm.Exec(t, "sh", "-c", `printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 20 10.77.0.1 8081`)
		if !strings.HasSuffix(out, "\r\n\r\nhello-from-namespace\n") {
			t.Errorf("nc in the guest got %q", out)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(clients) != 1 || !strings.HasPrefix(clients[0], "10.77.0.2:") {
			t.Errorf("the namespace's server saw clients %v, want one from 10.77.0.2", clients)
		}
	})
}

// requireNetNS skips unless this test can make network namespaces and TAP
// devices: root, the ip command and /dev/net/tun.
func requireNetNS(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("network namespaces need the ip command (apt-get install iproute2)")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("TAP devices need /dev/net/tun: %v", err)
	}
}

var nsSeq struct {
	sync.Mutex
	n int
}

// newNetNS makes a network namespace for this test (ip netns add) and
// deletes it, with everything in it, when the test ends, failed or not.
func newNetNS(t testing.TB) string {
	t.Helper()
	requireNetNS(t)
	nsSeq.Lock()
	nsSeq.n++
	name := fmt.Sprintf("sjgnet-%d-%d", os.Getpid(), nsSeq.n)
	nsSeq.Unlock()
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
	})
	return name
}

// ipIn runs ip with args inside namespace ns.
func ipIn(t testing.TB, ns string, args ...string) {
	t.Helper()
	argv := append([]string{"netns", "exec", ns, "ip"}, args...)
	if out, err := exec.Command("ip", argv...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(argv, " "), err, out)
	}
}

// inNetNS runs fn on an OS thread that has entered namespace ns. Sockets
// that fn makes belong to ns for good, whichever thread uses them later.
// The thread is never unlocked, so it ends with its goroutine instead of
// going back, changed, to the runtime's pool.
func inNetNS(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open("/run/netns/"+ns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- fmt.Errorf("open namespace %s: %w", ns, err)
			return
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			errc <- fmt.Errorf("enter namespace %s: %w", ns, err)
			return
		}
		errc <- fn()
	}()
	return <-errc
}

// openTAP makes a persistent TAP device called name (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR) inside
// namespace ns, whose queue vmm opens for QEMU at the launch. It goes with the namespace.
func openTAP(t testing.TB, ns, name string) {
	t.Helper()
	if err := inNetNS(ns, func() error {
		fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		ifr, err := unix.NewIfreq(name)
		if err != nil {
			return err
		}
		ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
		if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
			return fmt.Errorf("TUNSETIFF %s: %w", name, err)
		}
		return unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1)
	}); err != nil {
		t.Fatalf("TAP %s in %s: %v", name, ns, err)
	}
}

// httpGet sends a plain HTTP/1.0 GET / to addr and returns the whole answer.
func httpGet(addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.0\r\nHost: guest\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(bufio.NewReader(c))
	return string(b), err
}
