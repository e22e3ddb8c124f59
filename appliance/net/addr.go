package net

import (
	stdnet "net"
	"net/netip"

	"github.com/vishvananda/netlink"
)

// flagUp is IFF_UP in a link's flags.
const flagUp = stdnet.FlagUp

func prefixOf(a netlink.Addr) (netip.Prefix, bool) {
	if a.IPNet == nil {
		return netip.Prefix{}, false
	}
	ip, ok := netip.AddrFromSlice(a.IPNet.IP)
	if !ok {
		return netip.Prefix{}, false
	}
	ones, _ := a.IPNet.Mask.Size()
	return netip.PrefixFrom(ip.Unmap(), ones), true
}

func ipNet(p netip.Prefix) *stdnet.IPNet {
	bits := 32
	if p.Addr().Is6() {
		bits = 128
	}
	return &stdnet.IPNet{IP: p.Addr().AsSlice(), Mask: stdnet.CIDRMask(p.Bits(), bits)}
}
