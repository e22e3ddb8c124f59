package net

import (
	"fmt"
	"io"
	stdnet "net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// TestTraffic builds the appliance's network in namespaces of its own and sends real TCP through it:
//
//	LAN 198.51.100.2 ── veth ── 198.51.100.1 APP sjbr0 10.77.0.1/16 ─┬─ sjt-aaa111 ── VM A1 10.77.0.2 (alice)
//	                                                                  ├─ sjt-bbb222 ── VM B  10.77.0.3 (bob)
//	                                                                  └─ sjt-ccc333 ── VM A2 10.77.0.4 (alice)
//
// Each VM is a namespace joined to the bridge by a veth named like its TAP, standing in for TAP and guest.
//
// It runs twice: with br_netfilter active in the appliance's namespace (the default on kernels that
// build it in, as on these machines: bridged frames then also pass the IP hooks) and without.
func TestTraffic(t *testing.T) {
	for _, brnf := range []string{"1", "0"} {
		t.Run("bridge-nf-call-iptables="+brnf, func(t *testing.T) { testTraffic(t, brnf) })
	}
}

func testTraffic(t *testing.T, brnf string) {
	app, _ := newNetNS(t, "app")
	lan, _ := newNetNS(t, "lan")
	rs := testRuleset()
	vms := map[string]netns.NsHandle{}
	for _, vm := range rs.VMs {
		vms[vm.ID], _ = newNetNS(t, vm.ID[3:])
	}
	a1, b, a2 := vms["vm-aaa111"], vms["vm-bbb222"], vms["vm-ccc333"]

	inNS(t, app, func() error {
		if _, err := EnsureBridge(DefaultBridge, rs.Subnet); err != nil {
			return err
		}
		if err := EnableForwarding(); err != nil {
			return err
		}
		const sysctl = "/proc/sys/net/bridge/bridge-nf-call-iptables"
		if err := os.WriteFile(sysctl, []byte(brnf), 0); os.IsNotExist(err) && brnf == "1" {
			t.Skip("needs br_netfilter (no " + sysctl + ")")
		} else if err != nil && brnf == "1" {
			return err
		}
		if err := veth("uplink", lan, netip.MustParsePrefix("198.51.100.1/24"), netip.MustParsePrefix("198.51.100.2/24"), netip.Addr{}); err != nil {
			return err
		}
		for _, vm := range rs.VMs {
			if err := veth(TAPName(vm.ID), vms[vm.ID], netip.Prefix{}, netip.PrefixFrom(vm.IP, 16), netip.MustParseAddr("10.77.0.1")); err != nil {
				return err
			}
			port, err := netlink.LinkByName(TAPName(vm.ID))
			if err != nil {
				return err
			}
			br, err := netlink.LinkByName(DefaultBridge)
			if err != nil {
				return err
			}
			if err := attachPort(port, br); err != nil { // as OpenTAP does
				return err
			}
		}
		return nil
	})

	// Servers that answer with the address they see the client come from.
	serve(t, a1, "10.77.0.2:80")
	serve(t, lan, "198.51.100.2:9000")

	// Without superjolt's tables, bob's VM reaches alice's: the isolation below is the tables' doing.
	if got, err := dial(b, "10.77.0.2:80"); err != nil {
		t.Fatalf("before Apply, bob's VM cannot reach alice's (%v): the test network is broken", err)
	} else {
		t.Logf("before Apply, bob -> alice: server sees %s", got)
	}

	fw, err := NewFirewall(nftables.WithNetNSFd(int(app)))
	if err != nil {
		t.Fatal(err)
	}
	defer fw.Close()
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name     string
		from     netns.NsHandle
		to       string
		wantFrom string // the client address the server sees; "" if the connection must fail
	}{
		{"from the LAN through the forward", lan, "198.51.100.1:8080", "198.51.100.2"},
		{"from the host itself through the forward", app, "198.51.100.1:8080", "198.51.100.1"},
		{"from the host itself through the forward on the gateway", app, "10.77.0.1:8080", "10.77.0.1"},
		{"from the same account directly", a2, "10.77.0.2:80", "10.77.0.4"},
		{"from another account directly", b, "10.77.0.2:80", ""},
		{"from another account through the forward (hairpin)", b, "198.51.100.1:8080", "10.77.0.1"},
		{"from the VM itself through its forward (hairpin)", a1, "10.77.0.1:8080", "10.77.0.1"},
		{"egress to the LAN is masqueraded", a1, "198.51.100.2:9000", "198.51.100.1"},
		{"the host reaches a VM directly", app, "10.77.0.2:80", "10.77.0.1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := dial(tc.from, tc.to)
			switch {
			case tc.wantFrom == "" && err == nil:
				t.Errorf("connected to %s, server saw %s: want no connection", tc.to, got)
			case tc.wantFrom != "" && err != nil:
				t.Errorf("connect to %s: %v", tc.to, err)
			case tc.wantFrom != "" && got != tc.wantFrom:
				t.Errorf("server at %s saw the client as %s, want %s", tc.to, got, tc.wantFrom)
			}
		})
	}

	// Bob's VM cannot go around the bridge table either: sending to alice's address through the
	// gateway (its MAC for alice's IP) makes the host route it, and the inet forward chain drops it.
	t.Run("from another account routed through the host", func(t *testing.T) {
		var brMAC stdnet.HardwareAddr
		inNS(t, app, func() error {
			br, err := netlink.LinkByName(DefaultBridge)
			brMAC = br.Attrs().HardwareAddr
			return err
		})
		routed := func(from netns.NsHandle, ip string) error {
			return runIn(from, func() error {
				eth0, err := netlink.LinkByName("eth0")
				if err != nil {
					return err
				}
				return netlink.NeighSet(&netlink.Neigh{LinkIndex: eth0.Attrs().Index, State: netlink.NUD_PERMANENT,
					IP: stdnet.ParseIP(ip), HardwareAddr: brMAC})
			})
		}
		if err := routed(b, "10.77.0.2"); err != nil {
			t.Fatal(err)
		}
		if got, err := dial(b, "10.77.0.2:80"); err == nil {
			t.Errorf("bob's VM reached alice's through the host; server saw %s", got)
		}
		// The same way, alice's other VM still gets through.
		if err := routed(a2, "10.77.0.2"); err != nil {
			t.Fatal(err)
		}
		if got, err := dial(a2, "10.77.0.2:80"); err != nil || got != "10.77.0.4" {
			t.Errorf("alice's VM through the host: saw %q, %v; want 10.77.0.4", got, err)
		}
	})

	// Bob's VM cannot pass itself off as alice's other VM: a datagram from 10.77.0.4 sent from bob's
	// port through the host would pass the inet forward chain (alice to alice), so the bridge
	// prerouting chain drops any source address that is not the port's own VM's. Both VMs still
	// send to 10.77.0.2 through the host (the neighbour entries of the test above).
	t.Run("spoofing another VM's address", func(t *testing.T) {
		got := udpServer(t, a1, "10.77.0.2:5000")
		inNS(t, b, func() error {
			eth0, err := netlink.LinkByName("eth0")
			if err != nil {
				return err
			}
			return netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(netip.MustParsePrefix("10.77.0.4/32"))})
		})
		send := func(from netns.NsHandle, src string) {
			inNS(t, from, func() error {
				c, err := stdnet.DialUDP("udp4", stdnet.UDPAddrFromAddrPort(netip.MustParseAddrPort(src)),
					stdnet.UDPAddrFromAddrPort(netip.MustParseAddrPort("10.77.0.2:5000")))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.Write([]byte("hello"))
				return err
			})
		}
		send(b, "10.77.0.4:6000")
		select {
		case from := <-got:
			t.Errorf("alice's VM got a datagram from %s sent by bob's VM", from)
		case <-time.After(500 * time.Millisecond):
		}
		// The real 10.77.0.4, the same way, gets through: the path works.
		send(a2, "10.77.0.4:6000")
		select {
		case from := <-got:
			if from != "10.77.0.4" {
				t.Errorf("datagram from %s, want 10.77.0.4", from)
			}
		case <-time.After(2 * time.Second):
			t.Error("alice's other VM's datagram did not arrive")
		}
	})

	// Once alice's VM is gone from the ruleset, its forward refuses.
	rs.VMs = rs.VMs[1:]
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if got, err := dial(lan, "198.51.100.1:8080"); err == nil {
		t.Errorf("the forward of a removed VM still connects; server saw %s", got)
	}
}

