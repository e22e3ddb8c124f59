package net

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	stdnet "net"
	"os"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// tapPrefix starts the name of every TAP that superjolt makes, so that they are easy to tell apart.
const tapPrefix = "sjt-"

// TAPName returns the name of the TAP of the VM vmID (DESIGN.md "Networking": every VM has its own
// TAP on the bridge). "vm-abc123" becomes "sjt-abc123"; an id that does not start with "vm-", or whose
// rest does not fit in an interface name (15 bytes) or uses other characters than [a-z0-9-], is
// replaced by the first hex digits of its SHA-256. The name is stable: the same id always gives it.
func TAPName(vmID string) string {
	const room = unix.IFNAMSIZ - 1 - len(tapPrefix)
	rest, ok := strings.CutPrefix(vmID, "vm-")
	if ok && rest != "" && len(rest) <= room && strings.Trim(rest, "abcdefghijklmnopqrstuvwxyz0123456789-") == "" {
		return tapPrefix + rest
	}
	sum := sha256.Sum256([]byte(vmID))
	return tapPrefix + hex.EncodeToString(sum[:])[:room]
}

// MAC returns the MAC address of the VM vmID (DESIGN.md "Networking": a MAC derived from its id):
// 02 (locally administered, unicast) followed by the first five bytes of the SHA-256 of the id, so it
// is the same across stop/start, restore and resume.
func MAC(vmID string) stdnet.HardwareAddr { return derivedMAC("superjolt mac " + vmID) }

// derivedMAC is 02 (locally administered, unicast) and the first five
// bytes of the SHA-256 of seed: stable for a seed, unlikely to collide.
func derivedMAC(seed string) stdnet.HardwareAddr {
	sum := sha256.Sum256([]byte(seed))
	return stdnet.HardwareAddr{0x02, sum[0], sum[1], sum[2], sum[3], sum[4]}
}

// HostMAC returns the MAC of the host's end of the TAP of a guest whose NIC has mac: the same with
// fe as its first byte (locally administered, unicast), as libvirt does. The two ends must differ: a
// bridge port's own address is local to the bridge, so frames to a guest whose TAP had the guest's
// MAC would stop at the bridge instead of reaching the guest. And a Linux bridge takes the lowest
// address of its ports as its own unless it has one; fe keeps TAPs out of that race.
func HostMAC(mac stdnet.HardwareAddr) stdnet.HardwareAddr {
	h := slices.Clone(mac)
	if len(h) > 0 {
		h[0] = 0xfe
	}
	return h
}

// tapFlags are the flags of every TAP queue: a TAP (ethernet frames), no packet information header,
// and a virtio-net header so that QEMU's virtio-net can offload checksums and segmentation.
const tapFlags = unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR

// OpenTAP implements DESIGN.md "Networking": every VM has a virtio-net NIC on its own TAP on the
// bridge. It creates the persistent TAP name (or reuses it if it exists), gives it HostMAC(mac) (mac
// is the guest NIC's, which QEMU gets) and the bridge's MTU, attaches it to bridge, sets it up, and returns an open queue of it, the only one, for
// QEMU (`-netdev tap,fd=N,vhost=off`; pass it with exec.Cmd.ExtraFiles and close it in the daemon once
// QEMU has started). The TAP survives the file: it stays on the bridge while the VM is stopped and is
// removed with RemoveTAP when the VM leaves the host.
//
// The TAP is made with TUNSETIFF on the returned queue itself rather than netlink's LinkAdd, which
// keeps queue fds of its own open in this process and makes QEMU fail with "Device or resource busy".
// The TAP is made in the calling thread's network namespace.
func OpenTAP(name, bridge string, mac stdnet.HardwareAddr) (*os.File, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TAP name %q: want 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		return nil, fmt.Errorf("bridge %s of TAP %s: %w (create it first with EnsureBridge)", bridge, name, err)
	}
	if br.Type() != "bridge" {
		return nil, fmt.Errorf("%s is a %s, not a bridge", bridge, br.Type())
	}
	created := false
	switch old, err := netlink.LinkByName(name); {
	case errors.As(err, new(netlink.LinkNotFoundError)):
		created = true
	case err != nil:
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	case old.Type() != "tuntap":
		return nil, fmt.Errorf("%s is a %s, not a TAP: remove it, superjolt will not reuse it", name, old.Type())
	}

	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun for TAP %s: %w", name, err)
	}
	f := os.NewFile(uintptr(fd), "/dev/net/tun:"+name)
	ok := false
	defer func() {
		if ok {
			return
		}
		f.Close()
		if created {
			_ = RemoveTAP(name) // The original error matters more than this one.
		}
	}()

	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("TAP %s is held open by another process (a QEMU still running?): %w", name, err)
		}
		return nil, fmt.Errorf("create TAP %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return nil, fmt.Errorf("make TAP %s persistent: %w", name, err)
	}

	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	}
	attrs := link.Attrs()
	if host := HostMAC(mac); mac != nil && attrs.HardwareAddr.String() != host.String() {
		if err := netlink.LinkSetHardwareAddr(link, host); err != nil {
			return nil, fmt.Errorf("set MAC %v on TAP %s: %w", host, name, err)
		}
	}
	if mtu := br.Attrs().MTU; attrs.MTU != mtu {
		if err := netlink.LinkSetMTU(link, mtu); err != nil {
			return nil, fmt.Errorf("set MTU %d on TAP %s: %w", mtu, name, err)
		}
	}
	if err := attachPort(link, br); err != nil {
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	}
	ok = true
	return f, nil
}

