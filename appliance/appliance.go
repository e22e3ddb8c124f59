package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/clock"
)

// Defaults of [Options].
const (
	// DefaultRunDir holds one run directory per VM process.
	DefaultRunDir = "/run/superjolt/vm"
	// DefaultImage is the name of the built-in image, there from the first
	// start: the product's minimal image (busybox, the agent as init; see
	// package images). Pools from before it had this name hold the same
	// image as formerDefaultImage; New builds this one beside it.
	DefaultImage = "superjolt-busybox"
	// formerDefaultImage is what DefaultImage was called until the image
	// stopped being named after the tests that also boot it.
	formerDefaultImage = "superjolt-test"
	// DefaultBootTimeout bounds one boot, from launch to the agent's boot id.
	DefaultBootTimeout = 2 * time.Minute
)

// DefaultSubnet is where VM addresses come from unless Options.Subnet says
// otherwise (superjoltd's --subnet takes it as its default too).
const DefaultSubnet = "10.77.0.0/16"

// Time windows of the rules.
const (
	// GraveyardAge is the age from which a destroyed VM goes to the graveyard
	// rather than being reclaimed at once.
	GraveyardAge = time.Hour
	// RecoveryWindow is how long graveyard and archived VMs are kept. The
	// archive's does not slide: a VM archived again before it has been
	// back for a whole RecoveryWindow since its last resume keeps the
	// deadline of its first archival (retire.go).
	RecoveryWindow = 24 * time.Hour
	// BillingPeriod is how often live VMs are charged.
	BillingPeriod = 10 * time.Minute
	// FreezeDeadline is the deadline given to the agent for a freeze: it
	// thaws by itself then if the host never asks.
	FreezeDeadline = 30 * time.Second
)

// Options configure an [Appliance]. Nil or zero fields take the defaults
// named beside them.
type Options struct {
	// Store holds every object. Required. The Appliance does not close it.
	Store *store.Store
	// Pool holds images, VM disks and backups (a *btrfs.Pool). Required. The
	// Appliance does not close it.
	Pool Pool
	// Hypervisor runs VM processes. Default: [QEMU] with vmm's defaults.
	Hypervisor Hypervisor
	// Clock is the source of time. Default: clock.Real{}. With a
	// *clock.Manual, AdvanceClock is allowed.
	Clock clock.Clock
	// Subnet is where VM addresses come from; the first address after the
	// network address is the host's (the VMs' gateway) and is never given
	// to a VM. Default: DefaultSubnet.
	Subnet netip.Prefix
	// RunDir holds one directory per running VM (sockets, logs, pid file).
	// Default: DefaultRunDir.
	RunDir string
	// Logger receives structured logs with vm, backup, op fields. Default:
	// slog.Default().
	Logger *slog.Logger
	// BuiltinImage names the built-in image. Default: DefaultImage.
	BuiltinImage string
	// BuildImage, when set, fills a directory with the built-in image's files
	// (vmlinuz, initrd, rootfs.img); New calls it when the pool has no such
	// image yet. Nil: the image must already be in the pool.
	BuildImage func(ctx context.Context, dir string) error
	// Images makes distribution images on request (import, build; see
	// images.go). Nil: image import and build answer unavailable.
	Images ImageMaker
	// BootTimeout bounds a boot. Default: DefaultBootTimeout.
	BootTimeout time.Duration
	// CrashLimit, CrashWindow and CrashBackoff are the crash policy (see
	// crashes.go). Defaults: DefaultCrashLimit, DefaultCrashWindow,
	// DefaultCrashBackoff.
	CrashLimit   int
	CrashWindow  time.Duration
	CrashBackoff time.Duration
	// HostMemoryMiB is the host's memory, which live VMs reserve (see
	// capacity.go). Default: MemTotal of /proc/meminfo.
	HostMemoryMiB int64
	// Network puts VMs on a network (a *HostNetwork: bridge, TAPs,
	// firewall; see network.go). Nil: VMs boot without a NIC, and their
	// addresses and forwards are only recorded.
	Network Network
	// DNS are the name servers guests are told to use (none: no DNS).
	DNS []netip.Addr
	// ReservedPorts are host ports superjoltd itself listens on (its
	// domain proxy's), which no forward may take.
	ReservedPorts []model.Port
	// HistoryWindow is how long events, finished operations and charges
	// one by one are kept (history.go). Default (0):
	// model.DefaultHistoryWindow; at least model.MinHistoryWindow.
	HistoryWindow time.Duration
}

