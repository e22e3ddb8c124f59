package systemd

import (
	"path/filepath"
	"strings"
)

// daemonUnitFile returns superjoltd.service for binaries in binDir.
//
// No option here may give the daemon a mount namespace of its own
// (ProtectSystem, ProtectHome, PrivateTmp, PrivateDevices, ReadWritePaths,
// ProtectKernel*, ProtectControlGroups, ProtectProc, ...): the daemon mounts
// the pool, and the VM units, in the host's mount namespace, must see it.
// Nor RuntimeDirectory= or StateDirectory=: systemd would delete
// /run/superjolt, and the running VMs' sockets, whenever the daemon stops;
// systemd-tmpfiles makes those directories instead.
func daemonUnitFile(binDir string) string {
	return strings.ReplaceAll(`# superjoltd, the superjolt appliance daemon. Written by superjolt install;
# superjolt install --uninstall removes it (and leaves /var/lib/superjolt).
[Unit]
Description=superjolt appliance daemon (microVMs, backups, billing)
Documentation=https://github.com/superjolt/superjolt
# The daemon makes its own bridge: the network need not be online.
After=local-fs.target network.target
# The default pool is a loop-backed Btrfs image.
Wants=modprobe@loop.service modprobe@btrfs.service
After=modprobe@loop.service modprobe@btrfs.service

[Service]
Type=notify
NotifyAccess=main
ExecStart=@BIN@/superjoltd --socket-group superjolt
# The first start builds the built-in image (Debian cloud kernel, busybox,
# agent) before READY=1.
TimeoutStartSec=15min
# superjoltd pings the watchdog every WatchdogSec/3 while its store answers.
WatchdogSec=30s
Restart=on-failure
RestartSec=2s
# At stop the daemon lets running operations finish for up to 2 minutes.
TimeoutStopSec=180s
# Only the daemon itself is stopped: VMs run in units of their own (or, with
# --supervisor=self, are its children) and outlive its restart or upgrade.
KillMode=process

# Hardening that needs no mount namespace of its own (see above):
# the daemon and QEMU never change their execution domain (personality(2)).
LockPersonality=yes
# neither needs realtime scheduling; a runaway could otherwise starve the box.
RestrictRealtime=yes
# only native x86-64 system calls: no 32-bit ABI to attack.
SystemCallArchitectures=native
# the API socket (unix), bridges, addresses and nftables (netlink), the proxy
# (inet), the guest agents (vsock): nothing else, no raw packet sockets.
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_VSOCK
# Not set, on purpose: RestrictSUIDSGID (images and restores hold set-uid
# files), MemoryDenyWriteExecute (QEMU's TCG writes code), RestrictNamespaces
# (image builds use namespaces), NoNewPrivileges, ProtectClock (a device
# policy would deny /dev/kvm, /dev/net/tun, loop devices), ProtectHostname
# (the daemon shows the host's current name).

[Install]
WantedBy=multi-user.target
`, "@BIN@", binDir)
}

// sliceUnitFile is superjolt.slice, which holds the VM units.
const sliceUnitFile = `# The superjolt VMs, one superjolt-vm-<id>.service each. Stopping the slice
# (or the machine) shuts every VM down through its unit's ExecStop.
[Unit]
Description=superjolt VMs
Documentation=https://github.com/superjolt/superjolt
`

// sysusersFile makes the group whose members may use superjoltd's socket.
const sysusersFile = `# The group whose members may use superjoltd's API socket (superjolt install).
g superjolt -
`

// tmpfilesFile makes the run and state directories. The VMs' sockets live
// under /run/superjolt/vm, which a daemon restart does not delete.
const tmpfilesFile = `# superjoltd's directories (superjolt install).
d /run/superjolt 0750 root superjolt -
d /run/superjolt/vm 0700 root root -
d /var/lib/superjolt 0700 root root -
`

// Binaries are the programs that Install copies, in the order it copies
// them: the agent first (checked static), superjoltd last.
var Binaries = []string{"superjolt-agent", "superjolt", "superjoltd"}

// installedFile is a file that Install writes besides the binaries.
type installedFile struct{ path, content string }

// installedFiles returns the files Install writes besides the binaries.
func (o InstallOptions) installedFiles() []installedFile {
	return []installedFile{
		{filepath.Join(o.UnitDir, DaemonUnit), daemonUnitFile(o.BinDir)},
		{filepath.Join(o.UnitDir, Slice), sliceUnitFile},
		{filepath.Join(o.SysusersDir, "superjolt.conf"), sysusersFile},
		{filepath.Join(o.TmpfilesDir, "superjolt.conf"), tmpfilesFile},
	}
}
