package net

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// TableName is the name of superjolt's own nftables tables: one of family inet (NAT and routed
// traffic) and one of family bridge (traffic between the bridge's ports). Nothing else is touched.
const TableName = "superjolt"

// Ruleset is everything superjolt's nftables tables are built from; the appliance derives it from
// its store (DESIGN.md "Networking": one table of superjolt's own, replaced atomically from the store).
type Ruleset struct {
	Subnet netip.Prefix // the VM subnet; DefaultSubnet if not valid
	Bridge string       // the bridge that holds the VMs' TAPs; DefaultBridge if empty
	VMs    []VM         // the VMs that exist (running or stopped); not those in the graveyard or archive
}

// VM is one VM as the firewall sees it.
type VM struct {
	ID       string     // the VM's id; its TAP is TAPName(ID)
	Account  string     // VMs of different accounts cannot reach each other
	IP       netip.Addr // in the Ruleset's subnet
	Forwards []Forward
}

// Forward is a port forward: connections to HostPort on any of the host's addresses go to the VM's
// GuestPort.
type Forward struct {
	Proto     string // "tcp" or "udp"
	HostPort  uint16
	GuestPort uint16
}

// The chains and sets of the two tables. Their layout:
//
//	inet superjolt
//	  prerouting  nat    dstnat  one DNAT rule per forward (traffic from outside and from VMs)
//	  output      nat    dstnat  the same DNAT rules (traffic the host itself sends to its own address)
//	  postrouting nat    srcnat  masquerade the subnet leaving by another interface than the bridge;
//	                             masquerade DNAT'd traffic from a VM back onto the bridge (hairpin)
//	  forward     filter filter  routed VM-to-VM traffic: allowed if DNAT'd or within one account
//	  map vm_account  ipv4_addr : mark           VM address -> account number
//	  set vm_member   ipv4_addr . mark           VM address and its account number
//	bridge superjolt
//	  prerouting  filter -200    frames from a VM's port: ARP, or IPv4 whose source is that port's VM
//	  forward     filter 100     frames between two VMs' ports: ARP, a forward's DNAT (br_netfilter),
//	                             or IPv4 between two VMs of one account
//	  map port_account ifname . ipv4_addr : mark        TAP and VM address -> account number
//	  set port_member  ifname . ipv4_addr . mark        TAP, VM address and account number
const (
	setVMAccount   = "vm_account"
	setVMMember    = "vm_member"
	setPortAccount = "port_account"
	setPortMember  = "port_member"
)

// plan is a Ruleset turned into nftables objects, not yet sent to the kernel.
type plan struct {
	inet, bridge *nftables.Table
	chains       []*nftables.Chain
	sets         []planSet
	rules        []*nftables.Rule
}

type planSet struct {
	set   *nftables.Set
	elems []nftables.SetElement
}

// validate checks rs and fills in its defaults.
func (rs Ruleset) validate() (Ruleset, error) {
	if rs.Bridge == "" {
		rs.Bridge = DefaultBridge
	}
	if len(rs.Bridge) >= unix.IFNAMSIZ {
		return rs, fmt.Errorf("bridge name %q is longer than %d bytes", rs.Bridge, unix.IFNAMSIZ-1)
	}
	if !rs.Subnet.IsValid() {
		rs.Subnet = DefaultSubnet
	}
	rs.Subnet = rs.Subnet.Masked()
	gw, err := Gateway(rs.Subnet)
	if err != nil {
		return rs, err
	}
	ips := map[netip.Addr]string{}
	ports := map[string]string{}
	for _, vm := range rs.VMs {
		switch {
		case vm.ID == "":
			return rs, fmt.Errorf("a VM with address %v has no id", vm.IP)
		case !rs.Subnet.Contains(vm.IP):
			return rs, fmt.Errorf("%s: address %v is not in the subnet %v", vm.ID, vm.IP, rs.Subnet)
		case vm.IP == gw.Addr() || vm.IP == rs.Subnet.Addr():
			return rs, fmt.Errorf("%s: address %v is reserved in %v", vm.ID, vm.IP, rs.Subnet)
		}
		if other, ok := ips[vm.IP]; ok {
			return rs, fmt.Errorf("%s and %s have the same address %v", other, vm.ID, vm.IP)
		}
		ips[vm.IP] = vm.ID
		for _, f := range vm.Forwards {
			if _, ok := l4proto[f.Proto]; !ok {
				return rs, fmt.Errorf("%s: forward protocol %q: want tcp or udp", vm.ID, f.Proto)
			}
			if f.HostPort == 0 || f.GuestPort == 0 {
				return rs, fmt.Errorf("%s: forward %d:%d/%s: ports run from 1 to 65535", vm.ID, f.HostPort, f.GuestPort, f.Proto)
			}
			key := fmt.Sprintf("%d/%s", f.HostPort, f.Proto)
			if other, ok := ports[key]; ok {
				return rs, fmt.Errorf("host port %s is forwarded by both %s and %s", key, other, vm.ID)
			}
			ports[key] = vm.ID
		}
	}
	return rs, nil
}

