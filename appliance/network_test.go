package appliance

import (
	"context"
	stdnet "net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	sjnet "github.com/superjolt/superjolt/appliance/net"
)

// The firewall holds every VM that is on the host, with its forwards
// (the guest's port where it differs), and nothing of one in the
// graveyard or the archive.
func TestRulesetOf(t *testing.T) {
	subnet := netip.MustParsePrefix("10.77.0.0/16")
	ip := netip.MustParseAddr
	vms := []model.VM{
		{ID: "vm-bbbbbb", AccountID: "ac-aaaaaa", State: model.StateStopped, IP: ip("10.77.0.3"),
			Ports: []model.Port{{Proto: "udp", Number: 53}}},
		{ID: "vm-aaaaaa", AccountID: "ac-aaaaaa", State: model.StateRunning, IP: ip("10.77.0.2"),
			Ports: []model.Port{{Proto: "tcp", Number: 8080, GuestPort: 80}}},
		{ID: "vm-cccccc", AccountID: "ac-bbbbbb", State: model.StateGraveyard, LastIP: ip("10.77.0.4"),
			Ports: []model.Port{{Proto: "tcp", Number: 9090}}},
		{ID: "vm-dddddd", AccountID: "ac-bbbbbb", State: model.StateArchived, LastIP: ip("10.77.0.5")},
		{ID: "vm-eeeeee", AccountID: "ac-bbbbbb", State: model.StateCreating, IP: ip("10.77.0.6")},
	}
	rs := rulesetOf(subnet, vms)
	if rs.Subnet != subnet {
		t.Errorf("subnet %v", rs.Subnet)
	}
	want := []sjnet.VM{
		{ID: "vm-aaaaaa", Account: "ac-aaaaaa", IP: ip("10.77.0.2"), Forwards: []sjnet.Forward{{Proto: "tcp", HostPort: 8080, GuestPort: 80}}},
		{ID: "vm-bbbbbb", Account: "ac-aaaaaa", IP: ip("10.77.0.3"), Forwards: []sjnet.Forward{{Proto: "udp", HostPort: 53, GuestPort: 53}}},
		{ID: "vm-eeeeee", Account: "ac-bbbbbb", IP: ip("10.77.0.6")},
	}
	if len(rs.VMs) != len(want) {
		t.Fatalf("ruleset VMs %+v, want %+v", rs.VMs, want)
	}
	for i := range want {
		g, w := rs.VMs[i], want[i]
		if g.ID != w.ID || g.Account != w.Account || g.IP != w.IP || len(g.Forwards) != len(w.Forwards) {
			t.Fatalf("VM %d: %+v, want %+v", i, g, w)
		}
		for j := range w.Forwards {
			if g.Forwards[j] != w.Forwards[j] {
				t.Errorf("VM %s forward %d: %+v, want %+v", g.ID, j, g.Forwards[j], w.Forwards[j])
			}
		}
	}
}

// recordingNetwork stands in for the host's network in the in-process
// tests: goroutines of the appliance would leave a test's network
// namespace (namespaces are per thread), so the real one runs only in
// superjoltd processes (TestNetworkEndToEnd). It records what the
// appliance asks of it.
type recordingNetwork struct {
	mu      sync.Mutex
	taps    map[string]bool // open TAPs, by VM id
	last    sjnet.Ruleset   // the last firewall applied
	applies int
	setups  int
}

func (n *recordingNetwork) Setup(netip.Prefix) error {
	n.mu.Lock()
	n.setups++
	n.mu.Unlock()
	return nil
}
func (n *recordingNetwork) EnsureTAP(vmID string) (string, stdnet.HardwareAddr, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.taps[vmID] = true
	return sjnet.TAPName(vmID), sjnet.MAC(vmID), nil
}

// TAPHeld: a stub VM's TAP is held while it is on the host.
func (n *recordingNetwork) TAPHeld(vmID string) (bool, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.taps[vmID], nil
}
func (n *recordingNetwork) RemoveTAP(vmID string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	delete(n.taps, vmID)
	return nil
}
func (n *recordingNetwork) Apply(rs sjnet.Ruleset) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.last = rs
	n.applies++
	return nil
}
func (n *recordingNetwork) Warnings() []string { return nil }