// Appliance is the domain core. Its methods are safe for concurrent use.
type Appliance struct {
	store  *store.Store
	pool   Pool
	hv     Hypervisor
	clock  clock.Clock
	subnet netip.Prefix
	net    Network
	dns    []netip.Addr
	// reserved are host ports no forward may take (Options.ReservedPorts).
	reserved []model.Port
	// netMu serialises rebuilds of the firewall (syncNetwork) and guards
	// netVMs, the VMs the firewall last applied holds.
	netMu  sync.Mutex
	netVMs map[string]bool
	// routes maps each domain to its VM's address, for the reverse proxy
	// (Route); rebuilt with the firewall.
	routeMu sync.RWMutex
	routes  map[string]netip.AddrPort
	runDir  string
	log     *slog.Logger
	image   string
	images  ImageMaker
	bootMax time.Duration
	hostMiB int64

	// life is the context VM processes and background work live under; it
	// ends with Close.
	life context.Context
	stop context.CancelFunc
	wg   sync.WaitGroup

	// testHook, when set (tests), is called with "kind:step" at every step
	// of an operation, before the step is recorded: see CrashEnv, SlowEnv.
	testHook func(ctx context.Context, point string)

	mu       sync.Mutex
	machines map[string]*machine    // running VM processes by VM id
	consoles map[string]Attached    // who is attached to the serial console of a VM, by VM id
	locks    map[string]string      // VM id -> id of the operation holding it
	running  map[string]*op         // operations under way, by id
	closing  bool                   // no new operations: Close has begun
	halting  bool                   // VM processes are being shut down or let go of: no new boots
	crashes  map[string][]time.Time // recent crashes of each VM, on the host's clock (crashes.go)

	crashLimit   int
	crashWindow  time.Duration
	crashBackoff time.Duration
	opsWG        sync.WaitGroup // one per operation under way

	evMu   sync.Mutex
	evWake chan struct{} // closed and replaced whenever events are appended

	usageMu sync.Mutex
	samples map[int]cpuSample // the last usage sample of each VM process, by pid (usage.go)

	bgMu        sync.Mutex   // one background pass at a time
	advancing   atomic.Int32 // AdvanceClock calls in progress: Run leaves the work to them
	nextBilling time.Time    // when the next billing pass is due
	nextPurge   time.Time    // when set-aside orphans are next looked at

	historyWindow time.Duration // Options.HistoryWindow (history.go)
	nextHistory   time.Time     // when the history pass is next due
}

// machine is a running VM process and its supervisor.
type machine struct {
	m      Machine
	bootID string
	done   chan struct{} // closed when the supervisor returned
}

