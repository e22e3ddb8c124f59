package vmm

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestArgv(t *testing.T) {
	cfg, err := Config{Name: "vm-abc123", Kernel: "/i/vmlinuz", Initrd: "/i/initrd", Rootfs: "/v/rootfs.img",
		VCPUs: 2, MemoryMiB: 512, GuestCID: 42}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	fds := qemuFDs{kernel: 3, initrd: 4, rootfs: 5, console: 6, qmp: 7, agent: 8, vhost: 9, serial: 10, tap: 11}
	network := func(c *Config) {
		c.Hostname = "web-1"
		c.Net = &GuestNet{
			Addr: netip.MustParsePrefix("10.77.0.2/16"), Gateway: netip.MustParseAddr("10.77.0.1"),
			DNS: []netip.Addr{netip.MustParseAddr("10.77.0.1")},
			MAC: net.HardwareAddr{0x02, 0x53, 0x4a, 0x00, 0x00, 0x01}, TAP: "sjt-abc123",
		}
		c.KernelArgs = "loglevel=4"
	}
	tests := []struct {
		name      string
		accel     Accel
		transport Transport
		paused    bool
		change    func(*Config)
		want      [][]string // consecutive argument pairs that must appear
		absent    []string   // substrings no argument may contain
	}{
		{
			name: "tcg serial", accel: AccelTCG, transport: TransportSerial,
			want: [][]string{
				{"-M", "microvm"}, {"-accel", "tcg,tb-size=128"}, {"-smp", "2"}, {"-m", "512"},
				{"-kernel", "/proc/self/fd/3"}, {"-initrd", "/proc/self/fd/4"},
				{"-append", "console=ttyS0 panic=-1 quiet pci=off reboot=t net.ifnames=0 tsc_early_khz=2096010"},
				{"-chardev", "socket,id=ser0,fd=10,server=on,wait=off,logfile=/proc/self/fd/6"},
				{"-serial", "chardev:ser0"},
				{"-drive", "id=root,file=/proc/self/fd/5,format=raw,if=none,discard=unmap,werror=report,rerror=report"},
				{"-device", "virtio-blk-device,drive=root"},
				{"-chardev", "socket,id=qmp,fd=7,server=on,wait=off"},
				{"-mon", "chardev=qmp,mode=control"},
				{"-chardev", "socket,id=agent,fd=8,server=on,wait=off"},
				{"-device", "virtserialport,id=agentport,chardev=agent,name=org.superjolt.agent"},
				{"-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"},
				{"-name", "superjolt-vm-abc123,debug-threads=on"},
			},
			// QEMU never gets a path of its own: no file of the machine is named on its command line.
			absent: []string{"vhost-vsock", "-S", "host", "/i/", "/v/", "-pidfile", "-qmp", "-netdev", "superjolt.hostname", "superjolt.net", "virtio-net"},
		},
		{
			name: "kvm vsock paused", accel: AccelKVM, transport: TransportVsock, paused: true,
			want: [][]string{
				{"-accel", "kvm"}, {"-cpu", "host"},
				{"-device", "vhost-vsock-device,guest-cid=42,vhostfd=9"},
				{"-append", "console=ttyS0 panic=-1 quiet pci=off reboot=t net.ifnames=0"},
				{"-no-reboot", "-sandbox"},
			},
			absent: []string{"tsc_early_khz", "virtserialport", "agent.sock", "-netdev", "superjolt.hostname", "superjolt.net"},
		},
		{
			name: "hostname and network", accel: AccelTCG, transport: TransportSerial, change: network,
			want: [][]string{
				{"-append", "console=ttyS0 panic=-1 quiet pci=off reboot=t net.ifnames=0 tsc_early_khz=2096010 " +
					"superjolt.hostname=web-1 superjolt.net=10.77.0.2/16,10.77.0.1,10.77.0.1 loglevel=4"},
				// QEMU 7.2 refuses vnet_hdr= with fd=: it probes the fd itself.
				{"-netdev", "tap,id=net0,fd=11"},
				// microvm: virtio-mmio, like the disk; no PCI device.
				{"-device", "virtio-net-device,netdev=net0,mac=02:53:4a:00:00:01"},
				{"-device", "virtio-blk-device,drive=root"},
			},
			absent: []string{"virtio-net-pci", "script=", "ifname=", "vnet_hdr"},
		},
		{
			name: "network on kvm with vsock", accel: AccelKVM, transport: TransportVsock, change: network,
			want: [][]string{
				{"-netdev", "tap,id=net0,fd=11"},
				{"-device", "virtio-net-device,netdev=net0,mac=02:53:4a:00:00:01"},
			},
			absent: []string{"vnet_hdr", "virtio-net-pci"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cfg
			c.Paused = tt.paused
			if tt.change != nil {
				tt.change(&c)
				var err error
				if c, err = c.withDefaults(); err != nil {
					t.Fatal(err)
				}
			}
			a := argv(c, fds, tt.accel, tt.transport, 2096010)
			for _, pair := range tt.want {
				i := slices.Index(a, pair[0])
				for i >= 0 && (i+1 >= len(a) || a[i+1] != pair[1]) {
					j := slices.Index(a[i+1:], pair[0])
					if j < 0 {
						i = -1
						break
					}
					i += 1 + j
				}
				if i < 0 {
					t.Errorf("argv lacks %q %q:\n%q", pair[0], pair[1], a)
				}
			}
			for _, bad := range tt.absent {
				for _, arg := range a {
					if arg == bad || (len(bad) > 2 && strings.Contains(arg, bad)) {
						t.Errorf("argv has %q (in %q)", bad, arg)
					}
				}
			}
			if got := slices.Contains(a, "-S"); got != tt.paused {
				t.Errorf("-S present = %v, want %v", got, tt.paused)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	ok := Config{Name: "vm-abc123", Kernel: "/k", Initrd: "/i", Rootfs: "/r"}
	tests := []struct {
		name   string
		change func(*Config)
	}{
		{"no name", func(c *Config) { c.Name = "" }},
		{"slash in name", func(c *Config) { c.Name = "../x" }},
		{"comma in name", func(c *Config) { c.Name = "a,b" }},
		{"no kernel", func(c *Config) { c.Kernel = "" }},
		{"comma in rootfs", func(c *Config) { c.Rootfs = "/r,format=qcow2" }},
		{"comma in run dir", func(c *Config) { c.RunDir = "/run/a,b" }},
		{"negative memory", func(c *Config) { c.MemoryMiB = -1 }},
		{"reserved cid", func(c *Config) { c.GuestCID = 2 }},
		{"uppercase hostname", func(c *Config) { c.Hostname = "Web-1" }},
		{"hostname with a space", func(c *Config) { c.Hostname = "web-1 init=/bin/sh" }},
		{"hostname with a dot", func(c *Config) { c.Hostname = "web.example" }},
		{"net IPv6", func(c *Config) { c.Net = goodNet(); c.Net.Addr = netip.MustParsePrefix("2001:db8::2/64") }},
		{"net no address", func(c *Config) { c.Net = goodNet(); c.Net.Addr = netip.Prefix{} }},
		{"net gateway outside the subnet", func(c *Config) { c.Net = goodNet(); c.Net.Gateway = netip.MustParseAddr("10.78.0.1") }},
		{"net no gateway", func(c *Config) { c.Net = goodNet(); c.Net.Gateway = netip.Addr{} }},
		{"net zoned dns", func(c *Config) { c.Net = goodNet(); c.Net.DNS = []netip.Addr{netip.MustParseAddr("fe80::1%eth0")} }},
		{"net invalid dns", func(c *Config) { c.Net = goodNet(); c.Net.DNS = []netip.Addr{{}} }},
		{"net multicast MAC", func(c *Config) { c.Net = goodNet(); c.Net.MAC[0] = 0x03 }},
		{"net short MAC", func(c *Config) { c.Net = goodNet(); c.Net.MAC = c.Net.MAC[:5] }},
		{"net zero MAC", func(c *Config) { c.Net = goodNet(); c.Net.MAC = make(net.HardwareAddr, 6) }},
		{"net no TAP", func(c *Config) { c.Net = goodNet(); c.Net.TAP = "" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.change(&c)
			if _, err := c.withDefaults(); err == nil {
				t.Error("accepted")
			}
		})
	}
	c, err := ok.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if c.VCPUs != 1 || c.MemoryMiB != 256 || c.RunDir != "/run/superjolt/vm/vm-abc123" ||
		c.BootTimeout != DefaultBootTimeout || c.BootAttempts != 2 || c.GuestCID < 3 || c.Logger == nil {
		t.Errorf("defaults: %+v", c)
	}
}

func goodNet() *GuestNet {
	return &GuestNet{
		Addr: netip.MustParsePrefix("10.77.0.2/16"), Gateway: netip.MustParseAddr("10.77.0.1"),
		MAC: net.HardwareAddr{0x02, 0, 0, 0, 0, 1}, TAP: "sjt-abc123",
	}
}

func TestConfigNetworkAccepted(t *testing.T) {
	c := Config{Name: "vm-abc123", Kernel: "/k", Initrd: "/i", Rootfs: "/r", Hostname: "web-1", Net: goodNet()}
	if _, err := c.withDefaults(); err != nil {
		t.Fatal(err)
	}
}

func TestSocketPathsStayShort(t *testing.T) {
	short := t.TempDir()
	long := filepath.Join(t.TempDir(), strings.Repeat("d", 60), strings.Repeat("e", 60))
	for _, tt := range []struct {
		name     string
		runDir   string
		ownDir   bool
		sameRoot bool
	}{
		{"short run dir keeps its sockets", short, false, true},
		{"long run dir moves them", long, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := makePaths(tt.runDir, "vm-abc123")
			if err != nil {
				t.Fatal(err)
			}
			if p.ownSockDir != tt.ownDir || (p.sockDir == tt.runDir) != tt.sameRoot {
				t.Errorf("sockDir %s own=%v for run dir %s", p.sockDir, p.ownSockDir, tt.runDir)
			}
			for _, s := range []string{p.qmpSock, p.agentSock} {
				if len(s) > maxSocketPath {
					t.Errorf("%s is %d bytes, over the sun_path limit", s, len(s))
				}
			}
			if filepath.Dir(p.consoleLog) != tt.runDir {
				t.Errorf("console log %s is not in the run dir", p.consoleLog)
			}
			if st, err := os.Stat(tt.runDir); err != nil || !st.IsDir() {
				t.Errorf("run dir not made: %v", err)
			}
			if p.ownSockDir {
				os.Remove(p.sockDir)
			}
		})
	}
}

func TestHostTSC(t *testing.T) {
	if !haveRDTSC {
		t.Skip("no RDTSC on this architecture")
	}
	h := ProbeHost()
	t.Logf("host: KVM=%v (%v) vhost-vsock=%v TSC=%d kHz (%s)", h.KVM, h.KVMError, h.VhostVsock, h.TSCKHz, h.TSCSource)
	if h.TSCKHz == 0 {
		t.Skipf("TSC frequency unknown here: %s", h.TSCSource)
	}
	if h.TSCKHz < 100_000 || h.TSCKHz > 10_000_000 {
		t.Errorf("TSC %d kHz is not a plausible CPU clock", h.TSCKHz)
	}
	// A second, independent measurement agrees within 0.5%.
	again := measureTSC(20*time.Millisecond, 3)
	diff := float64(again) - float64(h.TSCKHz)
	if diff < 0 {
		diff = -diff
	}
	if diff/float64(h.TSCKHz) > 0.005 {
		t.Errorf("TSC measured %d kHz then %d kHz", h.TSCKHz, again)
	}
}

func TestProbeKVM(t *testing.T) {
	err := probeKVM()
	if _, statErr := os.Stat("/dev/kvm"); statErr != nil {
		if err == nil || !strings.Contains(err.Error(), "/dev/kvm") {
			t.Errorf("without /dev/kvm: err = %v, want one naming /dev/kvm", err)
		}
		return
	}
	t.Logf("KVM probe on a host with /dev/kvm: %v", err)
	// With a root daemon QEMU runs unprivileged: KVM counts only when its user can open /dev/kvm too.
	want := err == nil
	if confined() {
		_, gerr := kvmGroup()
		t.Logf("unprivileged access to /dev/kvm: %v", gerr)
		want = want && gerr == nil
	}
	if h := ProbeHost(); h.KVM != want {
		t.Errorf("ProbeHost says KVM=%v (%v), want %v", h.KVM, h.KVMError, want)
	}
}

func TestKVMBrokenSticks(t *testing.T) {
	t.Cleanup(func() {
		hostMu.Lock()
		kvmBroken = nil
		hostMu.Unlock()
	})
	markKVMBroken(os.ErrDeadlineExceeded)
	markKVMBroken(os.ErrClosed) // the first reason stays
	h := ProbeHost()
	if h.KVM || h.KVMError == nil || !strings.Contains(h.KVMError.Error(), "booted under TCG") ||
		!errors.Is(h.KVMError, os.ErrDeadlineExceeded) {
		t.Errorf("after a failed KVM boot: KVM=%v err=%v", h.KVM, h.KVMError)
	}
}
