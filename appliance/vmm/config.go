package vmm

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/guest"
)

// Accel selects QEMU's accelerator.
type Accel string

const (
	AccelAuto Accel = ""    // KVM when /dev/kvm works (see [ProbeHost]), TCG otherwise
	AccelKVM  Accel = "kvm" // hardware virtualization
	AccelTCG  Accel = "tcg" // software emulation
)

// Transport selects how the host reaches the guest agent.
type Transport string

const (
	TransportAuto   Transport = ""       // vsock when /dev/vhost-vsock exists, virtio-serial otherwise
	TransportVsock  Transport = "vsock"  // vhost-vsock-device with the machine's guest CID
	TransportSerial Transport = "serial" // virtio-serial port backed by a UNIX socket in the run directory
)

// Defaults used when a [Config] field is zero.
const (
	DefaultVCPUs        = 1
	DefaultMemoryMiB    = 256
	DefaultBootTimeout  = 60 * time.Second
	DefaultBootAttempts = 2
	DefaultRunRoot      = "/run/superjolt/vm"
	// AgentPortName is the virtio-serial port name the agent looks for (guest.SerialPortName).
	AgentPortName = "org.superjolt.agent"
)

// maxSocketPath is the longest UNIX socket path the kernel takes (sun_path is 108 bytes with the NUL).
const maxSocketPath = 107

// Config describes one machine. Zero fields take the defaults named beside them.
type Config struct {
	// Name is the VM id (vm-xxxxxx). It names the QEMU process, the default run directory and log lines.
	Name string
	// VCPUs and MemoryMiB come from the VM's tier. Defaults: 1 vCPU, 256 MiB.
	VCPUs     int
	MemoryMiB int
	// Kernel, Initrd and Rootfs are the image's vmlinuz and initrd and the VM's own rootfs.img (raw),
	// which becomes /dev/vda in the guest.
	Kernel, Initrd, Rootfs string
	// KernelArgs are appended to the kernel command line.
	KernelArgs string
	// Hostname is the guest's hostname (the VM's name), passed on the kernel command line as
	// superjolt.hostname=NAME; it must be a valid VM name (model.ValidateVMName). "" passes none: the
	// guest keeps the one on its disk.
	Hostname string
	// Net gives the machine a virtio-net NIC on a TAP device and tells the guest its address (see
	// [GuestNet]). nil: no NIC.
	Net *GuestNet
	// RunDir holds the runtime files: qmp.sock, agent.sock, console.log, qemu.log, qemu.pid.
	// Default: /run/superjolt/vm/<Name>. When socket paths under it would be longer than a UNIX socket
	// address allows, the sockets go to a short directory under /run/superjolt/s (or the temp dir).
	RunDir string
	// QEMU is the qemu-system-x86_64 binary. Default: found in PATH.
	QEMU string
	// Accel and Transport: see their types. Default: chosen from what the host has.
	Accel     Accel
	Transport Transport
	// GuestCID is the guest's vsock context id (>= 3), unique on the host; used with TransportVsock.
	// Default: derived from Name (the appliance should assign unique ones).
	GuestCID uint32
	// BootTimeout bounds each boot attempt, from QEMU's start to the agent's first boot id.
	BootTimeout time.Duration
	// BootAttempts is how many times Start boots before giving up (a stuck attempt is killed first).
	BootAttempts int
	// Paused starts QEMU with its vCPUs stopped (-S); Start then returns once QMP answers, without
	// waiting for the agent. For tests of an unresponsive guest.
	Paused bool
	// Logger receives the driver's logs, with a "vm" attribute added. Default: slog.Default().
	Logger *slog.Logger `json:"-"`

	// Units, when set, runs QEMU as a transient systemd service of its own (see unit.go): the
	// unit's command is Launcher followed by "exec-vm" and the run directory, which opens what
	// QEMU needs and then becomes QEMU ([ExecLaunch]). nil: the daemon starts QEMU itself.
	Units Units `json:"-"`
	// Launcher is the command that runs [ExecLaunch] (superjoltd, which answers "exec-vm RUNDIR").
	Launcher []string `json:"-"`
	// Description names the VM for the service manager ("superjolt VM vm-abc123 (web, account acme)").
	Description string `json:"-"`
	// StopCommand, followed by the machine's name, runs when the service manager stops the VM's
	// unit (a host shutdown), before QEMU is signalled: it asks superjoltd to shut the guest down
	// cleanly through its agent (superjoltd stop-vm).
	StopCommand []string `json:"-"`
}