// New opens the appliance: it checks the options, seeds the default tiers
// and the built-in image when missing, finishes or rolls back the
// operations a crashed daemon left unfinished, takes over the VM processes
// an earlier daemon left running, and boots every VM that should be
// running and does not. Background work starts with Run.
func New(ctx context.Context, opts Options) (*Appliance, error) {
	if opts.Store == nil || opts.Pool == nil {
		return nil, fmt.Errorf("appliance: %w: Options.Store and Options.Pool are required", model.ErrInvalid)
	}
	a := &Appliance{
		store:        opts.Store,
		pool:         opts.Pool,
		hv:           opts.Hypervisor,
		clock:        opts.Clock,
		subnet:       opts.Subnet,
		net:          opts.Network,
		dns:          opts.DNS,
		reserved:     opts.ReservedPorts,
		runDir:       opts.RunDir,
		log:          opts.Logger,
		image:        opts.BuiltinImage,
		images:       opts.Images,
		bootMax:      opts.BootTimeout,
		machines:     map[string]*machine{},
		crashes:      map[string][]time.Time{},
		crashLimit:   opts.CrashLimit,
		crashWindow:  opts.CrashWindow,
		crashBackoff: opts.CrashBackoff,
		consoles:     map[string]Attached{},
		locks:        map[string]string{},
		samples:      map[int]cpuSample{},
		running:      map[string]*op{},
		evWake:       make(chan struct{}),
	}
	hw, err := checkHistoryWindow(opts.HistoryWindow)
	if err != nil {
		return nil, err
	}
	a.historyWindow = hw
	if a.clock == nil {
		a.clock = clock.Real{}
	}
	if a.log == nil {
		a.log = slog.Default()
	}
	if a.hv == nil {
		a.hv = &QEMU{Logger: a.log}
	}
	if !a.subnet.IsValid() {
		a.subnet = netip.MustParsePrefix(DefaultSubnet)
	}
	a.subnet = a.subnet.Masked()
	if !a.subnet.Addr().Is4() || a.subnet.Bits() > 30 {
		return nil, fmt.Errorf("appliance: %w: subnet %s: use an IPv4 prefix of /30 or larger, like %s", model.ErrInvalid, a.subnet, DefaultSubnet)
	}
	if a.runDir == "" {
		a.runDir = DefaultRunDir
	}
	if a.image == "" {
		a.image = DefaultImage
	}
	if a.bootMax <= 0 {
		a.bootMax = DefaultBootTimeout
	}
	if a.crashLimit <= 0 {
		a.crashLimit = DefaultCrashLimit
	}
	if a.crashWindow <= 0 {
		a.crashWindow = DefaultCrashWindow
	}
	if a.crashBackoff <= 0 {
		a.crashBackoff = DefaultCrashBackoff
	}
	if a.hostMiB = opts.HostMemoryMiB; a.hostMiB <= 0 {
		mib, err := hostMemoryMiB()
		if err != nil {
			return nil, fmt.Errorf("appliance: the host's memory: %w", err)
		}
		a.hostMiB = mib
	}
	a.testHook = envTestHook()
	a.life, a.stop = context.WithCancel(context.WithoutCancel(ctx))
	if err := os.MkdirAll(a.runDir, 0o700); err != nil {
		return nil, fmt.Errorf("appliance: run directory: %w", err)
	}
	if err := a.seed(ctx, opts.BuildImage); err != nil {
		a.stop()
		return nil, err
	}
	if err := a.recover(ctx); err != nil {
		a.stop()
		return nil, err
	}
	if err := a.setupNetwork(ctx); err != nil {
		a.stop()
		return nil, err
	}
	a.nextBilling = a.clock.Now().Add(BillingPeriod)
	a.bootWanted(ctx)
	return a, nil
}

// seed puts the default tiers and the image rows in the store when missing,
// making the built-in image in the pool first when BuildImage is given. Only
// the built-in image's row says builtin: an image that was built-in under its
// former name stays, with its VMs, as an ordinary image. Without BuildImage, a
// pool that has only the former name keeps it as its built-in image.
func (a *Appliance) seed(ctx context.Context, build func(context.Context, string) error) error {
	names, err := a.pool.Images(ctx)
	if err != nil {
		return fmt.Errorf("appliance: list images: %w", err)
	}
	have := map[string]bool{}
	for _, n := range names {
		have[n] = true
	}
	if !have[a.image] && build == nil && a.image == DefaultImage && have[formerDefaultImage] {
		a.log.Warn("the built-in image cannot be built: keeping the one under its former name",
			"image", formerDefaultImage, "want", DefaultImage)
		a.image = formerDefaultImage
	}
	if !have[a.image] && build != nil {
		a.log.Info("building the built-in image", "image", a.image)
		if err := a.pool.CreateImage(ctx, a.image, func(dir string) error { return build(ctx, dir) }); err != nil {
			return a.noSpaceOr(ctx, err, "build the built-in image "+a.image,
				fmt.Errorf("appliance: build the built-in image %s: %w", a.image, err))
		}
		have[a.image] = true
		names = append(names, a.image)
	}
	sizes := map[string]int64{}
	for _, n := range names {
		if p, err := a.pool.ImagePath(n); err == nil {
			if u, err := a.pool.Usage(ctx, p); err == nil {
				sizes[n] = u.Referenced
			}
		}
	}
	now := a.clock.Now()
	return a.update(ctx, func(tx *store.Tx) error {
		tiers, err := tx.Tiers()
		if err != nil {
			return err
		}
		if len(tiers) == 0 {
			for _, t := range model.DefaultTiers() {
				if err := tx.PutTier(t); err != nil {
					return err
				}
			}
		}
		for _, n := range names {
			if model.ValidateImageName(n) != nil {
				continue
			}
			if im, err := tx.Image(n); err == nil {
				if im.Builtin == (n == a.image) {
					continue
				}
				im.Builtin = n == a.image
				if err := tx.PutImage(im); err != nil {
					return err
				}
				continue
			} else if !errors.Is(err, model.ErrNotFound) {
				return err
			}
			if err := tx.PutImage(model.Image{Name: n, Builtin: n == a.image, SizeBytes: sizes[n], CreatedAt: now}); err != nil {
				return err
			}
		}
		return nil
	})
}

