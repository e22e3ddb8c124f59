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
	"strings"
	"syscall"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// defaultMemoryLimit is the Go heap's soft limit unless GOMEMLIMIT says
// otherwise. Badger's compactions leave large amounts of short-lived garbage:
// with the default GC a full compaction of a 10,000-VM store peaked at
// 113 MiB, with a 48 MiB limit at 59 MiB. The limit is soft: a heap that
// really needs more gets it, at the price of more GC work.
const defaultMemoryLimit = 64 << 20

func main() {
	// The commands of a VM's systemd unit (see unitcmds.go).
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "exec-vm":
			os.Exit(execVM(os.Args[2:]))
		case "stop-vm":
			os.Exit(stopVM(os.Args[2:]))
		case "follow-console":
			os.Exit(followConsole(os.Args[2:]))
		}
	}
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
	network   bool   // --network=on: a bridge, TAPs and the firewall
	bridge    string // --bridge
	dns       []netip.Addr
	// The domain proxy's listeners ("": off) and the operator's own
	// certificates (NAME.crt, NAME.key).
	httpListen, httpsListen, tlsCertDir string
	// The remote API (--listen, "": none): the names its certificate is
	// for, or the operator's certificate and key.
	listen      string
	listenNames []string
	// mcpReadOnly offers only the read tools at /mcp, whatever the token.
	mcpReadOnly     bool
	tlsCert, tlsKey string
	// ACME: the account's email ("": no ACME) and the CA's directory URL.
	acmeEmail, acmeCA string
	manual            bool   // --clock=manual
	supervisor        string // --supervisor: auto, systemd or self
	runDir            string
	agent             string
	logLevel          slog.Level
	historyWindow     time.Duration // --history-window
}

