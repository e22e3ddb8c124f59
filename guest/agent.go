package guest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/superjolt/superjolt/clock"
)

// Freeze deadlines, for AgentOptions left at zero.
const (
	DefaultFreezeDeadline = 30 * time.Second
	MaxFreezeDeadline     = 10 * time.Minute
)

// DefaultWriteTimeout bounds writing one answer.
const DefaultWriteTimeout = 10 * time.Second

// DefaultMaxInFlight is how many requests of one connection the agent
// serves at once before it answers ErrBusy.
const DefaultMaxInFlight = 64

// Freezer freezes and thaws filesystems for the agent. FSFreezer is the
// real one; tests use fakes.
type Freezer interface {
	// Filesystems lists the mount points to freeze, in freeze order.
	Filesystems() ([]string, error)
	// Freeze freezes the filesystem mounted at mountpoint. An error
	// wrapping ErrNotFreezable makes the agent skip that filesystem.
	Freeze(mountpoint string) error
	// Thaw thaws it again.
	Thaw(mountpoint string) error
}

// ErrNotFreezable is wrapped by Freezer.Freeze for a filesystem that cannot
// be frozen (no FIFREEZE support, or frozen by someone else): the agent
// skips it rather than failing the whole freeze.
var ErrNotFreezable = errors.New("filesystem cannot be frozen")

// Runner runs exec requests. ProcessRunner is the real one.
type Runner interface {
	Run(ctx context.Context, req ExecRequest) (ExecResult, error)
}

// PowerAction is what shutdown and reboot ask for.
type PowerAction int

// The power actions.
const (
	PowerOff PowerAction = iota
	Restart
)

func (p PowerAction) String() string {
	if p == Restart {
		return "reboot"
	}
	return "poweroff"
}

// PowerFunc prepares a power action. It returns an error if the guest
// cannot do it, or what to run once the answer has been sent (nil when the
// action is already under way, e.g. handed to systemd).
type PowerFunc func(ctx context.Context, action PowerAction) (after func(), err error)

// AgentOptions configures an Agent. Zero fields take the defaults named.
type AgentOptions struct {
	// Version is reported by ping (default "dev").
	Version string
	// BootConfigError is reported by ping: why the boot configuration
	// from the host (see [ConfigureBoot]) did not fully apply; nil when it
	// did or there was none.
	BootConfigError error
	// Freezer freezes filesystems (default FSFreezer{}).
	Freezer Freezer
	// Runner runs exec requests (default &ProcessRunner{}).
	Runner Runner
	// Power carries out shutdown and reboot (default DefaultPower: as PID 1
	// InitPower, otherwise the guest's poweroff/reboot commands).
	Power PowerFunc
	// Sync flushes all filesystems before a freeze (default unix.Sync).
	Sync func()
	// Clock times the automatic thaw (default clock.Real{}).
	Clock clock.Clock
	// Logger (default slog.Default()).
	Logger *slog.Logger
	// ProcDir is where proc is mounted (default "/proc").
	ProcDir string
	// DefaultFreezeDeadline applies when a freeze asks for none; a longer
	// one than MaxFreezeDeadline is cut to it.
	DefaultFreezeDeadline, MaxFreezeDeadline time.Duration
	// MaxInFlight bounds the requests served at once per connection
	// (default DefaultMaxInFlight).
	MaxInFlight int
	// WriteTimeout bounds writing one answer on streams with deadlines;
	// a host that stops reading loses its session (default
	// DefaultWriteTimeout).
	WriteTimeout time.Duration
}

// Agent serves the protocol. One Agent serves any number of connections;
// the frozen state is shared by all of them.
type Agent struct {
	opts AgentOptions
	log  *slog.Logger

	// Where ServeSerial looks for its port, and how often; tests point
	// them at fakes.
	portsDir, devDir string
	portRetry        time.Duration

	fmu      sync.Mutex // held for a whole freeze or thaw
	frozen   []string   // mount points frozen by us, in freeze order; nil when thawed
	gen      uint64     // counts freezes, so a stale auto-thaw does nothing
	autoThaw clock.Timer
}