// Clock returns the appliance's clock.
func (a *Appliance) Clock() clock.Clock { return a.clock }

// CloseGrace is how long Close lets operations under way finish before it
// lets go of the VMs; an operation cut short is finished or rolled back by
// the next start.
const CloseGrace = 2 * time.Minute

// Close refuses new operations, lets those under way finish (up to
// CloseGrace), lets go of every VM process without touching it, and stops
// background work. The VMs go on running: the next New takes them over
// (restarting or upgrading the daemon reboots no guest). It does not close
// the store or the pool; a caller that unmounts the pool must not while
// VMs run on it (see LeftRunning).
func (a *Appliance) Close() error {
	if !a.beginClose() {
		return nil
	}
	a.mu.Lock()
	a.halting = true
	ms := maps.Clone(a.machines)
	a.mu.Unlock()
	for _, m := range ms {
		m.m.Detach()
	}
	a.stop()
	a.wg.Wait()
	return nil
}

// LeftRunning returns the ids of the VMs whose processes run from the
// appliance's run directory: after Close, those it let go of.
func (a *Appliance) LeftRunning() []string { return a.hv.Leftovers(a.runDir) }

// beginClose refuses new operations and waits (up to CloseGrace) for
// those under way; false when Close has begun already.
func (a *Appliance) beginClose() bool {
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return false
	}
	a.closing = true
	a.mu.Unlock()
	gctx, cancel := context.WithTimeout(context.Background(), CloseGrace)
	defer cancel()
	if err := a.waitOps(gctx); err != nil {
		a.log.Warn("operations still under way at shutdown; the next start finishes or rolls them back", "grace", CloseGrace)
	}
	return true
}

// CloseAndHalt is Close for when the VMs must not outlive the appliance
// (tests, a daemon told to stop its guests): every VM process is shut down
// cleanly instead of let go of. The VMs keep their state (running, wanted
// running), so the next New boots them again.
func (a *Appliance) CloseAndHalt() error {
	if !a.beginClose() {
		return nil
	}
	a.mu.Lock()
	a.halting = true
	ms := maps.Clone(a.machines)
	a.mu.Unlock()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for id, m := range ms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if err := m.m.Shutdown(ctx); err != nil {
				a.log.Warn("VM did not shut down cleanly; killing it", "vm", id, "err", err)
				if err := m.m.Kill(); err != nil {
					mu.Lock()
					errs = append(errs, fmt.Errorf("%s: %w", id, err))
					mu.Unlock()
				}
			}
			<-m.done
		}()
	}
	wg.Wait()
	a.stop()
	a.wg.Wait()
	return errors.Join(errs...)
}

// update runs fn in a read-write transaction and wakes event waiters. fn may
// run more than once (the store retries on conflict): no side effects in it.
func (a *Appliance) update(ctx context.Context, fn func(tx *store.Tx) error) error {
	err := a.store.Update(ctx, fn)
	a.wakeEvents()
	return err
}

func (a *Appliance) view(ctx context.Context, fn func(tx *store.Tx) error) error {
	return a.store.View(ctx, fn)
}

func (a *Appliance) vmRunDir(id string) string { return filepath.Join(a.runDir, id) }

// event appends an event in tx.
func event(tx *store.Tx, at time.Time, typ, object, account, format string, args ...any) error {
	_, err := tx.AppendEvent(model.Event{At: at, Type: typ, Object: object, Account: account, Message: fmt.Sprintf(format, args...)})
	return err
}

// Errors with a category and what to do next.

func notFoundf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrNotFound, fmt.Sprintf(format, args...))
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, args...))
}

func conflictf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrConflict, fmt.Sprintf(format, args...))
}

func unavailablef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrUnavailable, fmt.Sprintf(format, args...))
}

func fundsf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInsufficientFunds, fmt.Sprintf(format, args...))
}

// categorised returns err unchanged when it already wraps a model category,
// as ErrNoSpace when the pool is full (see noSpaceError), and otherwise
// says what failed: an error without a category is an
// internal one (a bug, a broken disk), never "unavailable", which is kept
// for a daemon or guest agent that cannot be reached.
func categorised(err error, what string) error {
	if err == nil || model.HasCategory(err) {
		return err
	}
	if nse := (*btrfs.NoSpaceError)(nil); errors.As(err, &nse) {
		return noSpaceError(what, nse)
	}
	return fmt.Errorf("%s: %w", what, err)
}
