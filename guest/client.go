package guest

import (
	"bufio"
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mdlayher/vsock"
)

// DefaultTimeout bounds a call or a dial whose context has no deadline.
const DefaultTimeout = 10 * time.Second

// DefaultExecTimeout is the exec time limit when ExecRequest.Timeout is 0.
const DefaultExecTimeout = 60 * time.Second

// PingResult is the answer to a ping.
type PingResult struct {
	// BootID is /proc/sys/kernel/random/boot_id of the running guest; it
	// changes at every boot.
	BootID          string
	Uptime          time.Duration
	AgentVersion    string
	ProtocolVersion int
	// Hostname is the guest's hostname; "" from an agent older than this
	// field.
	Hostname string
	// Addresses are the IPv4 addresses, with their prefix length, of the
	// guest's interfaces other than loopback; empty when it has none (or
	// its agent is older than this field).
	Addresses []netip.Prefix
	// BootConfigError says why the guest could not fully apply the boot
	// configuration the host passed (hostname, network); "" when it did.
	BootConfigError string
}

// FreezeResult lists the mount points the agent froze, in freeze order.
type FreezeResult struct {
	Filesystems []string
	// Skipped are writable filesystems that cannot be frozen, each with
	// the reason ("/mnt/x: ...").
	Skipped []string
}

// ExecRequest is a program to run in the guest.
type ExecRequest struct {
	// Path is the program: absolute, or looked up in the agent's PATH.
	Path string
	// Args are the arguments after the program name.
	Args []string
	// Stdin is written to the program's standard input, then closed.
	Stdin []byte
	// Timeout kills the program (and its process group) after this long;
	// 0 means DefaultExecTimeout, or no limit for a TTY exec.
	Timeout time.Duration
	// TTY (ExecStream only) runs the program on a new pseudo-terminal of
	// Size, with TERM=Term ("" is xterm); its output all comes as stdout.
	TTY  bool
	Term string
	Size WindowSize
}

// WindowSize is a terminal's size in characters.
type WindowSize struct {
	Rows, Cols uint16
}

// ExecResult is how an exec ended.
type ExecResult struct {
	// ExitCode is the exit status, or -1 when a signal ended the program.
	ExitCode int
	// Signal is the signal that ended the program, 0 if it exited.
	Signal int
	// Stdout and Stderr hold at most MaxExecOutput bytes each.
	Stdout, Stderr []byte
	// Truncated is set when either stream was longer than MaxExecOutput.
	Truncated bool
	// TimedOut is set when the agent killed the program at its Timeout.
	TimedOut bool
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithTimeout sets the bound of a call whose context has no deadline
// (default DefaultTimeout). An exec waits its own Timeout on top of it.
func WithTimeout(d time.Duration) ClientOption {
	return func(c *Client) {
		if d > 0 {
			c.timeout = d
		}
	}
}

// WithLogger sets the client's logger (default slog.Default()).
func WithLogger(l *slog.Logger) ClientOption {
	return func(c *Client) {
		if l != nil {
			c.log = l
		}
	}
}

// Client talks to one agent over one connection. It is safe for concurrent
// use: calls are multiplexed by request id, and each waits only for its own
// answer. When the connection breaks, every pending and later call fails
// with ErrClosed.
type Client struct {
	conn    net.Conn
	timeout time.Duration
	log     *slog.Logger

	wsem   chan struct{} // one writer at a time; a channel so waiting honours ctx
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]chan Response
	streams map[uint64]*clientExec // streaming execs by their exec_start id
	err     error                  // why the connection is dead; set once
	done    chan struct{}          // closed when err is set
}

var _ io.Closer = (*Client)(nil)

// NewClient starts a client on conn; the client owns conn from now on and
// closes it on Close or when it breaks.
func NewClient(conn net.Conn, opts ...ClientOption) *Client {
	c := &Client{
		conn:    conn,
		timeout: DefaultTimeout,
		log:     slog.Default(),
		wsem:    make(chan struct{}, 1),
		pending: make(map[uint64]chan Response),
		streams: make(map[uint64]*clientExec),
		done:    make(chan struct{}),
	}
	for _, o := range opts {
		o(c)
	}
	// Start ids at a random point: a late answer meant for an earlier
	// client on the same port (virtio-serial keeps no session) then cannot
	// match a request of this one.
	var b [4]byte
	_, _ = crand.Read(b[:])
	c.nextID.Store(uint64(binary.BigEndian.Uint32(b[:])) << 16)
	go c.readLoop()
	return c
}