// GuestNet is a machine's network: one virtio-net NIC on a TAP device the daemon opened, and the
// static address the guest configures at boot from the kernel command line
// (superjolt.net=ADDR/PREFIX,GATEWAY[,DNS...]; see package guest).
type GuestNet struct {
	// Addr is the guest's IPv4 address with its subnet's prefix length (10.77.0.2/16).
	Addr netip.Prefix
	// Gateway is the guest's default route, an address of Addr's subnet (the bridge's).
	Gateway netip.Addr
	// DNS are the guest's name servers, in order (may be empty).
	DNS []netip.Addr
	// MAC is the NIC's address: 6 bytes, unicast (locally administered, derived from the VM id).
	MAC net.HardwareAddr
	// TAP is the name of the VM's TAP device, persistent (made by the daemon with appliance/net's
	// OpenTAP, which the caller must not keep a queue of open). At each launch the driver, as root,
	// opens its queue (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR; QEMU finds the header flag on the fd and
	// uses it for offloads) and hands QEMU the descriptor: QEMU runs unprivileged and cannot open
	// /dev/net/tun. In the calling process's network namespace, or, with [Config.Units], in that
	// of the service manager.
	TAP string
	// NetNS is the path of the network namespace the TAP is in (/run/netns/NAME), when it is not
	// the caller's own. Not with Config.Units.
	NetNS string
}

// validate checks what goes onto QEMU's and the guest kernel's command lines.
func (n *GuestNet) validate() error {
	if err := n.bootNet().Validate(); err != nil {
		return fmt.Errorf("vmm: network: %w", err)
	}
	if len(n.MAC) != 6 || n.MAC[0]&1 != 0 || bytes.Equal(n.MAC, make(net.HardwareAddr, 6)) {
		return fmt.Errorf("vmm: network: MAC %q is not a 6-byte unicast address", n.MAC)
	}
	if n.TAP == "" || strings.ContainsAny(n.TAP, "/ \t\n,") {
		return fmt.Errorf("vmm: network: TAP name %q", n.TAP)
	}
	return nil
}

func (n *GuestNet) bootNet() guest.BootNet {
	return guest.BootNet{Addr: n.Addr, Gateway: n.Gateway, DNS: n.DNS}
}

// bootConfig is what the guest learns from its kernel command line.
func (c Config) bootConfig() guest.BootConfig {
	b := guest.BootConfig{Hostname: c.Hostname}
	if c.Net != nil {
		bn := c.Net.bootNet()
		b.Net = &bn
	}
	return b
}

func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		return c, errors.New("vmm: config needs a Name")
	}
	if strings.ContainsAny(c.Name, "/,= \t\n") || c.Name == "." || c.Name == ".." {
		return c, fmt.Errorf("vmm: bad machine name %q", c.Name)
	}
	for _, f := range []struct{ what, path string }{{"Kernel", c.Kernel}, {"Initrd", c.Initrd}, {"Rootfs", c.Rootfs}} {
		if f.path == "" {
			return c, fmt.Errorf("vmm: config needs %s", f.what)
		}
		// QEMU's -drive and -chardev option syntax uses commas as separators.
		if strings.Contains(f.path, ",") {
			return c, fmt.Errorf("vmm: %s path %q contains a comma", f.what, f.path)
		}
	}
	if c.Hostname != "" {
		if err := model.ValidateVMName(c.Hostname); err != nil {
			return c, fmt.Errorf("vmm: hostname: %w", err)
		}
	}
	if c.Net != nil {
		if err := c.Net.validate(); err != nil {
			return c, err
		}
	}
	if _, err := c.bootConfig().CmdlineArgs(); err != nil {
		return c, fmt.Errorf("vmm: %w", err)
	}
	if c.VCPUs == 0 {
		c.VCPUs = DefaultVCPUs
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = DefaultMemoryMiB
	}
	if c.VCPUs < 0 || c.MemoryMiB < 0 {
		return c, errors.New("vmm: negative VCPUs or MemoryMiB")
	}
	if c.RunDir == "" {
		c.RunDir = filepath.Join(DefaultRunRoot, c.Name)
	}
	if strings.Contains(c.RunDir, ",") {
		return c, fmt.Errorf("vmm: run directory %q contains a comma", c.RunDir)
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = DefaultBootTimeout
	}
	if c.BootAttempts == 0 {
		c.BootAttempts = DefaultBootAttempts
	}
	if c.GuestCID == 0 {
		h := fnv.New32a()
		h.Write([]byte(c.Name))
		c.GuestCID = 3 + h.Sum32()%(1<<30)
	}
	if c.GuestCID < 3 {
		return c, fmt.Errorf("vmm: guest CID %d is reserved", c.GuestCID)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c, nil
}