// NewAgent returns an agent with opts, defaults filled in.
func NewAgent(opts AgentOptions) *Agent {
	if opts.Version == "" {
		opts.Version = "dev"
	}
	if opts.Freezer == nil {
		opts.Freezer = FSFreezer{}
	}
	if opts.Runner == nil {
		opts.Runner = &ProcessRunner{}
	}
	if opts.Power == nil {
		opts.Power = DefaultPower
	}
	if opts.Sync == nil {
		opts.Sync = syncAll
	}
	if opts.Clock == nil {
		opts.Clock = clock.Real{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.ProcDir == "" {
		opts.ProcDir = "/proc"
	}
	if opts.DefaultFreezeDeadline <= 0 {
		opts.DefaultFreezeDeadline = DefaultFreezeDeadline
	}
	if opts.MaxFreezeDeadline <= 0 {
		opts.MaxFreezeDeadline = MaxFreezeDeadline
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	return &Agent{opts: opts, log: opts.Logger, portsDir: VirtioPortsDir, devDir: DevDir, portRetry: time.Second}
}

// Serve accepts connections on ln and serves each with ServeConn until ctx
// is done (then it closes ln and returns nil) or Accept fails.
func (a *Agent) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { _ = ln.Close() })
	defer stop()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("guest: accept on %s: %w", ln.Addr(), err)
		}
		go func() {
			if err := a.ServeConn(ctx, conn); err != nil {
				a.log.Debug("agent connection ended", "remote", conn.RemoteAddr(), "err", err)
			}
		}()
	}
}

// serverConn is the writing side of one served stream.
type serverConn struct {
	mu      sync.Mutex // one answer at a time
	w       io.Writer
	timeout time.Duration
	closed  atomic.Bool // set without mu: a writer may hold mu, blocked
	end     func()      // ends the session
	log     *slog.Logger
	execs   execTable // streaming execs (stream.go)
}

