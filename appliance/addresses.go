package appliance

import (
	"errors"
	"net/netip"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// allocIP claims an address of the subnet for vmID: prefer when it is free,
// else the lowest free one. The network address, the first host (the
// gateway) and the broadcast address are never given.
func (a *Appliance) allocIP(tx *store.Tx, vmID string, prefer netip.Addr) (netip.Addr, error) {
	free := func(ip netip.Addr) (bool, error) {
		owner, err := tx.IPOwner(ip)
		if errors.Is(err, model.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return owner == "" || owner == vmID, nil
	}
	gateway := a.subnet.Addr().Next()
	usable := func(ip netip.Addr) bool {
		return a.subnet.Contains(ip) && ip != a.subnet.Addr() && ip != gateway && a.subnet.Contains(ip.Next())
	}
	if prefer.IsValid() && usable(prefer) {
		ok, err := free(prefer)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return prefer, tx.ClaimIP(prefer, vmID)
		}
	}
	for ip := gateway.Next(); usable(ip); ip = ip.Next() {
		ok, err := free(ip)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return ip, tx.ClaimIP(ip, vmID)
		}
	}
	return netip.Addr{}, conflictf("no free address left in %s; destroy a VM or give the daemon a larger subnet", a.subnet)
}

// releaseIP frees ip if vmID holds it.
func releaseIP(tx *store.Tx, ip netip.Addr, vmID string) error {
	owner, err := tx.IPOwner(ip)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if owner != vmID {
		return nil
	}
	return tx.ReleaseIP(ip)
}
