package net

import (
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/nftables"
)

// testRuleset has three VMs: two of account alice (one with forwards), one of bob.
func testRuleset() Ruleset {
	return Ruleset{
		Subnet: netip.MustParsePrefix("10.77.0.0/16"),
		Bridge: DefaultBridge,
		VMs: []VM{
			{ID: "vm-aaa111", Account: "alice", IP: netip.MustParseAddr("10.77.0.2"),
				Forwards: []Forward{{"tcp", 8080, 80}, {"udp", 5353, 53}}},
			{ID: "vm-bbb222", Account: "bob", IP: netip.MustParseAddr("10.77.0.3")},
			{ID: "vm-ccc333", Account: "alice", IP: netip.MustParseAddr("10.77.0.4"),
				Forwards: []Forward{{"tcp", 2222, 22}}},
		},
	}
}

func TestRulesetValidate(t *testing.T) {
	ip := netip.MustParseAddr
	for _, tc := range []struct {
		name string
		vms  []VM
		want string
	}{
		{"outside subnet", []VM{{ID: "vm-a", IP: ip("10.78.0.2")}}, "not in the subnet"},
		{"gateway", []VM{{ID: "vm-a", IP: ip("10.77.0.1")}}, "reserved"},
		{"no id", []VM{{IP: ip("10.77.0.2")}}, "no id"},
		{"same address", []VM{{ID: "vm-a", IP: ip("10.77.0.2")}, {ID: "vm-b", IP: ip("10.77.0.2")}}, "same address"},
		{"bad proto", []VM{{ID: "vm-a", IP: ip("10.77.0.2"), Forwards: []Forward{{"sctp", 1, 1}}}}, "want tcp or udp"},
		{"port 0", []VM{{ID: "vm-a", IP: ip("10.77.0.2"), Forwards: []Forward{{"tcp", 0, 1}}}}, "from 1 to 65535"},
		{"port twice", []VM{
			{ID: "vm-a", IP: ip("10.77.0.2"), Forwards: []Forward{{"tcp", 80, 80}}},
			{ID: "vm-b", IP: ip("10.77.0.3"), Forwards: []Forward{{"tcp", 80, 8080}}},
		}, "forwarded by both vm-a and vm-b"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Ruleset{VMs: tc.vms}.build()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("build: %v, want an error saying %q", err, tc.want)
			}
		})
	}
	// The same port for tcp and udp is two forwards, not a conflict.
	rs := Ruleset{VMs: []VM{{ID: "vm-a", IP: ip("10.77.0.2"), Forwards: []Forward{{"tcp", 53, 53}, {"udp", 53, 53}}}}}
	if _, err := rs.build(); err != nil {
		t.Errorf("tcp and udp on one port: %v", err)
	}
}

func TestRulesetBuild(t *testing.T) {
	p, err := testRuleset().build()
	if err != nil {
		t.Fatal(err)
	}
	// Two DNAT rules per forward (prerouting and output) and the fixed rules: egress and hairpin
	// masquerade, three inet forward rules, four bridge prerouting and five bridge forward rules.
	if got, want := len(p.rules), 2*3+2+3+4+5; got != want {
		t.Errorf("%d rules, want %d", got, want)
	}
	elems := map[string]int{}
	for _, s := range p.sets {
		elems[s.set.Name] = len(s.elems)
	}
	for _, name := range []string{setVMAccount, setVMMember, setPortAccount, setPortMember} {
		if elems[name] != 3 {
			t.Errorf("set %s has %d elements, want one per VM (3)", name, elems[name])
		}
	}
	// Accounts are numbered by name: alice 1, bob 2, whatever the order of the VMs.
	rs := testRuleset()
	rs.VMs[0], rs.VMs[1] = rs.VMs[1], rs.VMs[0]
	q, err := rs.build()
	if err != nil {
		t.Fatal(err)
	}
	if a, b := accountOfIP(p, "10.77.0.3"), accountOfIP(q, "10.77.0.3"); a != 2 || b != 2 {
		t.Errorf("bob's account number: %d and %d, want 2", a, b)
	}
}

func accountOfIP(p *plan, ip string) uint32 {
	want := netip.MustParseAddr(ip).AsSlice()
	for _, s := range p.sets {
		if s.set.Name != setVMAccount {
			continue
		}
		for _, e := range s.elems {
			if string(e.Key) == string(want) {
				return uint32(e.Val[0]) | uint32(e.Val[1])<<8 | uint32(e.Val[2])<<16 | uint32(e.Val[3])<<24
			}
		}
	}
	return 0
}

// newTestFirewall makes a namespace and a Firewall in it.
func newTestFirewall(t testing.TB) (*Firewall, string) {
	t.Helper()
	ns, name := newNetNS(t, "fw")
	fw, err := NewFirewall(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fw.Close() })
	return fw, name
}