func parseFlags(args []string) (config, error) {
	var (
		cfg                     config
		poolSize, subnet, clock string
		logLevel, network, dns  string
		historyWindow           string
	)
	fs := flag.NewFlagSet("superjoltd", flag.ContinueOnError)
	fs.StringVar(&cfg.stateDir, "state-dir", "/var/lib/superjolt", "directory for the state store and, by default, the pool image")
	fs.StringVar(&cfg.pool, "pool", "", "an existing directory on a Btrfs filesystem to use as the pool (instead of a pool image)")
	fs.StringVar(&cfg.poolImage, "pool-image", "", "the loop-backed Btrfs pool image, made on first start (default <state-dir>/pool.img, mounted at <state-dir>/pool)")
	fs.StringVar(&poolSize, "pool-size", "20G", "size of a new pool image (sparse): 20G, 512M, 1T")
	fs.StringVar(&cfg.socket, "socket", api.DefaultSocket, "the local API's UNIX socket")
	fs.StringVar(&cfg.sockGroup, "socket-group", "", "group whose members may use the API socket (mode 0660); default: root's group only")
	fs.StringVar(&subnet, "subnet", appliance.DefaultSubnet, "the VMs' subnet; its first address is the bridge's (the VMs' gateway)")
	fs.StringVar(&network, "network", "on", "on: VMs get a NIC on the bridge, port forwards and NAT (nftables); off: addresses and forwards are only recorded")
	fs.StringVar(&cfg.bridge, "bridge", "sjbr0", "the bridge the VMs' TAPs join (made if missing)")
	fs.StringVar(&dns, "dns", "", "comma-separated name servers the guests are told to use (default: none)")
	fs.StringVar(&cfg.httpListen, "http-listen", ":80", "where the proxy for the VMs' domains serves HTTP ([HOST]:PORT, or off)")
	fs.StringVar(&cfg.httpsListen, "https-listen", ":443", "where the proxy for the VMs' domains serves HTTPS ([HOST]:PORT, or off)")
	fs.StringVar(&cfg.acmeEmail, "acme-email", "", "get domains' certificates from an ACME CA (Let's Encrypt) with this contact; needs the box reachable from the internet on ports 80 and 443")
	fs.StringVar(&cfg.acmeCA, "acme-ca", "", "the ACME CA's directory URL (default: Let's Encrypt's production CA)")
	fs.StringVar(&cfg.tlsCertDir, "tls-cert-dir", "", "the operator's certificates for domains (NAME.crt and NAME.key, PEM); others get one from the local CA (superjolt ca)")
	fs.StringVar(&cfg.listen, "listen", "", "serve the API to account tokens over TCP with TLS at [HOST]:PORT, like :8443 (default: only the UNIX socket)")
	fs.BoolVar(&cfg.mcpReadOnly, "mcp-read-only", false, "offer only the MCP tools that change nothing at /mcp on --listen (read-only tokens get only those anyway)")
	fs.Func("listen-name", "a DNS name the remote API is reached by, for its certificate from the local CA (repeatable; default: the hostname)", func(v string) error {
		if v == "" || strings.ContainsAny(v, " \t/:") {
			return fmt.Errorf("give a DNS name like appliance.example.com")
		}
		cfg.listenNames = append(cfg.listenNames, v)
		return nil
	})
	fs.StringVar(&cfg.tlsCert, "tls-cert", "", "the remote API's certificate (PEM, with its chain) instead of one from the local CA; goes with --tls-key")
	fs.StringVar(&cfg.tlsKey, "tls-key", "", "the key of --tls-cert (PEM)")
	fs.StringVar(&clock, "clock", "real", "real, or manual: time moves only with 'superjolt debug clock advance' (tests, demos)")
	fs.StringVar(&cfg.supervisor, "supervisor", supervisorAuto, "who runs the VMs' QEMU processes: systemd (a transient unit each, in superjolt.slice), self (superjoltd), or auto (systemd when it is PID 1)")
	fs.StringVar(&cfg.runDir, "run-dir", appliance.DefaultRunDir, "per-VM runtime directories (sockets, logs, pid files)")
	fs.StringVar(&cfg.agent, "agent", "", "the guest agent binary for the built-in image (default: superjolt-agent next to superjoltd, else built from the source tree)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&historyWindow, "history-window", api.Duration(model.DefaultHistoryWindow).String(), "how long events, finished operations and charges one by one are kept (older charges are folded into one ledger entry per VM and day): 30d, 90d, 36h; at least 1d")
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
	for _, l := range []*string{&cfg.httpListen, &cfg.httpsListen} {
		if *l == "off" {
			*l = ""
		}
	}
	if _, err := cfg.listenPorts(); err != nil {
		return cfg, err
	}
	if err := cfg.checkRemote(); err != nil {
		return cfg, err
	}
	if cfg.acmeEmail != "" && (!strings.Contains(cfg.acmeEmail, "@") || strings.ContainsAny(cfg.acmeEmail, " \t")) {
		return cfg, fmt.Errorf("--acme-email %q: give the email address the CA may write to about the certificates", cfg.acmeEmail)
	}
	if cfg.acmeCA != "" && !strings.HasPrefix(cfg.acmeCA, "https://") {
		return cfg, fmt.Errorf("--acme-ca %q: give the CA's https:// directory URL", cfg.acmeCA)
	}
	if cfg.acmeEmail == "" && cfg.acmeCA != "" {
		return cfg, fmt.Errorf("--acme-ca needs --acme-email")
	}
	switch network {
	case "on":
		cfg.network = true
	case "off":
	default:
		return cfg, fmt.Errorf("--network=%q: use on or off", network)
	}
	if cfg.bridge == "" || len(cfg.bridge) > 15 || strings.ContainsAny(cfg.bridge, "/ \t") {
		return cfg, fmt.Errorf("--bridge %q: give an interface name of 1-15 characters, like sjbr0", cfg.bridge)
	}
	for _, s := range strings.FieldsFunc(dns, func(r rune) bool { return r == ',' }) {
		a, err := netip.ParseAddr(strings.TrimSpace(s))
		if err != nil || !a.Is4() {
			return cfg, fmt.Errorf("--dns %q: give IPv4 addresses separated by commas, like 192.0.2.53", s)
		}
		cfg.dns = append(cfg.dns, a)
	}
	switch cfg.supervisor {
	case supervisorAuto, supervisorSystemd, supervisorSelf:
	default:
		return cfg, fmt.Errorf("--supervisor=%q: use auto, systemd or self", cfg.supervisor)
	}
	switch clock {
	case "real":
	case "manual":
		cfg.manual = true
	default:
		return cfg, fmt.Errorf("--clock=%q: use real or manual", clock)
	}
	w, err := api.ParseDuration(historyWindow)
	if err != nil {
		return cfg, fmt.Errorf("--history-window: %w", err)
	}
	if w < model.MinHistoryWindow || w > model.MaxHistoryWindow {
		return cfg, fmt.Errorf("--history-window %s: keep history at least %s and at most %s, like 30d", historyWindow,
			api.Duration(model.MinHistoryWindow), api.Duration(model.MaxHistoryWindow))
	}
	cfg.historyWindow = w
	if err := cfg.logLevel.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, fmt.Errorf("--log-level: %w", err)
	}
	return cfg, nil
}
