package appliance

import (
	"net/netip"
	"testing"

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