func (n *recordingNetwork) state() (taps []string, inFirewall []string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for id := range n.taps {
		taps = append(taps, id)
	}
	for _, vm := range n.last.VMs {
		inFirewall = append(inFirewall, vm.ID)
	}
	slices.Sort(taps)
	return taps, inFirewall
}

// A VM is on the network while it is on the host, and off it in the
// graveyard; the firewall follows before each operation counts as done;
// a guest that does not bring its address up does not count as running.
func TestNetworkFollowsTheVM(t *testing.T) {
	rn := &recordingNetwork{taps: map[string]bool{}}
	e := newEnv(t, envOptions{network: rn})
	ctx := context.Background()
	acct := e.account("net", 100*model.Credit, 0)
	vm := e.vm(acct.ID)
	if taps, fw := rn.state(); !slices.Equal(taps, []string{vm.ID}) || !slices.Equal(fw, []string{vm.ID}) {
		t.Fatalf("after create: TAPs %v, firewall %v; want %s in both", taps, fw, vm.ID)
	}
	if _, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "tcp", Number: 8080, GuestPort: 80}); err != nil {
		t.Fatal(err)
	}
	if f := rn.last.VMs[0].Forwards; len(f) != 1 || f[0].HostPort != 8080 || f[0].GuestPort != 80 {
		t.Fatalf("the firewall's forwards after ports add: %+v", f)
	}
	// A stop and a start leave the firewall as it is: it holds the VM.
	rn.mu.Lock()
	before := rn.applies
	rn.mu.Unlock()
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.StartVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	rn.mu.Lock()
	if rn.applies != before {
		t.Errorf("a stop and a start rebuilt the firewall %d times; it held the VM already", rn.applies-before)
	}
	rn.mu.Unlock()
	e.advance(2 * time.Hour)
	if _, err := e.a.DestroyVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if taps, fw := rn.state(); len(taps) != 0 || len(fw) != 0 {
		t.Fatalf("in the graveyard: TAPs %v, firewall %v; want neither", taps, fw)
	}
	if _, err := e.a.ResumeVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if taps, fw := rn.state(); !slices.Equal(taps, []string{vm.ID}) || !slices.Equal(fw, []string{vm.ID}) {
		t.Fatalf("after resume: TAPs %v, firewall %v; want %s in both", taps, fw, vm.ID)
	}

	// A guest that cannot bring its address up: the create fails and is
	// undone, saying why, and leaves no TAP.
	e.hv.(*stubHypervisor).netBroken = true
	_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", Name: "broken"})
	if err == nil || !strings.Contains(err.Error(), "did not bring up its address") || !strings.Contains(err.Error(), "no NIC found") {
		t.Fatalf("create with a broken guest network: %v", err)
	}
	if taps, _ := rn.state(); !slices.Equal(taps, []string{vm.ID}) {
		t.Fatalf("after the failed create: TAPs %v, want only %s", taps, vm.ID)
	}
}

// Domains route to the VMs on the host, at the domain's port (80 unless
// attached with another); none of a VM in the graveyard.
func TestRoutesOf(t *testing.T) {
	ip := netip.MustParseAddr
	r := routesOf([]model.VM{
		{ID: "vm-aaaaaa", State: model.StateRunning, IP: ip("10.77.0.2"), Domains: []string{"a.example.com", "www.a.example.com"},
			DomainPorts: map[string]uint16{"www.a.example.com": 8080}},
		{ID: "vm-bbbbbb", State: model.StateStopped, IP: ip("10.77.0.3"), Domains: []string{"b.example.com"}},
		{ID: "vm-cccccc", State: model.StateGraveyard, LastIP: ip("10.77.0.4"), Domains: []string{"c.example.com"}},
	})
	want := map[string]string{"a.example.com": "10.77.0.2:80", "www.a.example.com": "10.77.0.2:8080", "b.example.com": "10.77.0.3:80"}
	if len(r) != len(want) {
		t.Fatalf("routes %v, want %v", r, want)
	}
	for d, ap := range want {
		if r[d].String() != ap {
			t.Errorf("route of %s = %v, want %s", d, r[d], ap)
		}
	}
}
