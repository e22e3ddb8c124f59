package net

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultBridge is the name of the bridge that holds the VMs' TAPs unless the operator names another.
const DefaultBridge = "sjbr0"

// DefaultSubnet is the VM subnet unless the operator chooses another; its first host address is the
// gateway, held by the bridge.
var DefaultSubnet = netip.MustParsePrefix("10.77.0.0/16")

// Gateway returns the gateway address of subnet with its prefix length: the first host address of
// the prefix (10.77.0.1/16 for 10.77.0.0/16). The subnet must be IPv4 and leave room for VMs.
func Gateway(subnet netip.Prefix) (netip.Prefix, error) {
	if !subnet.IsValid() || !subnet.Addr().Is4() {
		return netip.Prefix{}, fmt.Errorf("subnet %v: want an IPv4 prefix such as %v", subnet, DefaultSubnet)
	}
	if subnet.Bits() > 29 {
		return netip.Prefix{}, fmt.Errorf("subnet %v is too small for a gateway and VMs; use a /29 or larger", subnet)
	}
	return netip.PrefixFrom(subnet.Masked().Addr().Next(), subnet.Bits()), nil
}

// EnsureBridge implements the first rule of DESIGN.md "Networking": one bridge (DefaultBridge when
// name is empty) holds the gateway address of the VM subnet. It creates the bridge if it is missing,
// sets it up, and leaves the gateway address of subnet as its only IPv4 address (an address from an
// earlier subnet is replaced). It is idempotent: a second call with the same values changes nothing.
// It returns the bridge's MTU, which the TAPs take.
func EnsureBridge(name string, subnet netip.Prefix) (mtu int, err error) {
	if name == "" {
		name = DefaultBridge
	}
	gw, err := Gateway(subnet)
	if err != nil {
		return 0, err
	}
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		la := netlink.NewLinkAttrs()
		la.Name = name
		// An address of its own: without one a bridge takes its lowest port's, and changes it
		// as VMs come and go.
		la.HardwareAddr = derivedMAC("superjolt bridge " + name)
		if err := netlink.LinkAdd(&netlink.Bridge{LinkAttrs: la}); err != nil {
			return 0, fmt.Errorf("create bridge %s: %w", name, err)
		}
		if link, err = netlink.LinkByName(name); err != nil {
			return 0, fmt.Errorf("bridge %s: %w", name, err)
		}
	case err != nil:
		return 0, fmt.Errorf("bridge %s: %w", name, err)
	case link.Type() != "bridge":
		return 0, fmt.Errorf("%s is a %s, not a bridge: remove it or choose another bridge name", name, link.Type())
	}

	addrs, err := netlink.AddrList(link, unix.AF_INET)
	if err != nil {
		return 0, fmt.Errorf("addresses of %s: %w", name, err)
	}
	have := false
	for _, a := range addrs {
		p, ok := prefixOf(a)
		if ok && p == gw {
			have = true
			continue
		}
		if err := netlink.AddrDel(link, &a); err != nil {
			return 0, fmt.Errorf("remove old address %v from %s: %w", a.IPNet, name, err)
		}
	}
	if !have {
		addr := &netlink.Addr{IPNet: ipNet(gw)}
		if err := netlink.AddrAdd(link, addr); err != nil {
			return 0, fmt.Errorf("add %v to %s: %w", gw, name, err)
		}
	}
	if link.Attrs().Flags&flagUp == 0 {
		if err := netlink.LinkSetUp(link); err != nil {
			return 0, fmt.Errorf("set %s up: %w", name, err)
		}
	}
	return link.Attrs().MTU, nil
}

// RemoveBridge deletes the bridge name. A bridge that does not exist is not an error.
func RemoveBridge(name string) error {
	link, err := netlink.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("bridge %s: %w", name, err)
	}
	if link.Type() != "bridge" {
		return fmt.Errorf("%s is a %s, not a bridge; leaving it alone", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove bridge %s: %w", name, err)
	}
	return nil
}