// attachPort makes link a port of the bridge br in hairpin mode, and sets it up. Hairpin mode lets a
// VM reach its own forward through the host's address when br_netfilter bridges the DNAT'd frame
// straight back to the port it came from (Docker sets it for the same reason).
func attachPort(link, br netlink.Link) error {
	if link.Attrs().MasterIndex != br.Attrs().Index {
		if err := netlink.LinkSetMasterByIndex(link, br.Attrs().Index); err != nil {
			return fmt.Errorf("attach to bridge %s: %w", br.Attrs().Name, err)
		}
	}
	if err := netlink.LinkSetHairpin(link, true); err != nil {
		return fmt.Errorf("hairpin mode on bridge %s: %w", br.Attrs().Name, err)
	}
	if err := netlink.LinkSetUp(link); err != nil {
		return fmt.Errorf("set up: %w", err)
	}
	return nil
}

// RemoveTAP deletes the TAP name, for a VM that leaves the host (graveyard, archive, reclaim). A TAP
// that does not exist is not an error; a link of that name that is not a TAP is left alone.
func RemoveTAP(name string) error {
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("TAP %s: %w", name, err)
	}
	if link.Type() != "tuntap" {
		return fmt.Errorf("%s is a %s, not a TAP; leaving it alone", name, link.Type())
	}
	if err := netlink.LinkDel(link); err != nil {
		return fmt.Errorf("remove TAP %s: %w", name, err)
	}
	return nil
}

// OpenQueue attaches to the existing TAP name (made by OpenTAP, persistent) and returns its queue,
// for a VM process: QEMU cannot open /dev/net/tun itself. Only one queue of a TAP can be open at a
// time; a TAP that one is held on already (its QEMU still runs) gives an error wrapping unix.EBUSY.
// The queue is opened in the calling thread's network namespace.
func OpenQueue(name string) (*os.File, error) {
	if name == "" || len(name) >= unix.IFNAMSIZ {
		return nil, fmt.Errorf("TAP name %q: want 1 to %d bytes", name, unix.IFNAMSIZ-1)
	}
	if _, err := netlink.LinkByName(name); err != nil {
		return nil, fmt.Errorf("TAP %s: %w (it is made when the VM is set up on the network)", name, err)
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/net/tun for TAP %s: %w", name, err)
	}
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("TAP %s: %w", name, err)
	}
	ifr.SetUint16(tapFlags)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.EBUSY) {
			return nil, fmt.Errorf("TAP %s is held open by another process (a QEMU still running?): %w", name, err)
		}
		return nil, fmt.Errorf("attach to TAP %s: %w", name, err)
	}
	return os.NewFile(uintptr(fd), "/dev/net/tun:"+name), nil
}

// TAPHeld reports whether the TAP name exists in this network namespace with a queue open on it
// (its carrier is up only while a process, the VM's QEMU, holds one).
func TAPHeld(name string) (bool, error) {
	link, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("TAP %s: %w", name, err)
	}
	return link.Attrs().RawFlags&unix.IFF_LOWER_UP != 0, nil
}
