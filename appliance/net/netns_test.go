package net

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// requireNetAdmin skips t unless it runs as root with /dev/net/tun, which every test here needs to
// make network namespaces, bridges, TAPs and nftables tables.
func requireNetAdmin(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		t.Skipf("needs /dev/net/tun: %v", err)
	}
}

// requireNft skips t unless the nft command is there, which the tests use to look at the tables.
func requireNft(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs the nft command to look at the tables (apt-get install nftables, or scripts/install-deps)")
	}
}

// newNetNS creates a named network namespace for t (so that `ip netns exec` and nft can look into
// it) and deletes it when t ends, failed or not. Nothing in it can reach the host's network.
func newNetNS(t testing.TB, name string) (netns.NsHandle, string) {
	t.Helper()
	requireNetAdmin(t)
	name = fmt.Sprintf("sjtest%d-%s", os.Getpid(), name)
	var h netns.NsHandle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		// NewNamed moves this thread into the new namespace; it is never unlocked, so it ends with
		// the goroutine and no other goroutine ever runs in that namespace by accident.
		runtime.LockOSThread()
		h, err = netns.NewNamed(name)
	}()
	<-done
	if err != nil {
		t.Fatalf("create network namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		h.Close()
		if err := netns.DeleteNamed(name); err != nil {
			t.Errorf("delete network namespace %s: %v", name, err)
		}
	})
	// Loopback up, as in any real namespace.
	inNS(t, h, func() error {
		lo, err := netlink.LinkByName("lo")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(lo)
	})
	return h, name
}

// inNS runs f on a thread of its own in the network namespace ns and fails t if f fails. Sockets,
// links and TAPs that f makes live in ns.
func inNS(t testing.TB, ns netns.NsHandle, f func() error) {
	t.Helper()
	if err := runIn(ns, f); err != nil {
		t.Fatal(err)
	}
}

// runIn runs f on a thread of its own in the network namespace ns and returns its error.
func runIn(ns netns.NsHandle, f func() error) error {
	errc := make(chan error, 1)
	go func() {
		// The thread is never unlocked: it ends with the goroutine, namespace and all.
		runtime.LockOSThread()
		if err := netns.Set(ns); err != nil {
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		errc <- f()
	}()
	return <-errc
}

// nsRun runs a command in the named namespace (to look, with nft or ip) and returns its output.
func nsRun(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command("ip", append([]string{"netns", "exec", name}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("ip netns exec %s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
