package net

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Firewall replaces superjolt's nftables tables in one network namespace.
type Firewall struct {
	conn *nftables.Conn
}

// NewFirewall returns a Firewall on a netlink connection made with opts: none for the calling
// thread's network namespace, nftables.WithNetNSFd(fd) for another one.
func NewFirewall(opts ...nftables.ConnOption) (*Firewall, error) {
	opts = append(opts, nftables.WithSockOptions(bigBuffers))
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &Firewall{conn: conn}, nil
}

// batchBuffer is the size of the netlink socket's buffers. The whole table goes in one batch, sent
// in one message (about 1.5 MiB for 1,000 VMs with 2,000 forwards), and every part of it is acked;
// the default buffers (about 200 KiB) refuse that with EMSGSIZE or lose acks with ENOBUFS.
const batchBuffer = 64 << 20

// bigBuffers gives the netlink socket batchBuffer bytes each way, beyond net.core.wmem_max and
// rmem_max (the Firewall needs CAP_NET_ADMIN anyway).
func bigBuffers(c *netlink.Conn) error {
	raw, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = raw.Control(func(fd uintptr) {
		for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
			if err := unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, opt, batchBuffer); err != nil && serr == nil {
				serr = fmt.Errorf("netlink socket buffers: %w", err)
			}
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// Apply implements DESIGN.md "Networking": one table of superjolt's own, replaced atomically from
// the store. It replaces the tables inet superjolt and bridge superjolt with what rs says, in one
// batch: the kernel applies all of it or none of it, and no packet ever sees half a ruleset. Other
// tables are not touched. See build for the rules.
//
// VM-to-VM traffic on the bridge has its packet mark overwritten (the account number of its source,
// and bit 30 for a forward bridged by br_netfilter); superjolt does not read the mark of any other
// traffic, nor change it.
func (fw *Firewall) Apply(rs Ruleset) error {
	p, err := rs.build()
	if err != nil {
		return fmt.Errorf("firewall: %w", err)
	}
	c := fw.conn
	for _, t := range []*nftables.Table{p.inet, p.bridge} {
		// Add, delete, add: deletes the old table if there is one, and makes a fresh one.
		c.AddTable(t)
		c.DelTable(t)
		c.AddTable(t)
	}
	for _, ch := range p.chains {
		c.AddChain(ch)
	}
	for _, s := range p.sets {
		if err := c.AddSet(s.set, s.elems); err != nil {
			return fmt.Errorf("firewall: set %s: %w", s.set.Name, err)
		}
	}
	for _, r := range p.rules {
		c.AddRule(r)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("firewall: replace table %s: %w", TableName, err)
	}
	return nil
}

// Remove deletes superjolt's tables, if they exist, in one batch.
func (fw *Firewall) Remove() error {
	for _, t := range []*nftables.Table{
		{Name: TableName, Family: nftables.TableFamilyINet},
		{Name: TableName, Family: nftables.TableFamilyBridge},
	} {
		fw.conn.AddTable(t)
		fw.conn.DelTable(t)
	}
	if err := fw.conn.Flush(); err != nil {
		return fmt.Errorf("firewall: remove table %s: %w", TableName, err)
	}
	return nil
}

// Warnings implements the last rule of DESIGN.md "Networking" on the firewall: it names what on this
// host would drop the VMs' forwarded traffic whatever superjolt's table says, each with what to do, as
// Incus warns. No warnings means nothing was found. The chains are read through the Firewall's
// connection; br_netfilter and ip_forward in the calling thread's namespace.
func (fw *Firewall) Warnings() []string {
	var w []string
	if brNetfilter() {
		w = append(w, "br_netfilter is active (bridge-nf-call-iptables=1): traffic between VMs on the bridge "+
			"also passes the host's iptables and nftables forward rules, which may drop it; unload it "+
			"(`modprobe -r br_netfilter`) or set net.bridge.bridge-nf-call-iptables=0 and "+
			"net.bridge.bridge-nf-call-ip6tables=0")
	}
	chains, err := fw.conn.ListChains()
	if err != nil {
		w = append(w, fmt.Sprintf("cannot list the host's nftables chains (%v): check that no other "+
			"firewall drops forwarded traffic", err))
	}
	for _, ch := range chains {
		if ch.Table == nil || ch.Table.Name == TableName || ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookForward ||
			ch.Policy == nil || *ch.Policy != nftables.ChainPolicyDrop {
			continue
		}
		w = append(w, fmt.Sprintf("chain %s of table %s %s has policy drop on the forward hook (Docker and "+
			"firewalld do this): traffic to and from the VMs will be dropped unless that chain accepts it; "+
			"add rules there that accept traffic in and out of the bridge, or change its policy",
			ch.Name, familyName(ch.Table.Family), ch.Table.Name))
	}
	if b, err := os.ReadFile(ipForward); err == nil && strings.TrimSpace(string(b)) != "1" {
		w = append(w, "IPv4 forwarding is off (net.ipv4.ip_forward=0): VMs cannot reach beyond the host "+
			"and forwards do not work; superjolt turns it on with EnableForwarding")
	}
	return w
}

// brNetfilter reports whether bridged IPv4 traffic passes the IP hooks: br_netfilter is a loaded
// module, or built in (then only /proc/sys/net/bridge shows it) with bridge-nf-call-iptables on.
func brNetfilter() bool {
	b, err := os.ReadFile("/proc/sys/net/bridge/bridge-nf-call-iptables")
	if err == nil {
		return strings.TrimSpace(string(b)) == "1"
	}
	_, err = os.Stat("/sys/module/br_netfilter")
	return err == nil
}

// Close closes the Firewall's netlink connection.
func (fw *Firewall) Close() error {
	return fw.conn.CloseLasting()
}

const ipForward = "/proc/sys/net/ipv4/ip_forward"

// EnableForwarding implements DESIGN.md "Networking" (egress and forwards need the host to route):
// it turns on IPv4 forwarding in the calling thread's network namespace.
func EnableForwarding() error {
	err := os.WriteFile(ipForward, []byte("1\n"), 0)
	if errors.Is(err, os.ErrPermission) {
		return fmt.Errorf("enable IPv4 forwarding: %w (superjoltd needs CAP_NET_ADMIN)", err)
	}
	if err != nil {
		return fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return nil
}

func familyName(f nftables.TableFamily) string {
	switch f {
	case nftables.TableFamilyIPv4:
		return "ip"
	case nftables.TableFamilyIPv6:
		return "ip6"
	case nftables.TableFamilyINet:
		return "inet"
	case nftables.TableFamilyBridge:
		return "bridge"
	case nftables.TableFamilyARP:
		return "arp"
	case nftables.TableFamilyNetdev:
		return "netdev"
	}
	return fmt.Sprint(f)
}
