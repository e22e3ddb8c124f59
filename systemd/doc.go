// Package systemd is superjolt's side of systemd: superjoltd's readiness,
// status and watchdog (sd_notify), the VMs as transient services
// superjolt-vm-<id>.service in superjolt.slice, started, watched, limited and
// stopped over D-Bus (systemd's private socket, no dbus-daemon needed), and
// the installation of the daemon's units and files (superjolt install).
//
// Everything that talks to systemd needs PID 1 to be systemd (see Booted) and
// root. The tests boot a real systemd in systemd-nspawn (package nspawntest).
package systemd
