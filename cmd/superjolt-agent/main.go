// Command superjolt-agent is the superjolt guest agent. It runs inside a VM
// and answers the host's ping, freeze, thaw, exec, shutdown and reboot
// requests over vsock and virtio-serial (see package guest).
//
// Usage:
//
//	superjolt-agent [flags] [serve]   serve the agent (the default)
//	superjolt-agent init              initramfs stage of the test image
//	superjolt-agent bootconfig        apply the host's hostname and network
//	                                  (superjolt-bootconfig.service)
//	superjolt-agent version           print the version
//
// Run as PID 1 from /init (the test image's initramfs), it is the init:
// it mounts the root disk, switches to it and execs /sbin/superjolt-agent
// serve there, which then runs as PID 1: it reaps orphans and powers the
// machine off or restarts it itself, when the host asks and when the
// guest's own reboot, poweroff or halt signal it (busybox init's signals).
//
// A hidden subcommand, `superjolt-agent selftest vsock`, checks vsock inside
// a guest: it listens on a vsock port, dials itself at CID 1 (needs the
// vsock_loopback module), pings, and prints "OK vsock ..." (exit 0) or the
// error (exit 1). End-to-end tests exec it in the test guest, whose host
// has no /dev/vhost-vsock.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/superjolt/superjolt/guest"
)

// version is set with -ldflags "-X main.version=...".
var version = ""

func main() {
	if os.Getpid() == 1 && os.Args[0] == "/init" {
		// The kernel hands init its unknown command-line words as
		// arguments: they are not ours to parse.
		os.Exit(runInit())
	}
	os.Exit(run(os.Args[1:]))
}

func agentVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				return "dev-" + s.Value[:12]
			}
		}
	}
	return "dev"
}

func run(args []string) int {
	fs := flag.NewFlagSet("superjolt-agent", flag.ContinueOnError)
	vsockPort := fs.Uint("vsock-port", guest.VsockPort, "vsock `port` to listen on")
	noVsock := fs.Bool("no-vsock", false, "do not listen on vsock")
	serialName := fs.String("serial-name", guest.SerialPortName, "virtio-serial port `name` to serve")
	noSerial := fs.Bool("no-serial", false, "do not serve virtio-serial")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: superjolt-agent [flags] [serve|init|bootconfig|version]\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if *vsockPort > math.MaxUint32 {
		fmt.Fprintf(os.Stderr, "superjolt-agent: -vsock-port %d is out of range\n", *vsockPort)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(os.Stderr, "superjolt-agent: -log-level: %v\n", err)
		return 2
	}
	// Under an init like systemd the log may end on a filesystem the agent
	// froze (journald writes there): it must drop lines rather than block
	// a request. As PID 1 it goes straight to the console, which never
	// blocks on a filesystem, and nothing is lost at power off.
	var logOut io.Writer = os.Stderr
	if os.Getpid() != 1 {
		logw := guest.NewDroppingWriter(os.Stderr, 1024)
		defer logw.Flush(time.Second)
		logOut = logw
	}
	log := guest.TextLogger(logOut, level)
	slog.SetDefault(log)

	// As PID 1 the agent is the init: SIGTERM and the other init signals
	// ask it to reboot or power off the machine (see serve), not to stop.
	ctx := context.Background()
	if os.Getpid() != 1 {
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
	}

	cmd := "serve"
	if fs.NArg() > 0 {
		cmd = fs.Arg(0)
	}
	switch {
	case cmd == "serve" && fs.NArg() <= 1:
		return serve(ctx, log, guest.ServeOptions{
			VsockPort:  uint32(*vsockPort),
			NoVsock:    *noVsock,
			SerialName: *serialName,
			NoSerial:   *noSerial,
		})
	case cmd == "init" && fs.NArg() == 1:
		return runInit()
	case cmd == "bootconfig" && fs.NArg() == 1:
		// Under systemd (an imported or built distribution image): what
		// the agent as PID 1 does before it serves.
		if _, err := guest.ConfigureBoot(log, ""); err != nil {
			return 1
		}
		return 0
	case cmd == "version" && fs.NArg() == 1:
		fmt.Println(agentVersion())
		return 0
	case cmd == "selftest" && fs.NArg() == 2 && fs.Arg(1) == "vsock":
		res, err := guest.SelfTestVsock(ctx, 0, log)
		if err != nil {
			fmt.Fprintf(os.Stderr, "FAIL vsock: %v\n", err)
			if ctx.Err() != nil {
				return 130 // interrupted
			}
			return 1
		}
		fmt.Printf("OK vsock boot_id=%s uptime=%s\n", res.BootID, res.Uptime.Round(time.Millisecond))
		return 0
	default:
		fs.Usage()
		return 2
	}
}

// serve runs the agent until a signal. As PID 1 it also mounts /tmp and
// /run, applies the hostname and network from the kernel command line
// (guest.ConfigureBoot), reaps orphans, reboots or powers off on the signals of busybox's
// reboot, poweroff and halt (guest.InitSignals), and powers the machine off
// if the agent ever stops.
func serve(ctx context.Context, log *slog.Logger, opts guest.ServeOptions) int {
	agentOpts := guest.AgentOptions{Version: agentVersion(), Logger: log}
	pid1 := os.Getpid() == 1
	if pid1 {
		reaper, err := guest.StartInitServices(context.Background(), log)
		if err != nil {
			log.Error("init services", "err", err)
		}
		// The hostname and network the host passed on the kernel command
		// line, in place before the agent answers its first ping (which
		// tells the host the boot is done). A failure is logged and
		// reported in ping, never fatal.
		_, agentOpts.BootConfigError = guest.ConfigureBoot(log, "")
		agentOpts.Runner = &guest.ProcessRunner{Reaper: reaper}
		agentOpts.Power = guest.InitPower(log)
		// A root shell on the serial console, for superjolt vm console.
		go guest.RunConsoleShell(ctx, log, reaper, "/dev/ttyS0")
	}
	agent := guest.NewAgent(agentOpts)
	if pid1 {
		// busybox's reboot and poweroff signal PID 1: act on them as its
		// init would, thawing first what the host froze.
		go guest.HandleInitSignals(ctx, log, agent.ThawAll)
	}
	log.Info("superjolt-agent serving", "version", agentOpts.Version, "pid1", pid1)
	err := agent.ServeTransports(ctx, opts)
	agent.ThawAll()
	if pid1 {
		// PID 1 must never exit: the kernel would panic.
		log.Error("agent stopped as PID 1; powering off", "err", err)
		haltAsInit(log)
	}
	if err != nil {
		log.Error("agent stopped", "err", err)
		return 1
	}
	return 0
}

// runInit runs the initramfs stage; it returns only on failure, and then
// powers off if it is PID 1 so the host sees the VM end.
func runInit() int {
	log := guest.ConsoleLogger(slog.LevelInfo)
	slog.SetDefault(log)
	err := guest.Init(guest.InitOptions{Logger: log})
	log.Error("superjolt init failed", "err", err)
	if os.Getpid() == 1 {
		haltAsInit(log)
	}
	return 1
}

func haltAsInit(log *slog.Logger) {
	after, err := guest.InitPower(log)(context.Background(), guest.PowerOff)
	if err == nil && after != nil {
		after()
	}
	// reboot(2) failed: nothing left to do but wait (select{} would be
	// reported as a deadlock, and PID 1 must not exit).
	for {
		time.Sleep(time.Hour)
	}
}