// Close closes the connection; pending calls fail with ErrClosed.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	return nil
}

// Done is closed when the connection is dead; Err says why.
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns nil while the connection is usable, then why it is not.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail marks the connection dead with err, closes it and so wakes every
// pending call.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	if !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.err = err
	close(c.done)
	c.mu.Unlock()
	_ = c.conn.Close()
}

func (c *Client) readLoop() {
	br := bufio.NewReaderSize(c.conn, 64<<10)
	for {
		line, err := readLine(br, MaxResponseSize)
		if errors.Is(err, errLineTooLong) {
			c.log.Warn("guest agent sent an oversized line; dropped", "limit", MaxResponseSize)
			continue
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			c.fail(err)
			return
		}
		var resp Response
		if err := json.Unmarshal(line, &resp); err != nil {
			c.log.Warn("guest agent sent a malformed line; dropped", "err", err)
			continue
		}
		c.mu.Lock()
		if ce := c.streams[resp.ID]; ce != nil {
			c.mu.Unlock()
			ce.push(resp) // never blocks: the agent's window bounds the queue
			continue
		}
		ch, ok := c.pending[resp.ID]
		delete(c.pending, resp.ID)
		c.mu.Unlock()
		if !ok {
			c.log.Debug("guest agent answered an unknown or abandoned request", "id", resp.ID)
			continue
		}
		ch <- resp // buffered 1, written once
	}
}

// call sends req and waits for its answer, for at most ctx's deadline or,
// without one, c.timeout plus extra.
func (c *Client) call(ctx context.Context, req Request, extra time.Duration) (Response, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.timeout+extra)
		defer cancel()
	}
	req.V = ProtocolVersion
	req.ID = c.nextID.Add(1)
	line, err := encodeLine(req)
	if err != nil {
		return Response{}, fmt.Errorf("guest: %s: %w", req.Op, err)
	}
	if len(line) > MaxRequestSize {
		return Response{}, fmt.Errorf("guest: %s: %w: request is %d bytes, the limit is %d", req.Op, ErrProtocol, len(line), MaxRequestSize)
	}

	ch := make(chan Response, 1)
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return Response{}, fmt.Errorf("guest: %s: %w", req.Op, err)
	}
	c.pending[req.ID] = ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.pending, req.ID)
		c.mu.Unlock()
	}()

	if err := c.write(ctx, line); err != nil {
		return Response{}, fmt.Errorf("guest: %s: %w", req.Op, err)
	}

	select {
	case resp := <-ch:
		return answer(req.Op, resp)
	case <-c.done:
		// An answer that came just before the end (shutdown answers, then
		// the connection dies) still counts.
		select {
		case resp := <-ch:
			return answer(req.Op, resp)
		default:
		}
		return Response{}, fmt.Errorf("guest: %s: %w", req.Op, c.Err())
	case <-ctx.Done():
		return Response{}, fmt.Errorf("guest: %s: no answer from the agent: %w", req.Op, ctx.Err())
	}
}

// answer turns a response into the call's result.
func answer(op string, resp Response) (Response, error) {
	if resp.V != ProtocolVersion {
		return Response{}, fmt.Errorf("guest: %s: %w: answer has protocol version %d, want %d", op, ErrProtocol, resp.V, ProtocolVersion)
	}
	if !resp.OK {
		e := &AgentError{Op: op, Code: CodeInternal, Message: "failed without an error"}
		if resp.Error != nil {
			e.Code, e.Message = resp.Error.Code, resp.Error.Message
		}
		return Response{}, e
	}
	return resp, nil
}

// write sends one line. A write that fails or times out may have left half
// a line on the stream, so it kills the connection.
func (c *Client) write(ctx context.Context, line []byte) error {
	select {
	case c.wsem <- struct{}{}:
	case <-c.done:
		return c.Err()
	case <-ctx.Done():
		return fmt.Errorf("waiting to send: %w", ctx.Err())
	}
	defer func() { <-c.wsem }()
	dl, _ := ctx.Deadline()
	_ = c.conn.SetWriteDeadline(dl)
	if _, err := c.conn.Write(line); err != nil {
		c.fail(fmt.Errorf("write: %w", err))
		if ctx.Err() != nil {
			return fmt.Errorf("sending: %w", ctx.Err())
		}
		if errors.Is(err, os.ErrDeadlineExceeded) {
			// The write deadline is the ctx deadline, on another timer.
			return fmt.Errorf("sending: %w", context.DeadlineExceeded)
		}
		return c.Err()
	}
	return nil
}

