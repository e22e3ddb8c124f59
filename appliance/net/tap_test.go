package net

import (
	stdnet "net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestTAPName(t *testing.T) {
	for _, tc := range []struct{ id, want string }{
		{"vm-abc123", "sjt-abc123"},
		{"vm-7k2p9q", "sjt-7k2p9q"},
		{"vm-12345678901", "sjt-12345678901"},
	} {
		if got := TAPName(tc.id); got != tc.want {
			t.Errorf("TAPName(%q) = %q, want %q", tc.id, got, tc.want)
		}
	}
	// Ids that do not fit, or are not vm-…, are hashed: stable, distinct, short enough.
	for _, id := range []string{"vm-123456789012", "abc123", "vm-ABC", "vm-a/b", "", "vm-"} {
		got := TAPName(id)
		if len(got) > 15 || !strings.HasPrefix(got, "sjt-") || got != TAPName(id) {
			t.Errorf("TAPName(%q) = %q: want a stable name of at most 15 bytes starting sjt-", id, got)
		}
		if got == TAPName(id+"x") {
			t.Errorf("TAPName(%q) = TAPName(%q) = %q", id, id+"x", got)
		}
	}
}

func TestMAC(t *testing.T) {
	a, b := MAC("vm-abc123"), MAC("vm-abc124")
	if a.String() != MAC("vm-abc123").String() {
		t.Errorf("MAC is not stable: %v, %v", a, MAC("vm-abc123"))
	}
	if a.String() == b.String() {
		t.Errorf("two ids, one MAC %v", a)
	}
	for _, m := range []string{a.String(), b.String()} {
		if !strings.HasPrefix(m, "02:") || len(m) != 17 {
			t.Errorf("MAC %s: want a locally administered unicast address 02:xx:xx:xx:xx:xx", m)
		}
	}
}

func TestBridgeAndTAP(t *testing.T) {
	ns, _ := newNetNS(t, "tap")
	inNS(t, ns, func() error {
		mtu, err := EnsureBridge("", netip.MustParsePrefix("10.77.0.0/16"))
		if err != nil {
			return err
		}
		if mtu != 1500 {
			t.Errorf("bridge MTU = %d, want 1500", mtu)
		}
		before := bridgeState(t)
		if want := "10.77.0.1/16 up"; before != want {
			t.Errorf("bridge: %s, want %s", before, want)
		}
		if _, err := EnsureBridge(DefaultBridge, netip.MustParsePrefix("10.77.0.0/16")); err != nil {
			return err
		}
		if again := bridgeState(t); again != before {
			t.Errorf("second EnsureBridge changed the bridge: %s, then %s", before, again)
		}
		if _, err := EnsureBridge(DefaultBridge, netip.MustParsePrefix("10.78.0.0/24")); err != nil {
			return err
		}
		if got, want := bridgeState(t), "10.78.0.1/24 up"; got != want {
			t.Errorf("bridge after a new subnet: %s, want %s", got, want)
		}

		name, mac := TAPName("vm-abc123"), MAC("vm-abc123")
		f, err := OpenTAP(name, DefaultBridge, mac)
		if err != nil {
			return err
		}
		checkTAP(t, name, mac)
		// The returned queue is the only one, with the flags QEMU expects.
		ifr, err := unix.NewIfreq("")
		if err != nil {
			return err
		}
		if err := unix.IoctlIfreq(int(f.Fd()), unix.TUNGETIFF, ifr); err != nil {
			return err
		}
		if got := ifr.Uint16() & tapFlags; got != tapFlags {
			t.Errorf("queue flags %#x, want %#x (TAP, no PI, vnet header)", got, tapFlags)
		}
		if _, err := OpenTAP(name, DefaultBridge, mac); err == nil || !strings.Contains(err.Error(), "held open") {
			t.Errorf("second OpenTAP while the first queue is open: %v, want a busy error", err)
		}
		// Closing the queue keeps the TAP (persistent); opening it again reuses it.
		f.Close()
		checkTAP(t, name, mac)
		f, err = OpenTAP(name, DefaultBridge, mac)
		if err != nil {
			return err
		}
		f.Close()
		checkTAP(t, name, mac)

		for range 2 {
			if err := RemoveTAP(name); err != nil {
				return err
			}
		}
		if _, err := netlink.LinkByName(name); err == nil {
			t.Errorf("TAP %s still there after RemoveTAP", name)
		}
		for range 2 {
			if err := RemoveBridge(DefaultBridge); err != nil {
				return err
			}
		}
		return nil
	})
}

// bridgeState describes the default bridge's IPv4 addresses and whether it is up.
func bridgeState(t testing.TB) string {
	t.Helper()
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := netlink.AddrList(br, unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	var s []string
	for _, a := range addrs {
		s = append(s, a.IPNet.String())
	}
	if br.Attrs().Flags&flagUp != 0 {
		s = append(s, "up")
	}
	return strings.Join(s, " ")
}

func checkTAP(t testing.TB, name string, mac stdnet.HardwareAddr) {
	t.Helper()
	link, err := netlink.LinkByName(name)
	if err != nil {
		t.Fatalf("TAP %s: %v", name, err)
	}
	br, err := netlink.LinkByName(DefaultBridge)
	if err != nil {
		t.Fatal(err)
	}
	a := link.Attrs()
	tun, ok := link.(*netlink.Tuntap)
	switch {
	case !ok || tun.Mode != netlink.TUNTAP_MODE_TAP:
		t.Errorf("%s is a %s, want a TAP", name, link.Type())
	case a.HardwareAddr.String() != HostMAC(mac).String():
		t.Errorf("TAP MAC %v, want %v (the host's end, not the guest's %v)", a.HardwareAddr, HostMAC(mac), mac)
	case a.MasterIndex != br.Attrs().Index:
		t.Errorf("TAP master %d, want the bridge %d", a.MasterIndex, br.Attrs().Index)
	case a.MTU != br.Attrs().MTU:
		t.Errorf("TAP MTU %d, want the bridge's %d", a.MTU, br.Attrs().MTU)
	case a.Flags&flagUp == 0:
		t.Errorf("TAP %s is down", name)
	}
	if pi, err := netlink.LinkGetProtinfo(link); err != nil || !pi.Hairpin {
		t.Errorf("TAP %s: hairpin mode off (%v)", name, err)
	}
}