// listTables returns what nft lists of superjolt's two tables in the namespace.
func listTables(t testing.TB, ns string) string {
	t.Helper()
	return nsRun(t, ns, "nft", "list", "table", "inet", TableName) + nsRun(t, ns, "nft", "list", "table", "bridge", TableName)
}

func TestApply(t *testing.T) {
	requireNft(t)
	fw, ns := newTestFirewall(t)
	// A table of someone else's, with a forward chain that drops, must be left alone.
	other := "table ip other {\n\tchain guard {\n\t\ttype filter hook forward priority filter; policy drop;\n\t\tiifname \"eth9\" accept\n\t}\n}\n"
	otherFile := t.TempDir() + "/other.nft"
	if err := os.WriteFile(otherFile, []byte(other), 0o644); err != nil {
		t.Fatal(err)
	}
	nsRun(t, ns, "nft", "-f", otherFile)
	otherBefore := nsRun(t, ns, "nft", "list", "table", "ip", "other")

	rs := testRuleset()
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	first := listTables(t, ns)
	t.Logf("nft list table inet/bridge superjolt:\n%s", first)
	for _, want := range []string{
		"dnat ip to 10.77.0.2:80", "dnat ip to 10.77.0.4:22", "fib daddr type local", "tcp dport 8080", "udp dport 5353",
		"masquerade", `oifname != "sjbr0"`, "ct status dnat", `comment "vm-aaa111 8080:80/tcp"`,
		`"sjt-bbb222" . 10.77.0.3`, "policy accept",
	} {
		if !strings.Contains(first, want) {
			t.Errorf("tables lack %q", want)
		}
	}
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	if again := listTables(t, ns); again != first {
		t.Errorf("a second Apply changed the tables:\n%s\nthen\n%s", first, again)
	}

	// A VM removed from the ruleset leaves nothing of it.
	rs.VMs = rs.VMs[1:]
	if err := fw.Apply(rs); err != nil {
		t.Fatal(err)
	}
	after := listTables(t, ns)
	for _, gone := range []string{"10.77.0.2", "vm-aaa111", "sjt-aaa111", "8080", "5353"} {
		if strings.Contains(after, gone) {
			t.Errorf("tables still mention %q after its VM left:\n%s", gone, after)
		}
	}

	// A bad ruleset changes nothing.
	bad := rs
	bad.VMs = append([]VM{{ID: "vm-x", IP: netip.MustParseAddr("192.0.2.1")}}, rs.VMs...)
	if err := fw.Apply(bad); err == nil {
		t.Error("Apply of a VM outside the subnet: no error")
	}
	if got := listTables(t, ns); got != after {
		t.Errorf("a failed Apply changed the tables:\n%s", got)
	}

	// An empty ruleset leaves the tables with their chains and fixed rules only: no VM, no forward.
	if err := fw.Apply(Ruleset{}); err != nil {
		t.Fatal(err)
	}
	empty := listTables(t, ns)
	for _, gone := range []string{"dnat ip to", "10.77.0.3", "sjt-bbb222", "elements"} {
		if strings.Contains(empty, gone) {
			t.Errorf("empty ruleset: tables mention %q:\n%s", gone, empty)
		}
	}

	if got := nsRun(t, ns, "nft", "list", "table", "ip", "other"); got != otherBefore {
		t.Errorf("table ip other changed:\n%s\nthen\n%s", otherBefore, got)
	}
	warnings := strings.Join(fw.Warnings(), "\n")
	if !strings.Contains(warnings, "chain guard of table ip other has policy drop") {
		t.Errorf("no warning about the other table's forward policy drop:\n%s", warnings)
	}
	if !strings.Contains(warnings, "forwarding is off") {
		t.Errorf("no warning about ip_forward=0 in a fresh namespace:\n%s", warnings)
	}

	if err := fw.Remove(); err != nil {
		t.Fatal(err)
	}
	if err := fw.Remove(); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if tables := nsRun(t, ns, "nft", "list", "tables"); strings.TrimSpace(tables) != "table ip other" {
		t.Errorf("after Remove: tables\n%s", tables)
	}
}

func TestEnableForwarding(t *testing.T) {
	host, err := os.ReadFile(ipForward)
	if err != nil {
		t.Skipf("needs %s: %v", ipForward, err)
	}
	ns, _ := newNetNS(t, "fwd")
	t.Cleanup(func() {
		// EnableForwarding must only change the namespace; put the host back if it did not.
		if now, _ := os.ReadFile(ipForward); string(now) != string(host) {
			t.Errorf("EnableForwarding changed the host's ip_forward from %q to %q", host, now)
			os.WriteFile(ipForward, host, 0)
		}
	})
	inNS(t, ns, func() error {
		if err := EnableForwarding(); err != nil {
			return err
		}
		got, err := os.ReadFile(ipForward)
		if err != nil {
			return err
		}
		if string(got) != "1\n" {
			t.Errorf("ip_forward in the namespace = %q, want 1", got)
		}
		return nil
	})
}