// send writes one response line whole, within the write timeout when the
// stream has deadlines. After the session ended it drops the answer. A
// failed write may have left half a line behind, so it ends the session.
func (sc *serverConn) send(resp Response) {
	line, err := encodeLine(resp)
	if err != nil {
		line, _ = encodeLine(errorResponse(resp.ID, fmt.Errorf("%w: encode answer: %v", ErrInternal, err)))
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed.Load() {
		sc.log.Debug("answer after the connection ended; dropped", "id", resp.ID)
		return
	}
	if d, ok := sc.w.(interface{ SetWriteDeadline(time.Time) error }); ok {
		_ = d.SetWriteDeadline(time.Now().Add(sc.timeout))
	}
	if _, err := sc.w.Write(line); err != nil {
		sc.log.Info("cannot write answer; ending the session", "id", resp.ID, "err", err)
		sc.end()
	}
}

// ServeConn serves the requests of one stream, each in its own goroutine,
// until the stream ends (io.EOF gives nil) or ctx is done. If rw is an
// io.Closer, ServeConn closes it when it returns. Requests still running
// then are cancelled, and their answers dropped.
func (a *Agent) ServeConn(ctx context.Context, rw io.ReadWriter) error {
	ctx, cancel := context.WithCancel(ctx)
	sc := &serverConn{w: rw, timeout: a.opts.WriteTimeout, end: cancel, log: a.log}
	// Ending the session marks it closed first (so that no new answer
	// starts), then closes the stream, which unblocks an answer stuck in
	// Write: a virtio-serial write blocks while no host is connected.
	end := func() {
		sc.closed.Store(true)
		if cl, ok := rw.(io.Closer); ok {
			_ = cl.Close()
		}
	}
	stop := context.AfterFunc(ctx, end)
	defer func() {
		stop()
		cancel()
		end()
	}()

	sem := make(chan struct{}, a.opts.MaxInFlight)
	br := bufio.NewReaderSize(rw, 64<<10)
	for {
		line, err := readLine(br, MaxRequestSize)
		if errors.Is(err, errLineTooLong) {
			a.log.Warn("request line too long; answered and skipped", "limit", MaxRequestSize)
			sc.send(errorResponse(0, fmt.Errorf("%w: request line longer than %d bytes", ErrProtocol, MaxRequestSize)))
			continue
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("guest: read request: %w", err)
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		req, id, err := DecodeRequest(line)
		if err != nil {
			a.log.Warn("bad request", "id", id, "err", err)
			sc.send(errorResponse(id, err))
			continue
		}
		// Thaw never waits for a slot: the requests holding them all may
		// be stuck on the frozen filesystems it is about to thaw.
		slot := req.Op != OpThaw && !isExecControl(req.Op)
		if slot {
			select {
			case sem <- struct{}{}:
			default:
				sc.send(errorResponse(req.ID, fmt.Errorf("%w: %d requests in flight", ErrBusy, a.opts.MaxInFlight)))
				continue
			}
		}
		if req.Op == OpExecStart || isExecControl(req.Op) {
			go func() { a.execStream(ctx, sc, req); release(slot, sem) }()
			continue
		}
		go func() {
			resp, after := a.handle(ctx, req)
			if slot {
				<-sem // before the answer, so the caller's next request finds the slot free
			}
			sc.send(resp)
			if after != nil {
				after()
			}
		}()
	}
}

// handle runs one request and returns its answer, and what to do after the
// answer went out.
func (a *Agent) handle(ctx context.Context, req Request) (Response, func()) {
	log := a.log.With("op", req.Op, "id", req.ID)
	start := time.Now()
	var (
		resp  Response
		after func()
		err   error
	)
	switch req.Op {
	case OpPing:
		resp, err = a.ping()
	case OpFreeze:
		resp.Filesystems, resp.Skipped, err = a.freeze(durationMS(req.DeadlineMS))
	case OpThaw:
		err = a.thaw("host")
	case OpExec:
		resp, err = a.exec(ctx, req)
	case OpShutdown:
		after, err = a.power(ctx, PowerOff)
	case OpReboot:
		after, err = a.power(ctx, Restart)
	default:
		err = fmt.Errorf("%w %q", ErrUnknownOp, req.Op)
	}
	if err != nil {
		log.Warn("request failed", "err", err)
		return errorResponse(req.ID, err), nil
	}
	if req.Op != OpPing {
		log.Info("request done", "took", time.Since(start).Round(time.Microsecond))
	}
	resp.V, resp.ID, resp.OK = ProtocolVersion, req.ID, true
	return resp, after
}

func (a *Agent) ping() (Response, error) {
	b, err := os.ReadFile(filepath.Join(a.opts.ProcDir, "sys/kernel/random/boot_id"))
	if err != nil {
		return Response{}, fmt.Errorf("%w: read boot id: %v", ErrInternal, err)
	}
	up, err := readUptime(filepath.Join(a.opts.ProcDir, "uptime"))
	if err != nil {
		return Response{}, fmt.Errorf("%w: %v", ErrInternal, err)
	}
	resp := Response{
		BootID:          strings.TrimSpace(string(b)),
		UptimeNS:        int64(up),
		AgentVersion:    a.opts.Version,
		ProtocolVersion: ProtocolVersion,
	}
	resp.Hostname, _ = os.Hostname()
	for _, p := range interfaceAddrs() {
		resp.Addresses = append(resp.Addresses, p.String())
	}
	if a.opts.BootConfigError != nil {
		resp.BootConfigError = a.opts.BootConfigError.Error()
	}
	return resp, nil
}

// readUptime reads the first field of /proc/uptime ("12.34 5.67").
func readUptime(path string) (time.Duration, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read uptime: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, fmt.Errorf("read uptime: %s is empty", path)
	}
	secs, err := strconv.ParseFloat(f[0], 64)
	if err != nil || secs < 0 {
		return 0, fmt.Errorf("read uptime: bad value %q in %s", f[0], path)
	}
	return time.Duration(secs * float64(time.Second)), nil
}

// freeze syncs, then freezes every filesystem the Freezer lists, and arms
// the automatic thaw. It returns what it froze, and what it skipped (a
// filesystem that cannot be frozen, with the reason).
func (a *Agent) freeze(deadline time.Duration) (frozen, skipped []string, err error) {
	if deadline <= 0 {
		deadline = a.opts.DefaultFreezeDeadline
	}
	if deadline > a.opts.MaxFreezeDeadline {
		deadline = a.opts.MaxFreezeDeadline
	}
	// Everything is logged after the lock is released: a log write that
	// blocks on the frozen filesystems (journald writes to them) must
	// never hold up a thaw.
	var notes []error
	var began, done time.Time
	frozen, skipped, err = a.freezeLocked(deadline, &notes, &began, &done)
	for _, n := range notes {
		a.log.Info("freeze", "note", n)
	}
	if err == nil {
		// The times are the guest's wall clock, so that what ran in the
		// guest can be placed before, during or after the freeze.
		a.log.Info("froze filesystems", "filesystems", frozen, "skipped", skipped, "deadline", deadline,
			"began_unix_us", began.UnixMicro(), "frozen_unix_us", done.UnixMicro())
	}
	return frozen, skipped, err
}

// freezeLocked does the freeze under the lock; notes collects what is
// worth logging once the lock is released, began and done when the first
// filesystem started to freeze and the last one was frozen.
func (a *Agent) freezeLocked(deadline time.Duration, notes *[]error, began, done *time.Time) ([]string, []string, error) {
	if frozen := a.Frozen(); frozen != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrFrozen, strings.Join(frozen, ", "))
	}
	// The sync that does the bulk of the flushing runs outside the lock:
	// it can take long, and a thaw (which then finds nothing frozen) must
	// not wait for it.
	a.opts.Sync()
	a.fmu.Lock()
	defer a.fmu.Unlock()
	if a.frozen != nil {
		return nil, nil, fmt.Errorf("%w: %s", ErrFrozen, strings.Join(a.frozen, ", "))
	}
	mps, err := a.opts.Freezer.Filesystems()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: list filesystems: %v", ErrInternal, err)
	}
	frozen, skipped := []string{}, []string(nil)
	*began = time.Now()
	for _, mp := range mps {
		err := a.opts.Freezer.Freeze(mp)
		if errors.Is(err, ErrNotFreezable) {
			*notes = append(*notes, fmt.Errorf("skipped %s: %w", mp, err))
			skipped = append(skipped, mp+": "+err.Error())
			continue
		}
		if err != nil {
			for i := len(frozen) - 1; i >= 0; i-- {
				if terr := a.opts.Freezer.Thaw(frozen[i]); terr != nil {
					*notes = append(*notes, fmt.Errorf("thaw %s after the failed freeze: %w", frozen[i], terr))
				}
			}
			return nil, nil, fmt.Errorf("%w: freeze %s: %v", ErrInternal, mp, err)
		}
		frozen = append(frozen, mp)
	}
	*done = time.Now()
	a.frozen = frozen
	a.gen++
	gen := a.gen
	a.autoThaw = a.opts.Clock.AfterFunc(deadline, func() { a.deadlineThaw(gen, deadline) })
	return frozen, skipped, nil
}

