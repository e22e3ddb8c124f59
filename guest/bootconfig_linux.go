package guest

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// nicTimeout bounds the wait for the guest's NIC to appear (virtio_net is
// loaded by the initramfs, so it is normally there at once).
const nicTimeout = 5 * time.Second

// ConfigureBoot applies the boot configuration the host put on the kernel
// command line (read from procDir/cmdline, "/proc" by default): the
// hostname, and with superjolt.net the network, before the agent serves
// (see [ApplyBootConfig]). It logs each step and returns what it applied
// and every failure joined; no failure stops the others.
func ConfigureBoot(log *slog.Logger, procDir string) (BootConfig, error) {
	if procDir == "" {
		procDir = "/proc"
	}
	b, err := os.ReadFile(filepath.Join(procDir, "cmdline"))
	if err != nil {
		log.Error("boot config: read the kernel command line", "err", err)
		return BootConfig{}, fmt.Errorf("read the kernel command line: %w", err)
	}
	cfg, err := ParseCmdline(string(b))
	if err != nil {
		// The host validates what it passes, so this is a host bug: boot
		// anyway, with the hostname on the disk and no network.
		log.Error("boot config: bad kernel command line; going on without it", "err", err)
		return BootConfig{}, errors.Join(err, ApplyBootConfig(log, BootConfig{}, "/"))
	}
	return cfg, ApplyBootConfig(log, cfg, "/")
}

// ApplyBootConfig makes cfg true in this guest, whose root file system is
// root:
//
//   - the hostname: cfg.Hostname, or else the one in root/etc/hostname;
//     set with sethostname(2), written to /etc/hostname, and given a line
//     in /etc/hosts (with the guest's address when it has one);
//   - with cfg.Net: lo up; on the NIC (eth0, or else the first link that
//     is not loopback) the address, link up, the default route through
//     the gateway; and /etc/resolv.conf with the name servers (left alone
//     when there are none).
//
// Each step is logged; a failed step is logged and the others still run.
// The errors are returned joined.
func ApplyBootConfig(log *slog.Logger, cfg BootConfig, root string) error {
	var errs []error
	fail := func(step string, err error) {
		log.Error("boot config: "+step, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", step, err))
	}
	etc := filepath.Join(root, "etc")

	name := cfg.Hostname
	if name == "" {
		if b, err := os.ReadFile(filepath.Join(etc, "hostname")); err == nil {
			name = strings.TrimSpace(string(b))
		}
	}
	if name != "" {
		if err := unix.Sethostname([]byte(name)); err != nil {
			fail("set the hostname", err)
		} else {
			log.Info("boot config: hostname set", "hostname", name)
		}
		if cfg.Hostname != "" {
			if err := writeFileAtomic(filepath.Join(etc, "hostname"), name+"\n"); err != nil {
				fail("write /etc/hostname", err)
			}
		}
		hostsAddr := "127.0.1.1"
		if cfg.Net != nil {
			hostsAddr = cfg.Net.Addr.Addr().String()
		}
		hosts := "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" + hostsAddr + "\t" + name + "\n"
		if err := writeFileAtomic(filepath.Join(etc, "hosts"), hosts); err != nil {
			fail("write /etc/hosts", err)
		}
	}

	if cfg.Net == nil {
		log.Info("boot config: no network from the host")
		return errors.Join(errs...)
	}
	n := *cfg.Net
	if lo, err := netlink.LinkByName("lo"); err != nil {
		fail("find lo", err)
	} else if err := netlink.LinkSetUp(lo); err != nil {
		fail("set lo up", err)
	} else {
		log.Info("boot config: lo up")
	}
	link, err := findNIC(nicTimeout)
	if err != nil {
		fail("find the NIC", err)
		return errors.Join(errs...)
	}
	nic := link.Attrs().Name
	addr := &netlink.Addr{IPNet: &net.IPNet{
		IP:   net.IP(n.Addr.Addr().AsSlice()),
		Mask: net.CIDRMask(n.Addr.Bits(), 32),
	}}
	if err := netlink.AddrReplace(link, addr); err != nil {
		fail("add "+n.Addr.String()+" to "+nic, err)
	} else {
		log.Info("boot config: address added", "link", nic, "addr", n.Addr, "mac", link.Attrs().HardwareAddr.String())
	}
	if err := netlink.LinkSetUp(link); err != nil {
		fail("set "+nic+" up", err)
	} else {
		log.Info("boot config: link up", "link", nic)
	}
	route := &netlink.Route{LinkIndex: link.Attrs().Index, Gw: net.IP(n.Gateway.AsSlice())}
	if err := netlink.RouteReplace(route); err != nil {
		fail("add the default route via "+n.Gateway.String(), err)
	} else {
		log.Info("boot config: default route", "via", n.Gateway, "link", nic)
	}
	if len(n.DNS) > 0 {
		var b strings.Builder
		for _, d := range n.DNS {
			b.WriteString("nameserver " + d.String() + "\n")
		}
		if err := writeFileAtomic(filepath.Join(etc, "resolv.conf"), b.String()); err != nil {
			fail("write /etc/resolv.conf", err)
		} else {
			log.Info("boot config: name servers", "dns", n.DNS)
		}
	}
	return errors.Join(errs...)
}

// findNIC waits up to timeout for eth0, or any link that is not loopback
// (the one with the lowest index), and returns it.
func findNIC(timeout time.Duration) (netlink.Link, error) {
	deadline := time.Now().Add(timeout)
	for {
		links, err := netlink.LinkList()
		if err != nil {
			return nil, err
		}
		var best netlink.Link
		for _, l := range links {
			a := l.Attrs()
			if a.Flags&net.FlagLoopback != 0 || a.Name == "lo" {
				continue
			}
			if a.Name == "eth0" {
				return l, nil
			}
			if best == nil || a.Index < best.Attrs().Index {
				best = l
			}
		}
		if best != nil {
			return best, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("no network link besides lo after %s (virtio_net not loaded, or no NIC attached)", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// writeFileAtomic replaces path with content (a temporary file renamed
// over it), so that a crash never leaves half a file.
func writeFileAtomic(path, content string) error {
	tmp := path + ".superjolt-tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// interfaceAddrs returns the IPv4 addresses (with prefix) of the guest's
// interfaces other than loopback, in interface order.
func interfaceAddrs() []netip.Prefix {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil
	}
	var out []netip.Prefix
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok || !ip.Unmap().Is4() {
				continue
			}
			bits, _ := ipn.Mask.Size()
			if len(ipn.Mask) == net.IPv6len {
				bits -= 96
			}
			out = append(out, netip.PrefixFrom(ip.Unmap(), bits))
		}
	}
	return out
}
