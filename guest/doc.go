// Package guest holds the superjolt guest agent: its wire protocol, the
// host-side Client, the agent's server (Agent) and the transports that carry
// them, vsock and virtio-serial.
//
// # Protocol
//
// One JSON object per line in each direction. A request
//
//	{"v":1,"id":7,"op":"freeze","deadline_ms":30000}
//
// is answered, in any order relative to other requests, by
//
//	{"v":1,"id":7,"ok":true,"filesystems":["/"]}
//
// or, on failure, by
//
//	{"v":1,"id":7,"ok":false,"error":{"code":"frozen","message":"..."}}
//
// The operations are ping, freeze, thaw, exec, shutdown and reboot, and the
// streaming exec (exec_start, answered by a stream of frames, with
// exec_stdin, exec_signal, exec_window and exec_resize; see stream.go). The
// agent serves every request of a stream concurrently, so a request stuck on
// a frozen filesystem never delays thaw. See [Request] and [Response] for the
// fields, and [ErrFrozen] and its siblings for the error codes.
//
// # Types and the net interfaces they satisfy
//
//   - [Client] owns one net.Conn (any stream: a UNIX socket from [DialSerial],
//     a *vsock.Conn from [DialVsock], one end of net.Pipe) and multiplexes
//     concurrent calls over it by request id. It satisfies io.Closer.
//   - [DialSerial] returns a *net.UnixConn as a net.Conn; [DialVsock] and
//     [ListenVsock] return *vsock.Conn and *vsock.Listener as net.Conn and
//     net.Listener.
//   - [Agent] serves any io.ReadWriter with [Agent.ServeConn] (a net.Conn, a
//     virtio-serial *os.File) and any net.Listener with [Agent.Serve].
//   - [Freezer] is the small interface the agent freezes filesystems through;
//     [FSFreezer] is the real one (FIFREEZE/FITHAW). [Runner] runs exec
//     requests; [ProcessRunner] is the real one.
//   - [Clock] and [Timer] inject time; [SystemClock] is the real clock.
//
// # Transports on the guest side
//
// [Agent.ServeTransports] serves everything the guest has: a vsock listener
// on [VsockPort] ([ListenVsock], bound to any context id) and the
// virtio-serial port named [SerialPortName] ([Agent.ServeSerial], which
// finds the port with [FindSerialPort] and reopens it whenever the host
// goes away). [SelfTestVsock] proves vsock inside one machine over CID 1.
//
// # PID 1
//
// In the test image the agent binary is also the init. [Init] is the
// initramfs stage; it needs /init (the agent), /dev/console, the mount
// points /proc, /sys, /dev and /newroot, /lib/modules/superjolt/*.ko with
// their load order in /lib/modules/superjolt/order, and a root disk
// /dev/vda (ext4) holding /sbin/superjolt-agent. It switches to that disk
// and execs /sbin/superjolt-agent serve, which as PID 1 runs
// [StartInitServices] (tmpfs on /tmp and /run, a [Reaper] for orphans)
// and serves, with [InitPower] powering the machine off or restarting it
// when the host asks, and [HandleInitSignals] doing the same when the
// guest's own `reboot`, `poweroff` or `halt` signal PID 1 (busybox init's
// signals, [InitSignals]). Before it serves, it applies the boot
// configuration from the kernel command line ([ConfigureBoot], below). It also keeps a root shell on the serial console
// ([RunConsoleShell] on /dev/ttyS0, started again whenever it exits), in a
// session of its own so that the console never becomes PID 1's terminal:
// `superjolt vm console` reaches it.
//
// # Boot configuration
//
// The host tells the guest its name and network on the kernel command line,
// without DHCP:
//
//	superjolt.hostname=NAME
//	superjolt.net=ADDR/PREFIX,GATEWAY[,DNS...]
//
// for example `superjolt.hostname=web-1 superjolt.net=10.77.0.2/16,10.77.0.1,10.77.0.1`.
// NAME is one DNS label (1-63 lowercase letters, digits and dashes, not
// starting or ending with a dash: a VM name). ADDR/PREFIX is the guest's IPv4
// address with its subnet's prefix length (1-30; not the network or
// broadcast address), GATEWAY an IPv4 address of that subnet other than
// ADDR, and each DNS an IPv4 or IPv6 address; no spaces anywhere. Either
// word may be missing: without superjolt.net the guest has no network
// configured by superjolt; without superjolt.hostname it keeps the hostname
// in its /etc/hostname. Of a repeated word the last counts. [ParseCmdline]
// reads them (a malformed value is an error naming it) and
// [BootConfig.CmdlineArgs] writes them, so both sides share one format.
//
// The agent as PID 1 applies them before it serves, so the host's first
// successful ping (the end of the boot) finds them in place
// ([ConfigureBoot], [ApplyBootConfig]): sethostname(2), /etc/hostname and
// /etc/hosts; lo up; on the NIC (eth0, or the first link that is not
// loopback) the address, link up, the default route through GATEWAY; and
// /etc/resolv.conf with the DNS servers. The built-in image loads virtio_net
// in its initramfs. Every step is logged on the console; a failed step does
// not stop the boot or the other steps, and ping reports it
// (PingResult.BootConfigError). Ping also reports the guest's hostname and
// the IPv4 addresses (with prefix) of its interfaces other than loopback
// (PingResult.Hostname, PingResult.Addresses; optional fields that an older
// agent leaves out). An agent that is not PID 1 (under systemd, in an
// imported image) leaves hostname and network to the guest's own init.
package guest
