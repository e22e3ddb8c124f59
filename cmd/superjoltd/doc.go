// Command superjoltd is the superjolt appliance's daemon. It opens the state
// store and the storage pool (an existing Btrfs mount with --pool, or by
// default a loop-backed Btrfs image under the state directory), builds the
// built-in VM image into the pool on the first start, takes over the VMs
// an earlier superjoltd left running and boots those that should run,
// serves the local API on a UNIX socket, and runs billing, the daily
// backups, the reaper and the daily history pass (events, finished
// operations and charges one by one kept for --history-window) until
// SIGTERM or SIGINT; then it leaves the VMs running. It tells systemd when it is ready and pings its watchdog
// (Type=notify; the unit `superjolt install` writes is in package systemd).
//
// With systemd as PID 1 (--supervisor=auto or systemd) every VM runs as a
// transient unit whose commands are superjoltd's own (unitcmds.go):
//
//	superjoltd exec-vm RUNDIR            the unit's main process: becomes the VM's QEMU
//	superjoltd stop-vm [--socket S] [--run-dir R] VMID
//	                                     its stop command: the guest's clean shutdown
//	superjoltd follow-console LOG PID    copies the guest's console into the unit's journal
//
// Usage:
//
//	superjoltd [--state-dir DIR] [--pool PATH | --pool-image FILE --pool-size SIZE]
//	           [--supervisor=auto|systemd|self]
//	           [--socket PATH] [--subnet CIDR] [--network=on|off] [--bridge NAME] [--dns IP,...]
//	           [--http-listen ADDR|off] [--https-listen ADDR|off] [--tls-cert-dir DIR]
//	           [--acme-email EMAIL [--acme-ca URL]]
//	           [--listen ADDR [--listen-name NAME]... | --listen ADDR --tls-cert FILE --tls-key FILE]
//	           [--clock=manual|real] [--run-dir DIR] [--history-window 30d]
//	           [--agent FILE] [--log-level debug|info|warn|error]
//
// Exit codes: 0 after a clean stop, 1 when it could not start or failed
// while running, 2 for bad flags.
package main