var l4proto = map[string]byte{"tcp": unix.IPPROTO_TCP, "udp": unix.IPPROTO_UDP}

// build turns rs into nftables objects. It is a pure function of rs: the same Ruleset gives the same
// plan, in the same order.
func (rs Ruleset) build() (*plan, error) {
	rs, err := rs.validate()
	if err != nil {
		return nil, err
	}
	p := &plan{
		inet:   &nftables.Table{Name: TableName, Family: nftables.TableFamilyINet},
		bridge: &nftables.Table{Name: TableName, Family: nftables.TableFamilyBridge},
	}
	accept := nftables.ChainPolicyAccept
	chain := func(t *nftables.Table, name string, typ nftables.ChainType, hook *nftables.ChainHook, prio *nftables.ChainPriority) *nftables.Chain {
		c := &nftables.Chain{Name: name, Table: t, Type: typ, Hooknum: hook, Priority: prio}
		if typ == nftables.ChainTypeFilter {
			c.Policy = &accept
		}
		p.chains = append(p.chains, c)
		return c
	}
	pre := chain(p.inet, "prerouting", nftables.ChainTypeNAT, nftables.ChainHookPrerouting, nftables.ChainPriorityNATDest)
	out := chain(p.inet, "output", nftables.ChainTypeNAT, nftables.ChainHookOutput, nftables.ChainPriorityNATDest)
	post := chain(p.inet, "postrouting", nftables.ChainTypeNAT, nftables.ChainHookPostrouting, nftables.ChainPriorityNATSource)
	fwd := chain(p.inet, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityFilter)
	// The bridge chains run around br_netfilter's hooks (priority 0): spoofed frames are dropped before
	// they reach the IP hooks, and frames between ports are judged after the inet forward chain.
	bpre := chain(p.bridge, "prerouting", nftables.ChainTypeFilter, nftables.ChainHookPrerouting, nftables.ChainPriorityRef(-200))
	bfwd := chain(p.bridge, "forward", nftables.ChainTypeFilter, nftables.ChainHookForward, nftables.ChainPriorityRef(100))

	// Accounts are numbered in the order of their names, so that the same Ruleset gives the same sets.
	var accounts []string
	for _, vm := range rs.VMs {
		accounts = append(accounts, vm.Account)
	}
	slices.Sort(accounts)
	accounts = slices.Compact(accounts)
	accountOf := func(name string) []byte {
		n, _ := slices.BinarySearch(accounts, name)
		return binaryutil.NativeEndian.PutUint32(uint32(n + 1))
	}

	vmAccount := &nftables.Set{Table: p.inet, ID: 1, Name: setVMAccount, IsMap: true, KeyType: nftables.TypeIPAddr, DataType: nftables.TypeMark}
	vmMember := &nftables.Set{Table: p.inet, ID: 2, Name: setVMMember, Concatenation: true, KeyType: nftables.MustConcatSetType(nftables.TypeIPAddr, nftables.TypeMark)}
	portAccount := &nftables.Set{Table: p.bridge, ID: 3, Name: setPortAccount, IsMap: true, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr), DataType: nftables.TypeMark}
	portMember := &nftables.Set{Table: p.bridge, ID: 4, Name: setPortMember, Concatenation: true,
		KeyType: nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr, nftables.TypeMark)}
	var vmAccountE, vmMemberE, portAccountE, portMemberE []nftables.SetElement
	for _, vm := range rs.VMs {
		ip, acct, tap := vm.IP.AsSlice(), accountOf(vm.Account), ifname(TAPName(vm.ID))
		vmAccountE = append(vmAccountE, nftables.SetElement{Key: ip, Val: acct})
		vmMemberE = append(vmMemberE, nftables.SetElement{Key: cat(ip, acct)})
		portAccountE = append(portAccountE, nftables.SetElement{Key: cat(tap, ip), Val: acct})
		portMemberE = append(portMemberE, nftables.SetElement{Key: cat(tap, ip, acct)})
	}
	p.sets = []planSet{{vmAccount, vmAccountE}, {vmMember, vmMemberE}, {portAccount, portAccountE}, {portMember, portMemberE}}

	rule := func(c *nftables.Chain, comment string, exprs ...[]expr.Any) {
		r := &nftables.Rule{Table: c.Table, Chain: c, Exprs: slices.Concat(exprs...)}
		if comment != "" {
			r.UserData = userdata.AppendString(nil, userdata.TypeComment, comment)
		}
		p.rules = append(p.rules, r)
	}
	br := ifname(rs.Bridge)
	verdict := func(k expr.VerdictKind) []expr.Any { return []expr.Any{&expr.Verdict{Kind: k}} }

	// (b) Port forwards: to any of the host's own addresses, from outside or from a VM (prerouting)
	// and from the host itself (output).
	for _, vm := range rs.VMs {
		for _, f := range vm.Forwards {
			dnat := slices.Concat(
				isIPv4(),
				[]expr.Any{
					&expr.Fib{Register: 1, FlagDADDR: true, ResultADDRTYPE: true},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binaryutil.NativeEndian.PutUint32(unix.RTN_LOCAL)},
					&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{l4proto[f.Proto]}},
					&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
					&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, f.HostPort)},
					&expr.Immediate{Register: 1, Data: vm.IP.AsSlice()},
					&expr.Immediate{Register: 2, Data: binary.BigEndian.AppendUint16(nil, f.GuestPort)},
					&expr.NAT{Type: expr.NATTypeDestNAT, Family: unix.NFPROTO_IPV4, RegAddrMin: 1, RegProtoMin: 2, Specified: true},
				})
			comment := fmt.Sprintf("%s %d:%d/%s", vm.ID, f.HostPort, f.GuestPort, f.Proto)
			rule(pre, comment, dnat)
			rule(out, comment, dnat)
		}
	}

	// (a) Egress: the subnet leaving by any other interface than the bridge is masqueraded.
	rule(post, "egress", isIPv4(), saddrIn(rs.Subnet), cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpNeq, br),
		[]expr.Any{&expr.Masq{}})
	// (c) Hairpin: a VM reaching a forward through the host's address is masqueraded, so that the
	// reply goes back through the host and its DNAT is undone.
	rule(post, "hairpin", isIPv4(), saddrIn(rs.Subnet), cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br),
		ctDNAT(), []expr.Any{&expr.Masq{}})

	// (d) Isolation of routed traffic: a VM sending to another VM's address through the gateway is
	// routed by the host, from the bridge back onto it. A forward is public, so DNAT'd traffic passes;
	// otherwise both ends must belong to one account. The account number of the source travels in the
	// packet mark between the two lookups (nft cannot list a rule that keeps it in a register): only
	// VM-to-VM packets are marked, and superjolt uses the mark for nothing else.
	onBridge := slices.Concat(cmpIfname(expr.MetaKeyIIFNAME, expr.CmpOpEq, br), cmpIfname(expr.MetaKeyOIFNAME, expr.CmpOpEq, br))
	rule(fwd, "forwards are public", onBridge, ctDNAT(), []expr.Any{
		// meta mark set meta mark | markPublic, for the bridge forward chain under br_netfilter.
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(markPublic)), Xor: binaryutil.NativeEndian.PutUint32(markPublic)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}, verdict(expr.VerdictAccept))
	rule(fwd, "same account", onBridge, isIPv4(), []expr.Any{
		// meta mark set ip saddr map @vm_account ip daddr . meta mark @vm_member
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 1, SetName: setVMAccount, SetID: 1, DestRegister: 1, IsDestRegSet: true},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Payload{DestRegister: 8, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 9},
		&expr.Lookup{SourceRegister: 8, SetName: setVMMember, SetID: 2},
	}, verdict(expr.VerdictAccept))
	rule(fwd, "other accounts", onBridge, verdict(expr.VerdictDrop))

	// (d) Isolation on the bridge. Frames between two TAPs are switched by the bridge and never reach
	// the inet forward hook (unless br_netfilter is loaded), so the bridge table filters them. A port
	// speaks ARP and IPv4 from its own VM's address only (no spoofing another VM, no IPv6 or VLAN
	// frames around the rules); a frame between two ports passes only between VMs of one account, each
	// on its own TAP.
	//
	// The bridge family cannot match the bridge's name on this project's kernels (no nft_meta_bridge),
	// so superjolt's ports are known by their name: every TAP is named sjt-…, see TAPName.
	notOurs := slices.Concat(ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, tapPrefix), ifPrefix(expr.MetaKeyOIFNAME, expr.CmpOpNeq, tapPrefix))
	rule(bpre, "not a VM port", ifPrefix(expr.MetaKeyIIFNAME, expr.CmpOpNeq, tapPrefix), verdict(expr.VerdictAccept))
	rule(bfwd, "not a VM port", notOurs, verdict(expr.VerdictAccept))
	// With br_netfilter (built into some kernels, on by default), a forward's DNAT back onto the bridge
	// is bridged from port to port, not routed, and the bridge family cannot see conntrack here. The
	// inet forward chain, which br_netfilter runs first, flags such a frame in the packet mark: a
	// forward is public, so it (and its replies) pass, and the flag is cleared.
	rule(bfwd, "forwards are public", []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(markPublic), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(^uint32(markPublic)), Xor: make([]byte, 4)},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
	}, verdict(expr.VerdictAccept))
	rule(bpre, "arp", isProto(unix.ETH_P_ARP), verdict(expr.VerdictAccept))
	rule(bpre, "own address", isProto(unix.ETH_P_IP), []expr.Any{
		// iifname . ip saddr @port_account
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 8, SetName: setPortAccount, SetID: 3},
	}, verdict(expr.VerdictAccept))
	rule(bpre, "anything else", verdict(expr.VerdictDrop))
	rule(bfwd, "arp", isProto(unix.ETH_P_ARP), verdict(expr.VerdictAccept))
	rule(bfwd, "same account", isProto(unix.ETH_P_IP), []expr.Any{
		// meta mark set iifname . ip saddr map @port_account oifname . ip daddr . meta mark @port_member
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Lookup{SourceRegister: 8, SetName: setPortAccount, SetID: 3, DestRegister: 1, IsDestRegSet: true},
		&expr.Meta{Key: expr.MetaKeyMARK, SourceRegister: true, Register: 1},
		&expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 8},
		&expr.Payload{DestRegister: 12, Base: expr.PayloadBaseNetworkHeader, Offset: 16, Len: 4},
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 13},
		&expr.Lookup{SourceRegister: 8, SetName: setPortMember, SetID: 4},
	}, verdict(expr.VerdictAccept))
	rule(bfwd, "anything else", verdict(expr.VerdictDrop))
	return p, nil
}

