package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"syscall"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
)

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT says
// otherwise. Badger's compactions leave large amounts of short-lived garbage:
// with the default GC a full compaction of a 10,000-VM store peaked at
// 113 MiB, with a 48 MiB limit at 59 MiB. The limit is soft: a heap that
// really needs more gets it, at the price of more GC work.
const defaultMemoryLimit = 64 << 20

func main() {
	cfg, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "superjoltd: %v\nRun 'superjoltd --help' for usage.\n", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	slog.SetDefault(log)
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped by a signal while starting: a clean stop.
			log.Info("superjoltd stopped while starting")
			return
		}
		log.Error("superjoltd stopped with an error", "err", err)
		stop()
		os.Exit(1)
	}
	log.Info("superjoltd stopped")
}

// config is what the flags say.
type config struct {
	stateDir  string
	pool      string // an existing Btrfs directory; "" for the image
	poolImage string
	poolSize  int64
	socket    string
	sockGroup string // group owning the socket ("" leaves it root's)
	subnet    netip.Prefix
	manual    bool // --clock=manual
	runDir    string
	agent     string
	logLevel  slog.Level
}

func parseFlags(args []string) (config, error) {
	var (
		cfg                     config
		poolSize, subnet, clock string
		logLevel                string
	)
	fs := flag.NewFlagSet("superjoltd", flag.ContinueOnError)
	fs.StringVar(&cfg.stateDir, "state-dir", "/var/lib/superjolt", "directory for the state store and, by default, the pool image")
	fs.StringVar(&cfg.pool, "pool", "", "an existing directory on a Btrfs filesystem to use as the pool (instead of a pool image)")
	fs.StringVar(&cfg.poolImage, "pool-image", "", "the loop-backed Btrfs pool image, made on first start (default <state-dir>/pool.img, mounted at <state-dir>/pool)")
	fs.StringVar(&poolSize, "pool-size", "20G", "size of a new pool image (sparse): 20G, 512M, 1T")
	fs.StringVar(&cfg.socket, "socket", api.DefaultSocket, "the local API's UNIX socket")
	fs.StringVar(&cfg.sockGroup, "socket-group", "", "group whose members may use the API socket (mode 0660); default: root's group only")
	fs.StringVar(&subnet, "subnet", appliance.DefaultSubnet, "where VM addresses come from (an address attribute only: no traffic is routed yet)")
	fs.StringVar(&clock, "clock", "real", "real, or manual: time moves only with 'superjolt debug clock advance' (tests, demos)")
	fs.StringVar(&cfg.runDir, "run-dir", appliance.DefaultRunDir, "per-VM runtime directories (sockets, logs, pid files)")
	fs.StringVar(&cfg.agent, "agent", "", "the guest agent binary for the built-in image (default: superjolt-agent next to superjoltd, else built from the source tree)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: superjoltd [flags]\n\nThe superjolt appliance daemon. Exit codes: 0 clean stop, 1 failure, 2 bad flags.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.pool != "" && (set["pool-image"] || set["pool-size"]) {
		return cfg, errors.New("--pool uses an existing Btrfs directory; it does not go with --pool-image or --pool-size")
	}
	if cfg.poolImage == "" {
		cfg.poolImage = filepath.Join(cfg.stateDir, "pool.img")
	}
	n, err := parseSize(poolSize)
	if err != nil {
		return cfg, fmt.Errorf("--pool-size: %w", err)
	}
	cfg.poolSize = n
	if cfg.subnet, err = netip.ParsePrefix(subnet); err != nil || !cfg.subnet.Addr().Is4() {
		return cfg, fmt.Errorf("--subnet %q: give an IPv4 prefix like %s", subnet, appliance.DefaultSubnet)
	}
	switch clock {
	case "real":
	case "manual":
		cfg.manual = true
	default:
		return cfg, fmt.Errorf("--clock=%q: use real or manual", clock)
	}
	if err := cfg.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	return cfg, nil
}