// veth makes a veth pair from the calling thread's namespace into peerNS (where its end is eth0,
// with peerAddr and a default route via gw if valid) and gives the local end localAddr if valid.
func veth(name string, peerNS netns.NsHandle, localAddr, peerAddr netip.Prefix, gw netip.Addr) error {
	la := netlink.NewLinkAttrs()
	la.Name = name
	if err := netlink.LinkAdd(&netlink.Veth{LinkAttrs: la, PeerName: "eth0", PeerNamespace: netlink.NsFd(int(peerNS))}); err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	link, err := netlink.LinkByName(name)
	if err != nil {
		return err
	}
	if localAddr.IsValid() {
		if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipNet(localAddr)}); err != nil {
			return err
		}
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return err
	}
	return runIn(peerNS, func() error {
		eth0, err := netlink.LinkByName("eth0")
		if err != nil {
			return err
		}
		if err := netlink.AddrAdd(eth0, &netlink.Addr{IPNet: ipNet(peerAddr)}); err != nil {
			return err
		}
		if err := netlink.LinkSetUp(eth0); err != nil {
			return err
		}
		if gw.IsValid() {
			return netlink.RouteAdd(&netlink.Route{LinkIndex: eth0.Attrs().Index, Gw: gw.AsSlice()})
		}
		return nil
	})
}

// serve runs a TCP server in ns at addr that writes the client's address, as it sees it, and closes.
func serve(t testing.TB, ns netns.NsHandle, addr string) {
	t.Helper()
	var l stdnet.Listener
	inNS(t, ns, func() (err error) {
		l, err = stdnet.Listen("tcp4", addr)
		return err
	})
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			host, _, _ := stdnet.SplitHostPort(c.RemoteAddr().String())
			io.WriteString(c, host)
			c.Close()
		}
	}()
}

// udpServer receives datagrams in ns at addr and sends the source address of each on the channel.
func udpServer(t testing.TB, ns netns.NsHandle, addr string) <-chan string {
	t.Helper()
	var c stdnet.PacketConn
	inNS(t, ns, func() (err error) {
		c, err = stdnet.ListenPacket("udp4", addr)
		return err
	})
	t.Cleanup(func() { c.Close() })
	got := make(chan string, 10)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			host, _, _ := stdnet.SplitHostPort(from.String())
			got <- host
		}
	}()
	return got
}

// dial connects from ns to addr with a short timeout and returns what the server wrote.
func dial(ns netns.NsHandle, addr string) (string, error) {
	var got string
	err := runIn(ns, func() error {
		c, err := stdnet.DialTimeout("tcp4", addr, time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(2 * time.Second))
		b, err := io.ReadAll(c)
		got = strings.TrimSpace(string(b))
		return err
	})
	return got, err
}