// paths are a machine's runtime files.
type paths struct {
	runDir, sockDir          string
	qmpSock, agentSock       string
	consoleSock              string // the serial console, interactive (see [QEMU.ConsoleSocket])
	consoleLog, qemuLog, pid string
	ownSockDir               bool // sockDir was made for this run and is removed afterwards
}

// makePaths creates the run directory and picks where the sockets go. A socket path must fit in
// sun_path (108 bytes); a run directory deep inside a test's temp dir easily does not, so then the
// sockets get a fresh short directory of their own.
func makePaths(runDir, name string) (paths, error) {
	p := paths{runDir: runDir}
	if err := os.MkdirAll(runDir, 0o700); err != nil {
		return p, fmt.Errorf("vmm: run directory: %w", err)
	}
	// The run directory is the daemon's alone: QEMU gets descriptors, not paths (see confine.go).
	if err := os.Chmod(runDir, 0o700); err != nil {
		return p, fmt.Errorf("vmm: run directory: %w", err)
	}
	p.consoleLog = filepath.Join(runDir, "console.log")
	p.qemuLog = filepath.Join(runDir, "qemu.log")
	p.pid = filepath.Join(runDir, "qemu.pid")
	p.sockDir = runDir
	if len(filepath.Join(runDir, "agent.sock")) > maxSocketPath {
		dir, err := shortDir(name)
		if err != nil {
			return p, err
		}
		p.sockDir, p.ownSockDir = dir, true
	}
	p.qmpSock = filepath.Join(p.sockDir, "qmp.sock")
	p.agentSock = filepath.Join(p.sockDir, "agent.sock")
	p.consoleSock = filepath.Join(p.sockDir, "console.sock")
	// Stale sockets from a previous run would make QEMU fail to bind.
	os.Remove(p.qmpSock)
	os.Remove(p.agentSock)
	os.Remove(p.consoleSock)
	return p, nil
}

func shortDir(name string) (string, error) {
	var errs []error
	for _, root := range []string{"/run/superjolt/s", os.TempDir()} {
		if err := os.MkdirAll(root, 0o700); err != nil {
			errs = append(errs, err)
			continue
		}
		pattern := name
		if len(pattern) > 16 {
			pattern = pattern[:16]
		}
		dir, err := os.MkdirTemp(root, pattern+"-")
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if len(filepath.Join(dir, "agent.sock")) <= maxSocketPath {
			return dir, nil
		}
		os.Remove(dir)
		errs = append(errs, fmt.Errorf("%s is too long for a socket path", dir))
	}
	return "", fmt.Errorf("vmm: no short directory for sockets: %w", errors.Join(errs...))
}

// kernelCmdline is the guest kernel command line; boot holds the superjolt.* words (validated in
// withDefaults), extra the caller's KernelArgs.
func kernelCmdline(accel Accel, tscKHz uint64, boot, extra string) string {
	// console on the first UART (to console.log); reboot at once on panic (QEMU then exits or resets);
	// no PCI on microvm. microvm needs ACPI on (the default) or its virtio-mmio devices vanish.
	// reboot=t: restart by triple fault, which QEMU turns into a reset at once. The default order
	// (ACPI, then the keyboard controller microvm does not have, polled 0x10000 times per try) spins
	// for seconds under TCG, and for over 90 s on a loaded host: guest reboots looked hung.
	// net.ifnames=0: a distribution guest's udev keeps the kernel's name eth0 for the NIC, the one
	// the boot configuration sets up (a virtio-mmio NIC has no slot or path to name it by anyway).
	args := []string{"console=ttyS0", "panic=-1", "quiet", "pci=off", "reboot=t", "net.ifnames=0"}
	if accel == AccelTCG && tscKHz > 0 {
		// Under TCG, PIT calibration fails under host CPU contention and the boot hangs.
		args = append(args, "tsc_early_khz="+strconv.FormatUint(tscKHz, 10))
	}
	if boot != "" {
		args = append(args, boot)
	}
	if extra != "" {
		args = append(args, extra)
	}
	return strings.Join(args, " ")
}

