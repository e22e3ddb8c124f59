package guest

import (
	"fmt"
	"net/netip"
	"strings"
)

// Kernel command-line keys the host sets for the guest (see the package
// documentation, "Boot configuration").
const (
	// CmdlineHostname is superjolt.hostname=NAME.
	CmdlineHostname = "superjolt.hostname"
	// CmdlineNet is superjolt.net=ADDR/PREFIX,GATEWAY[,DNS...].
	CmdlineNet = "superjolt.net"
)

// BootConfig is what the host tells a guest on its kernel command line.
type BootConfig struct {
	// Hostname is the VM's name; "" when the host passed none.
	Hostname string
	// Net is the guest's network; nil when the VM has none.
	Net *BootNet
}

// BootNet is a guest's static IPv4 network.
type BootNet struct {
	// Addr is the guest's address with the prefix length of its subnet
	// (10.77.0.2/16).
	Addr netip.Prefix
	// Gateway is the default route's next hop, inside Addr's subnet.
	Gateway netip.Addr
	// DNS are the name servers for /etc/resolv.conf, in order; may be
	// empty.
	DNS []netip.Addr
}

// Validate checks n: an IPv4 address that is neither the subnet's network
// nor its broadcast address, a gateway inside the subnet other than the
// address, and plain (unzoned) name server addresses.
func (n BootNet) Validate() error {
	a := n.Addr.Addr()
	if !n.Addr.IsValid() || !a.Is4() {
		return fmt.Errorf("guest address %q is not an IPv4 address with a prefix length", n.Addr)
	}
	if n.Addr.Bits() < 1 || n.Addr.Bits() > 30 {
		return fmt.Errorf("guest address %s: prefix length must be 1 to 30", n.Addr)
	}
	if a == n.Addr.Masked().Addr() || a == broadcast(n.Addr) {
		return fmt.Errorf("guest address %s is the network or broadcast address of its subnet", n.Addr)
	}
	if !n.Gateway.IsValid() || !n.Gateway.Is4() {
		return fmt.Errorf("gateway %q is not an IPv4 address", n.Gateway)
	}
	if !n.Addr.Contains(n.Gateway) || n.Gateway == a {
		return fmt.Errorf("gateway %s must be another address of the guest's subnet %s", n.Gateway, n.Addr.Masked())
	}
	for _, d := range n.DNS {
		if !d.IsValid() || d.Zone() != "" {
			return fmt.Errorf("name server %q is not a plain IP address", d)
		}
	}
	return nil
}

func broadcast(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().As4()
	host := uint32(1)<<(32-p.Bits()) - 1
	v := uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	v |= host
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// String is n in the form of superjolt.net's value:
// ADDR/PREFIX,GATEWAY[,DNS...].
func (n BootNet) String() string {
	parts := []string{n.Addr.String(), n.Gateway.String()}
	for _, d := range n.DNS {
		parts = append(parts, d.String())
	}
	return strings.Join(parts, ",")
}

// CmdlineArgs returns the kernel command-line words that carry c
// (superjolt.hostname=… superjolt.net=…), after validating every value;
// "" for an empty c. The host side (package vmm) builds its words with it.
func (c BootConfig) CmdlineArgs() (string, error) {
	var words []string
	if c.Hostname != "" {
		if err := validHostname(c.Hostname); err != nil {
			return "", err
		}
		words = append(words, CmdlineHostname+"="+c.Hostname)
	}
	if c.Net != nil {
		if err := c.Net.Validate(); err != nil {
			return "", err
		}
		words = append(words, CmdlineNet+"="+c.Net.String())
	}
	return strings.Join(words, " "), nil
}

// ParseCmdline reads the superjolt.* words of a kernel command line
// (/proc/cmdline); other words are ignored, and of a repeated key the last
// one counts, as with the kernel's own parameters. A malformed value is an
// error that names it.
func ParseCmdline(cmdline string) (BootConfig, error) {
	var c BootConfig
	for _, w := range strings.Fields(cmdline) {
		key, val, _ := strings.Cut(w, "=")
		switch key {
		case CmdlineHostname:
			if err := validHostname(val); err != nil {
				return BootConfig{}, err
			}
			c.Hostname = val
		case CmdlineNet:
			n, err := parseBootNet(val)
			if err != nil {
				return BootConfig{}, err
			}
			c.Net = n
		}
	}
	return c, nil
}

func parseBootNet(val string) (*BootNet, error) {
	parts := strings.Split(val, ",")
	if len(parts) < 2 {
		return nil, fmt.Errorf("%s=%q: want ADDR/PREFIX,GATEWAY[,DNS...]", CmdlineNet, val)
	}
	var n BootNet
	var err error
	if n.Addr, err = netip.ParsePrefix(parts[0]); err != nil {
		return nil, fmt.Errorf("%s=%q: address %q: %v", CmdlineNet, val, parts[0], err)
	}
	if n.Gateway, err = netip.ParseAddr(parts[1]); err != nil {
		return nil, fmt.Errorf("%s=%q: gateway %q: %v", CmdlineNet, val, parts[1], err)
	}
	for _, p := range parts[2:] {
		d, err := netip.ParseAddr(p)
		if err != nil {
			return nil, fmt.Errorf("%s=%q: name server %q: %v", CmdlineNet, val, p, err)
		}
		n.DNS = append(n.DNS, d)
	}
	if err := n.Validate(); err != nil {
		return nil, fmt.Errorf("%s=%q: %w", CmdlineNet, val, err)
	}
	return &n, nil
}

// validHostname accepts one DNS label: 1 to 63 lowercase letters, digits
// and dashes, not starting or ending with a dash (what a VM name is).
func validHostname(s string) error {
	ok := s != "" && len(s) <= 63 && s[0] != '-' && s[len(s)-1] != '-'
	for i := 0; ok && i < len(s); i++ {
		c := s[i]
		ok = c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-'
	}
	if !ok {
		return fmt.Errorf("%s=%q: a hostname is 1-63 lowercase letters, digits and dashes, not starting or ending with a dash", CmdlineHostname, s)
	}
	return nil
}
