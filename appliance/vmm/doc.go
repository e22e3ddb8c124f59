// Package vmm is superjolt's QEMU driver: it runs one microVM per [QEMU] value.
//
// A machine is qemu-system-x86_64 on the microvm machine type with the VM's tier of vCPUs and memory,
// its image's kernel and initrd, its rootfs.img as a virtio-blk disk, the serial console on a
// listening UNIX socket (console.sock, see [QEMU.ConsoleSocket]) whose output QEMU also writes to a
// log file (console.log), and QMP on a UNIX socket (package qmp). The guest agent is reached over vhost-vsock when the
// host has /dev/vhost-vsock, and over a virtio-serial port backed by a UNIX socket otherwise. KVM is
// used when /dev/kvm can really run a vCPU (probed once, see [ProbeHost]); otherwise TCG, with the
// host's TSC frequency on the guest kernel command line so that microvm boots do not hang under load.
//
// With [Config.Net] the machine also has a virtio-net NIC (virtio-net-device: microvm has no PCI,
// so like the disk it sits on virtio-mmio) with the given MAC, on a TAP device whose descriptor the
// daemon opened and hands QEMU (-netdev tap,id=net0,fd=N; see [GuestNet] for what that fd must be).
//
// The guest learns its name and network from the kernel command line, which the driver builds as
//
//	console=ttyS0 panic=-1 quiet pci=off reboot=t net.ifnames=0 [tsc_early_khz=K] [superjolt.hostname=NAME]
//	    [superjolt.net=ADDR/PREFIX,GATEWAY[,DNS...]] [KernelArgs]
//
// superjolt.hostname comes from [Config.Hostname] (a valid VM name), superjolt.net from
// [Config.Net] (netip values only, validated: an IPv4 address with its prefix, a gateway in that
// subnet); the format is package guest's ([guest.ParseCmdline]), which the agent applies before it
// answers its first ping.
//
// QEMU never runs as root: with a root daemon each QEMU process runs as a uid of its own from
// [UIDBase], under QEMU's seccomp sandbox, and reaches its files and sockets only through descriptors
// the daemon opened for it (see confine.go for the whole model and for what stays root).
//
// [QEMU.Start] returns once the agent reports a boot id; a boot that misses its deadline is killed and
// retried. QEMU runs with -no-reboot but set-action reboot=reset: a guest's reboot resets the machine
// and QEMU goes on; the driver sees QMP's RESET, waits for the agent of the new boot and reports it on
// [QEMU.Rebooted] ([QEMU.BootID] and [QEMU.Agent] then give the new boot's). [QEMU.Exit] says how QEMU
// ended: the guest powered off (QMP SHUTDOWN, guest-shutdown), a reboot that never came back, or
// unasked. [QEMU.Shutdown] asks the agent, then presses the ACPI power button, then kills. The QEMU
// process never lives under a request's context, and it outlives the daemon: no parent-death
// signal, a session of its own, or a systemd unit of its own ([Config.Units], see launch.go and
// unit.go). [QEMU.Detach] lets go of it; [Attach] takes over a QEMU that an earlier daemon left
// running, from the launch record and pid file in its run directory. The argv is built as a list
// and run without a shell.
//
// Runtime files live in the machine's run directory (default /run/superjolt/vm/<name>, root's, 0700):
// qmp.sock, agent.sock, console.sock, console.log, qemu.log, qemu.pid (written by the daemon, or by
// the launcher of a unit) and launch.json (the launch record). When the run directory is too deep for a UNIX socket
// path (108 bytes), the sockets move to a short directory of their own under /run/superjolt/s.
//
// *QEMU satisfies [Machine]; all its methods are safe for concurrent use.
package vmm