// accelArg is QEMU's -accel argument. Under TCG the translation cache is bounded (QEMU's default
// is up to 1 GiB, an eighth of the host's memory), so that QEMU's own memory has a known ceiling
// (see UnitLimits).
func accelArg(accel Accel) string {
	if accel == AccelTCG {
		return "tcg,tb-size=" + strconv.Itoa(tcgCacheMiB)
	}
	return string(accel)
}

// qemuFDs are the descriptor numbers QEMU inherits (see [handover]); 0 means not passed.
type qemuFDs struct {
	kernel, initrd, rootfs, console int // files, reopened by QEMU through /proc/self/fd
	qmp, agent, serial              int // listening UNIX sockets
	vhost                           int // /dev/vhost-vsock
	tap                             int // the TAP device (Config.Net)
}

// argv returns QEMU's arguments (without the binary) for one boot. QEMU reaches every file and socket
// through a descriptor the daemon opened (fds), never through a path of its own. c must have passed
// withDefaults.
func argv(c Config, fds qemuFDs, accel Accel, transport Transport, tscKHz uint64) []string {
	boot, _ := c.bootConfig().CmdlineArgs() // validated in withDefaults
	a := []string{
		"-name", "superjolt-" + c.Name + ",debug-threads=on",
		"-M", "microvm",
		"-accel", accelArg(accel),
	}
	if accel == AccelKVM {
		a = append(a, "-cpu", "host")
	}
	a = append(a,
		"-smp", strconv.Itoa(c.VCPUs),
		"-m", strconv.Itoa(c.MemoryMiB),
		"-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
		"-sandbox", sandboxArg,
		"-kernel", procFD(fds.kernel),
		"-initrd", procFD(fds.initrd),
		"-append", kernelCmdline(accel, tscKHz, boot, c.KernelArgs),
		// The serial console is a listening socket (superjolt vm console
		// connects to it through the daemon) whose every byte, out of the
		// guest, also goes to the console log, attached or not.
		"-chardev", "socket,id=ser0,fd="+strconv.Itoa(fds.serial)+",server=on,wait=off,logfile="+procFD(fds.console),
		"-serial", "chardev:ser0",
		// werror/rerror=report: a write the host cannot do (the pool is
		// full) fails in the guest as an I/O error, and the guest keeps
		// running and answering its agent. QEMU's default (enospc) pauses
		// the whole VM until someone resumes it over QMP.
		"-drive", "id=root,file="+procFD(fds.rootfs)+",format=raw,if=none,discard=unmap,werror=report,rerror=report",
		"-device", "virtio-blk-device,drive=root",
		"-chardev", "socket,id=qmp,fd="+strconv.Itoa(fds.qmp)+",server=on,wait=off",
		"-mon", "chardev=qmp,mode=control",
	)
	switch transport {
	case TransportVsock:
		a = append(a, "-device", "vhost-vsock-device,guest-cid="+strconv.FormatUint(uint64(c.GuestCID), 10)+
			",vhostfd="+strconv.Itoa(fds.vhost))
	default:
		a = append(a,
			"-chardev", "socket,id=agent,fd="+strconv.Itoa(fds.agent)+",server=on,wait=off",
			"-device", "virtio-serial-device",
			"-device", "virtserialport,id=agentport,chardev=agent,name="+AgentPortName,
		)
	}
	if c.Net != nil {
		// microvm has no PCI: the NIC is a virtio-mmio device, like the disk and the serial port.
		// With fd= QEMU runs no script and takes no vnet_hdr= (QEMU 7.2 refuses it): it asks the fd
		// itself (TUNGETIFF) whether the TAP carries virtio-net headers, and uses them if so.
		a = append(a,
			"-netdev", "tap,id=net0,fd="+strconv.Itoa(fds.tap),
			"-device", "virtio-net-device,netdev=net0,mac="+c.Net.MAC.String(),
		)
	}
	if c.Paused {
		a = append(a, "-S")
	}
	return a
}