func isIPv4() []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.NFPROTO_IPV4}},
	}
}

// isProto matches the ethernet protocol of a frame (meta protocol).
func isProto(ethType uint16) []expr.Any {
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyPROTOCOL, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: binary.BigEndian.AppendUint16(nil, ethType)},
	}
}

func saddrIn(p netip.Prefix) []expr.Any {
	mask := make([]byte, 4)
	binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-p.Bits()))
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: p.Masked().Addr().AsSlice()},
	}
}

// ifPrefix matches interface names that start with prefix (iifname "sjt-*").
func ifPrefix(key expr.MetaKey, op expr.CmpOp, prefix string) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: []byte(prefix)}}
}

func cmpIfname(key expr.MetaKey, op expr.CmpOp, name []byte) []expr.Any {
	return []expr.Any{&expr.Meta{Key: key, Register: 1}, &expr.Cmp{Op: op, Register: 1, Data: name}}
}

// ctDNAT matches connections whose destination was rewritten by a DNAT (ct status dnat).
func ctDNAT() []expr.Any {
	return []expr.Any{
		&expr.Ct{Key: expr.CtKeySTATUS, Register: 1},
		&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4,
			Mask: binaryutil.NativeEndian.PutUint32(ipsDstNAT), Xor: make([]byte, 4)},
		&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)},
	}
}

// markPublic is the bit of the packet mark that flags, between the inet and the bridge forward
// chains, a DNAT'd packet that br_netfilter bridges from one VM's port to another's.
const markPublic = 1 << 30

// ipsDstNAT is IPS_DST_NAT of the kernel's enum ip_conntrack_status.
const ipsDstNAT = 1 << 5

// ifname is an interface name as nftables compares it: padded with zeros to IFNAMSIZ bytes.
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}

func cat(parts ...[]byte) []byte { return slices.Concat(parts...) }