// Ping asks for the boot id, uptime and versions.
func (c *Client) Ping(ctx context.Context) (PingResult, error) {
	resp, err := c.call(ctx, Request{Op: OpPing}, 0)
	if err != nil {
		return PingResult{}, err
	}
	res := PingResult{
		BootID:          resp.BootID,
		Uptime:          time.Duration(resp.UptimeNS),
		AgentVersion:    resp.AgentVersion,
		ProtocolVersion: resp.ProtocolVersion,
		Hostname:        resp.Hostname,
		BootConfigError: resp.BootConfigError,
	}
	for _, a := range resp.Addresses {
		p, err := netip.ParsePrefix(a)
		if err != nil {
			return PingResult{}, fmt.Errorf("%w: ping: bad address %q", ErrProtocol, a)
		}
		res.Addresses = append(res.Addresses, p)
	}
	return res, nil
}

// Freeze syncs and freezes the guest's writable filesystems. The agent
// thaws them by itself after deadline (0: the agent's default) unless Thaw
// comes first. It fails with ErrFrozen when they are frozen already.
func (c *Client) Freeze(ctx context.Context, deadline time.Duration) (FreezeResult, error) {
	resp, err := c.call(ctx, Request{Op: OpFreeze, DeadlineMS: toMS(deadline)}, 0)
	if err != nil {
		return FreezeResult{}, err
	}
	return FreezeResult{Filesystems: resp.Filesystems, Skipped: resp.Skipped}, nil
}

// Thaw thaws what Freeze froze; ErrNotFrozen when nothing is frozen.
func (c *Client) Thaw(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpThaw}, 0)
	return err
}

// Exec runs a program in the guest and returns how it ended. A program
// that ran past its Timeout is a result with TimedOut set, not an error;
// a program that could not start is ErrExec.
func (c *Client) Exec(ctx context.Context, req ExecRequest) (ExecResult, error) {
	limit := req.Timeout
	if limit <= 0 {
		limit = DefaultExecTimeout
	}
	resp, err := c.call(ctx, Request{
		Op:        OpExec,
		Path:      req.Path,
		Args:      req.Args,
		Stdin:     req.Stdin,
		TimeoutMS: toMS(req.Timeout),
	}, limit)
	if err != nil {
		return ExecResult{}, err
	}
	return ExecResult{
		ExitCode:  resp.ExitCode,
		Signal:    resp.Signal,
		Stdout:    resp.Stdout,
		Stderr:    resp.Stderr,
		Truncated: resp.Truncated,
		TimedOut:  resp.TimedOut,
	}, nil
}

// Shutdown asks the guest to power off. The agent answers first, then
// syncs and powers off; the connection dies soon after.
func (c *Client) Shutdown(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpShutdown}, 0)
	return err
}

// Reboot asks the guest to restart, like Shutdown.
func (c *Client) Reboot(ctx context.Context) error {
	_, err := c.call(ctx, Request{Op: OpReboot}, 0)
	return err
}

// DialSerial connects to QEMU's UNIX-socket chardev of the agent's
// virtserialport (-chardev socket,path=...,server=on,wait=off). QEMU serves
// one client at a time: a second dial connects but is never answered.
func DialSerial(ctx context.Context, socketPath string) (net.Conn, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("guest: dial agent serial socket: %w", err)
	}
	return conn, nil
}

// DialVsock connects to an agent over vsock (cid of the guest, port
// usually VsockPort).
func DialVsock(ctx context.Context, cid, port uint32) (net.Conn, error) {
	ctx, cancel := withDefaultTimeout(ctx)
	defer cancel()
	conn, err := vsock.DialContext(ctx, cid, port, nil)
	if err != nil {
		return nil, fmt.Errorf("guest: dial agent vsock cid %d port %d: %w", cid, port, err)
	}
	return conn, nil
}

// ListenVsock listens on a vsock port for any local context id, so that
// both the host (through the VM's device) and the guest itself (CID 1,
// with vsock_loopback) can connect.
func ListenVsock(port uint32) (net.Listener, error) {
	l, err := vsock.ListenContextID(vmaddrCIDAny, port, nil)
	if err != nil {
		return nil, fmt.Errorf("guest: listen on vsock port %d: %w", port, err)
	}
	return l, nil
}

// vmaddrCIDAny is VMADDR_CID_ANY.
const vmaddrCIDAny = 0xffffffff

func withDefaultTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, DefaultTimeout)
}
