package appliance

import (
	"context"
	"errors"
	"fmt"
	stdnet "net"
	"net/netip"
	"slices"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	sjnet "github.com/superjolt/superjolt/appliance/net"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/guest"
)

// Network puts VMs on the network: a bridge holding the gateway of the
// subnet, a TAP per VM that is on the host, and one firewall table built
// from the store (see "Networking" in DESIGN.md). *HostNetwork is the real
// one; nil in Options: VMs boot without a NIC.
type Network interface {
	// Setup makes the bridge with the gateway address of subnet and turns
	// IP forwarding on.
	Setup(subnet netip.Prefix) error
	// EnsureTAP makes (or finds) the VM's persistent TAP on the bridge and
	// returns its name, whose queue the hypervisor opens for the VM's
	// process, and the VM's MAC.
	EnsureTAP(vmID string) (string, stdnet.HardwareAddr, error)
	// TAPHeld reports whether the VM's TAP is here with a queue held open
	// on it (by the VM's running process).
	TAPHeld(vmID string) (bool, error)
	// RemoveTAP deletes the VM's TAP; gone already is fine.
	RemoveTAP(vmID string) error
	// Apply replaces the firewall with rs, in one step.
	Apply(rs sjnet.Ruleset) error
	// Warnings says what on the host would drop the VMs' traffic anyway.
	Warnings() []string
}

// HostNetwork is the [Network] of the namespace superjoltd runs in,
// through package appliance/net.
type HostNetwork struct {
	bridge string
	fw     *sjnet.Firewall
}

var _ Network = (*HostNetwork)(nil)

// NewHostNetwork returns the network of the bridge (sjnet.DefaultBridge
// when empty). Close it when done.
func NewHostNetwork(bridge string) (*HostNetwork, error) {
	if bridge == "" {
		bridge = sjnet.DefaultBridge
	}
	fw, err := sjnet.NewFirewall()
	if err != nil {
		return nil, fmt.Errorf("nftables: %w", err)
	}
	return &HostNetwork{bridge: bridge, fw: fw}, nil
}

func (h *HostNetwork) Setup(subnet netip.Prefix) error {
	if _, err := sjnet.EnsureBridge(h.bridge, subnet); err != nil {
		return fmt.Errorf("bridge %s: %w", h.bridge, err)
	}
	return sjnet.EnableForwarding()
}

func (h *HostNetwork) EnsureTAP(vmID string) (string, stdnet.HardwareAddr, error) {
	mac := sjnet.MAC(vmID)
	name := sjnet.TAPName(vmID)
	f, err := sjnet.OpenTAP(name, h.bridge, mac)
	if err != nil {
		return "", nil, err
	}
	// The TAP is persistent: it stays without a queue, which the VM's
	// process gets a fresh one of at each launch.
	f.Close()
	return name, mac, nil
}

func (h *HostNetwork) TAPHeld(vmID string) (bool, error) { return sjnet.TAPHeld(sjnet.TAPName(vmID)) }

func (h *HostNetwork) RemoveTAP(vmID string) error { return sjnet.RemoveTAP(sjnet.TAPName(vmID)) }

func (h *HostNetwork) Apply(rs sjnet.Ruleset) error {
	rs.Bridge = h.bridge
	return h.fw.Apply(rs)
}

func (h *HostNetwork) Warnings() []string { return h.fw.Warnings() }

// Close closes the firewall's connection; the bridge, TAPs and table stay
// (the next start takes them over).
func (h *HostNetwork) Close() error { return h.fw.Close() }

// gateway is the host's address on the subnet, the VMs' default route.
func (a *Appliance) gateway() netip.Addr { return a.subnet.Addr().Next() }

// rulesetOf is the firewall the VMs call for: every VM that is on the
// host (creating, running or stopped) with its address and its forwards;
// nothing of a VM in the graveyard or the archive, whose address is free
// and whose forwards refuse until it is resumed.
func rulesetOf(subnet netip.Prefix, vms []model.VM) sjnet.Ruleset {
	rs := sjnet.Ruleset{Subnet: subnet}
	for _, vm := range vms {
		if !vm.State.Live() || !vm.IP.IsValid() {
			continue
		}
		v := sjnet.VM{ID: vm.ID, Account: vm.AccountID, IP: vm.IP}
		for _, p := range vm.Ports {
			v.Forwards = append(v.Forwards, sjnet.Forward{Proto: p.Proto, HostPort: p.Number, GuestPort: p.Guest()})
		}
		rs.VMs = append(rs.VMs, v)
	}
	slices.SortFunc(rs.VMs, func(x, y sjnet.VM) int { return cmpString(x.ID, y.ID) })
	return rs
}

// syncNetwork rebuilds the firewall from the store after a change to VMs,
// their addresses or their forwards, leaving out the VMs without (which
// are leaving the host, in a change not recorded yet). A failure is logged
// and told as a net.failed event; the next change (or start) tries again.
func (a *Appliance) syncNetwork(ctx context.Context, without ...string) {
	if a.net == nil {
		return
	}
	// One at a time, so that the last one applied is from the latest store.
	a.netMu.Lock()
	defer a.netMu.Unlock()
	vms, err := a.VMs(context.WithoutCancel(ctx), VMFilter{})
	if err == nil {
		vms = slices.DeleteFunc(vms, func(vm model.VM) bool { return slices.Contains(without, vm.ID) })
		rs := rulesetOf(a.subnet, vms)
		if err = a.net.Apply(rs); err == nil {
			a.netVMs = make(map[string]bool, len(rs.VMs))
			for _, vm := range rs.VMs {
				a.netVMs[vm.ID] = true
			}
		}
		a.setRoutes(routesOf(vms))
	}
	if err != nil {
		a.log.Error("cannot rebuild the firewall; forwards may not match the VMs until the next change", "err", err)
		_ = a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
			return event(tx, a.clock.Now(), "net.failed", "", "", "cannot rebuild superjolt's firewall table: %v; forwards may not match the VMs until the next change", err)
		})
	}
}

