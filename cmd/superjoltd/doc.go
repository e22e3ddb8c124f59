// Command superjoltd is the superjolt appliance's daemon. It opens the state
// store and the storage pool (an existing Btrfs mount with --pool, or by
// default a loop-backed Btrfs image under the state directory), builds the
// built-in VM image into the pool on the first start, brings back the VMs
// that were running, serves the local API on a UNIX socket, and runs
// billing, the daily backups and the reaper until SIGTERM or SIGINT. It
// tells systemd when it is ready and pings its watchdog (Type=notify; see
// superjoltd.service).
//
// Usage:
//
//	superjoltd [--state-dir DIR] [--pool PATH | --pool-image FILE --pool-size SIZE]
//	           [--socket PATH] [--subnet CIDR] [--network=on|off] [--bridge NAME] [--dns IP,...]
//	           [--http-listen ADDR|off] [--https-listen ADDR|off] [--tls-cert-dir DIR]
//	           [--acme-email EMAIL [--acme-ca URL]]
//	           [--clock=manual|real] [--run-dir DIR]
//	           [--agent FILE] [--log-level debug|info|warn|error]
//
// Exit codes: 0 after a clean stop, 1 when it could not start or failed
// while running, 2 for bad flags.
package main