// deadlineThaw thaws the freeze numbered gen if it is still in place.
func (a *Agent) deadlineThaw(gen uint64, deadline time.Duration) {
	if a.thawIf(gen, "deadline") {
		a.log.Warn("the host did not thaw before the freeze deadline; thawed", "deadline", deadline)
	}
}

// thaw thaws what freeze froze, in reverse order.
func (a *Agent) thaw(by string) error {
	a.fmu.Lock()
	defer a.fmu.Unlock()
	if a.frozen == nil {
		return ErrNotFrozen
	}
	return a.thawLocked(by)
}

// thawIf thaws the freeze numbered gen if it is still in place, and
// reports whether it was.
func (a *Agent) thawIf(gen uint64, by string) bool {
	a.fmu.Lock()
	if a.gen != gen || a.frozen == nil {
		a.fmu.Unlock()
		return false
	}
	err := a.thawLocked(by)
	a.fmu.Unlock()
	if err != nil {
		a.log.Error("thaw", "by", by, "err", err)
	}
	return true
}

func (a *Agent) thawLocked(by string) error {
	if a.autoThaw != nil {
		a.autoThaw.Stop()
		a.autoThaw = nil
	}
	var errs []error
	for i := len(a.frozen) - 1; i >= 0; i-- {
		if err := a.opts.Freezer.Thaw(a.frozen[i]); err != nil {
			errs = append(errs, fmt.Errorf("thaw %s: %w", a.frozen[i], err))
		}
	}
	a.log.Info("thawed filesystems", "filesystems", a.frozen, "by", by, "thawed_unix_us", time.Now().UnixMicro())
	a.frozen = nil
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %v", ErrInternal, err)
	}
	return nil
}

// ThawAll thaws anything frozen, for an agent about to stop: filesystems
// must never stay frozen without an agent to thaw them.
func (a *Agent) ThawAll() {
	a.fmu.Lock()
	defer a.fmu.Unlock()
	if a.frozen == nil {
		return
	}
	if err := a.thawLocked("agent stop"); err != nil {
		a.log.Error("thaw at stop", "err", err)
	}
}

// Frozen returns the mount points frozen now, nil when thawed.
func (a *Agent) Frozen() []string {
	a.fmu.Lock()
	defer a.fmu.Unlock()
	if a.frozen == nil {
		return nil
	}
	return append([]string{}, a.frozen...)
}

func (a *Agent) exec(ctx context.Context, req Request) (Response, error) {
	if req.Path == "" {
		return Response{}, fmt.Errorf("%w: exec needs a path", ErrProtocol)
	}
	res, err := a.opts.Runner.Run(ctx, ExecRequest{
		Path:    req.Path,
		Args:    req.Args,
		Stdin:   req.Stdin,
		Timeout: durationMS(req.TimeoutMS),
	})
	if err != nil {
		return Response{}, err
	}
	return Response{
		ExitCode:  res.ExitCode,
		Signal:    res.Signal,
		Stdout:    res.Stdout,
		Stderr:    res.Stderr,
		Truncated: res.Truncated,
		TimedOut:  res.TimedOut,
	}, nil
}

// power thaws whatever is frozen (a frozen root would hang the shutdown),
// then prepares the action.
func (a *Agent) power(ctx context.Context, action PowerAction) (func(), error) {
	a.fmu.Lock()
	if a.frozen != nil {
		if err := a.thawLocked(action.String()); err != nil {
			a.log.Error("thaw before "+action.String(), "err", err)
		}
	}
	a.fmu.Unlock()
	a.log.Info("power action requested", "action", action.String())
	return a.opts.Power(ctx, action)
}
