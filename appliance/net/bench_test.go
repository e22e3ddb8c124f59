package net

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/nftables"
)

// bigRuleset has 1,000 VMs of 250 accounts with two forwards each: 2,000 forwards.
func bigRuleset() Ruleset {
	rs := Ruleset{Subnet: DefaultSubnet}
	for i := range 1000 {
		n := i + 2
		rs.VMs = append(rs.VMs, VM{
			ID:      fmt.Sprintf("vm-%06d", i),
			Account: fmt.Sprintf("account-%d", i%250),
			IP:      netip.AddrFrom4([4]byte{10, 77, byte(n >> 8), byte(n)}),
			Forwards: []Forward{
				{"tcp", uint16(10000 + i), 80},
				{"udp", uint16(20000 + i), 53},
			},
		})
	}
	return rs
}

// BenchmarkBuild measures turning the big ruleset into nftables objects, without the kernel.
func BenchmarkBuild(b *testing.B) {
	rs := bigRuleset()
	for b.Loop() {
		if _, err := rs.build(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply measures replacing the tables with the big ruleset, in one batch, in a namespace of
// its own: what the appliance does at start and after every change.
func BenchmarkApply(b *testing.B) {
	ns, _ := newNetNS(b, "bench")
	fw, err := NewFirewall(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		b.Fatal(err)
	}
	defer fw.Close()
	rs := bigRuleset()
	for b.Loop() {
		if err := fw.Apply(rs); err != nil {
			b.Fatal(err)
		}
	}
}