// takeOnNetwork rebuilds the firewall before a VM boots if the firewall
// does not hold it yet (a create, a resume); a VM it holds already (a
// start, a restore, the boots at the daemon's start) costs nothing, so
// that a start with 1,000 running VMs is not 1,000 rebuilds.
func (a *Appliance) takeOnNetwork(ctx context.Context, vmID string) {
	a.netMu.Lock()
	in := a.netVMs[vmID]
	a.netMu.Unlock()
	if !in {
		a.syncNetwork(ctx)
	}
}

// setupNetwork makes the bridge, turns forwarding on, builds the firewall
// from the store and tells what on the host would get in the way, at start.
func (a *Appliance) setupNetwork(ctx context.Context) error {
	if a.net == nil {
		return nil
	}
	if err := a.net.Setup(a.subnet); err != nil {
		return fmt.Errorf("appliance: network: %w", err)
	}
	a.syncNetwork(ctx)
	// TAPs of VMs that left the host while the daemon was away go now:
	// they are not in the firewall just built.
	vms, err := a.VMs(ctx, VMFilter{})
	if err != nil {
		return fmt.Errorf("appliance: network: %w", err)
	}
	for _, vm := range vms {
		if !vm.State.Live() {
			a.dropTAP(vm.ID)
		}
	}
	for _, w := range a.net.Warnings() {
		a.log.Warn("the host may drop the VMs' traffic", "why", w)
		_ = a.update(ctx, func(tx *store.Tx) error {
			return event(tx, a.clock.Now(), "net.warning", "", "", "%s", w)
		})
	}
	return nil
}

// guestNet is what a VM's guest is told of its network, with the TAP its
// process's NIC is on; nil when the appliance has no network.
func (a *Appliance) guestNet(vm model.VM) (*NetSpec, error) {
	if a.net == nil || !vm.IP.IsValid() {
		return nil, nil
	}
	tap, mac, err := a.net.EnsureTAP(vm.ID)
	if err != nil {
		return nil, unavailablef("cannot make the network device of %s: %v", vm.ID, err)
	}
	return &NetSpec{Addr: netip.PrefixFrom(vm.IP, a.subnet.Bits()), Gateway: a.gateway(), DNS: a.dns, MAC: mac, TAP: tap}, nil
}

// dropTAP deletes a VM's TAP once it has left the host (graveyard,
// archive, reclaim); its forwards leave the firewall with syncNetwork.
func (a *Appliance) dropTAP(vmID string) {
	if a.net == nil {
		return
	}
	if err := a.net.RemoveTAP(vmID); err != nil {
		a.log.Warn("cannot remove the VM's TAP", "vm", vmID, "err", err)
	}
}

// routesOf maps each domain of a VM on the host (creating, running or
// stopped: a stopped one answers 502 rather than 404) to its address and
// the domain's port; a VM in the graveyard or the archive serves none.
func routesOf(vms []model.VM) map[string]netip.AddrPort {
	r := map[string]netip.AddrPort{}
	for _, vm := range vms {
		if !vm.State.Live() || !vm.IP.IsValid() {
			continue
		}
		for _, d := range vm.Domains {
			r[d] = netip.AddrPortFrom(vm.IP, vm.DomainPort(d))
		}
	}
	return r
}

func (a *Appliance) setRoutes(r map[string]netip.AddrPort) {
	a.routeMu.Lock()
	a.routes = r
	a.routeMu.Unlock()
}

// Route returns where the reverse proxy sends requests for host (a
// domain, normalized): the address and port of the VM that holds it.
// Safe for concurrent use; it reads the table syncNetwork keeps.
func (a *Appliance) Route(host string) (netip.AddrPort, bool) {
	a.routeMu.RLock()
	defer a.routeMu.RUnlock()
	ap, ok := a.routes[model.NormalizeDomain(host)]
	return ap, ok
}

// agentPingTimeout bounds one ping of pingAgent; it pings again until its
// context ends.
const agentPingTimeout = 10 * time.Second

// pingAgent pings until an answer or the end of ctx: a ping is idempotent,
// and one written while a starved guest's agent reopens its virtio-serial
// port is never answered, so waiting on a single one could wait forever.
func pingAgent(ctx context.Context, ag Agent) (guest.PingResult, error) {
	for {
		pctx, cancel := context.WithTimeout(ctx, agentPingTimeout)
		p, err := ag.Ping(pctx)
		cancel()
		if err == nil || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			return p, err
		}
	}
}

// checkGuestNet makes "running" mean that the guest's address is up: the
// agent, which configures the network before it answers, must report the
// address it was given. An agent too old to report its network (no
// hostname in its ping) is taken at its word, with a warning.
func (a *Appliance) checkGuestNet(ctx context.Context, id string, m Machine, spec MachineSpec) error {
	p, err := pingAgent(ctx, m.Agent())
	if err != nil {
		return unavailablef("%s booted but its agent did not say whether its network is up: %v; its console log is in %s", id, err, spec.RunDir)
	}
	if p.Hostname == "" {
		a.log.Warn("the guest's agent does not report its network (an older agent); its address is not checked", "vm", id)
		return nil
	}
	if !slices.Contains(p.Addresses, spec.Net.Addr) {
		why := p.BootConfigError
		if why == "" {
			why = fmt.Sprintf("it reports %v", p.Addresses)
		}
		return unavailablef("%s booted but its guest did not bring up its address %s (%s); its console log is in %s", id, spec.Net.Addr, why, spec.RunDir)
	}
	return nil
}
