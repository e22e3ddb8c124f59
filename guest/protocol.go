package guest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"time"
)

// ProtocolVersion is the version carried in the "v" field of every line.
const ProtocolVersion = 1

// VsockPort is the vsock port the agent listens on.
const VsockPort = 1024

// SerialPortName is the virtserialport name= the host gives QEMU; the agent
// finds its port by this name under /sys/class/virtio-ports.
const SerialPortName = "org.superjolt.agent"

// Size limits of the protocol.
const (
	// MaxRequestSize is the longest request line the agent accepts,
	// newline included. Longer lines are answered with ErrProtocol.
	MaxRequestSize = 1 << 20
	// MaxResponseSize is the longest response line the client accepts. It
	// leaves room for two MaxExecOutput streams in base64.
	MaxResponseSize = 4 << 20
	// MaxExecOutput caps each of an exec's stdout and stderr.
	MaxExecOutput = 1 << 20
)

// Operation names, the "op" field of a request.
const (
	OpPing     = "ping"
	OpFreeze   = "freeze"
	OpThaw     = "thaw"
	OpExec     = "exec"
	OpShutdown = "shutdown"
	OpReboot   = "reboot"

	// The streaming exec (see stream.go): exec_start runs a program and
	// is answered by a stream of frames carrying its request id; the other
	// three address that exec by its id in the "exec" field.
	OpExecStart  = "exec_start"
	OpExecStdin  = "exec_stdin"
	OpExecSignal = "exec_signal"
	OpExecWindow = "exec_window"
	OpExecResize = "exec_resize"
)

// Request is one line from the host to the agent. Fields that belong to one
// operation are named after it in their comment; the others stay empty.
type Request struct {
	V  int    `json:"v"`
	ID uint64 `json:"id"`
	Op string `json:"op"`

	// DeadlineMS (freeze): the agent thaws by itself this many
	// milliseconds after the freeze unless the host thaws first.
	DeadlineMS int64 `json:"deadline_ms,omitempty"`

	// Path, Args, Stdin, TimeoutMS (exec): what to run. Args are the
	// arguments after the program name.
	Path      string   `json:"path,omitempty"`
	Args      []string `json:"args,omitempty"`
	Stdin     []byte   `json:"stdin,omitempty"`
	TimeoutMS int64    `json:"timeout_ms,omitempty"`

	// Exec (exec_stdin, exec_signal, exec_window): the id of the
	// exec_start request this one is about.
	Exec uint64 `json:"exec,omitempty"`
	// Data, EOF (exec_stdin): bytes for the program's stdin, at most
	// ExecChunkSize; EOF closes its stdin after them.
	Data []byte `json:"data,omitempty"`
	EOF  bool   `json:"eof,omitempty"`
	// Signal (exec_signal): the signal number sent to the program's
	// process group.
	Signal int `json:"signal,omitempty"`
	// Bytes (exec_window): how many more output bytes the host takes.
	Bytes int64 `json:"bytes,omitempty"`
	// TTY, Term (exec_start): run the program on a new pseudo-terminal
	// (its output all comes as stdout), with TERM=Term.
	TTY  bool   `json:"tty,omitempty"`
	Term string `json:"term,omitempty"`
	// Rows, Cols (exec_start with TTY, exec_resize): the terminal's size.
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
}

// Response is one line from the agent to the host.
type Response struct {
	V     int        `json:"v"`
	ID    uint64     `json:"id"`
	OK    bool       `json:"ok"`
	Error *WireError `json:"error,omitempty"`

	// ping
	BootID          string `json:"boot_id,omitempty"`
	UptimeNS        int64  `json:"uptime_ns,omitempty"`
	AgentVersion    string `json:"agent_version,omitempty"`
	ProtocolVersion int    `json:"protocol_version,omitempty"`
	// Hostname, Addresses and BootConfigError (ping, optional: older
	// agents leave them out): the guest's hostname, the IPv4 addresses of
	// its interfaces other than loopback ("10.77.0.2/16"), and why the
	// boot configuration from the host did not fully apply.
	Hostname        string   `json:"hostname,omitempty"`
	Addresses       []string `json:"addresses,omitempty"`
	BootConfigError string   `json:"boot_config_error,omitempty"`

	// freeze: the mount points frozen, and those skipped because they
	// cannot be frozen ("/mnt/x: ..." with the reason; optional, older
	// agents leave it out).
	Filesystems []string `json:"filesystems,omitempty"`
	Skipped     []string `json:"skipped,omitempty"`

	// exec
	ExitCode  int    `json:"exit_code,omitempty"`
	Signal    int    `json:"signal,omitempty"`
	Stdout    []byte `json:"stdout,omitempty"`
	Stderr    []byte `json:"stderr,omitempty"`
	Truncated bool   `json:"truncated,omitempty"`
	TimedOut  bool   `json:"timed_out,omitempty"`

	// exec_start frames: Event is EventStarted, EventStdout, EventStderr
	// or EventExit (with ExitCode, Signal and TimedOut); Data is a chunk
	// of output, at most ExecChunkSize bytes.
	Event string `json:"event,omitempty"`
	Data  []byte `json:"data,omitempty"`
}

// Events of an exec_start stream. A failed frame (ok false) also ends it.
const (
	EventStarted = "started"
	EventStdout  = "stdout"
	EventStderr  = "stderr"
	EventExit    = "exit"
)

// WireError is the "error" object of a failed response.
type WireError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes on the wire, each with the error the client returns for it.
const (
	CodeFrozen      = "frozen"
	CodeNotFrozen   = "not_frozen"
	CodeUnknownOp   = "unknown_op"
	CodeProtocol    = "protocol"
	CodeExec        = "exec_failed"
	CodeBusy        = "busy"
	CodeUnsupported = "unsupported"
	CodeInternal    = "internal"
)

// Errors returned for the agent's error codes; errors.Is matches them on
// both sides of the connection.
var (
	// ErrFrozen: freeze while the filesystems are already frozen.
	ErrFrozen = errors.New("guest filesystems are already frozen; thaw them first")
	// ErrNotFrozen: thaw while nothing is frozen (the agent may have
	// thawed by itself after the freeze deadline).
	ErrNotFrozen = errors.New("guest filesystems are not frozen")
	// ErrUnknownOp: the agent does not know the operation; it may be older
	// than the host.
	ErrUnknownOp = errors.New("unknown guest agent operation")
	// ErrProtocol: a malformed, oversized or wrong-version line, in either
	// direction.
	ErrProtocol = errors.New("guest agent protocol error")
	// ErrExec: the agent could not start the program of an exec request.
	ErrExec = errors.New("guest agent could not start the program")
	// ErrBusy: too many requests in flight on one connection.
	ErrBusy = errors.New("guest agent is busy; retry later")
	// ErrUnsupported: the guest cannot do this (e.g. power off without
	// being init and without a poweroff command).
	ErrUnsupported = errors.New("not supported by this guest")
	// ErrInternal: any other failure inside the agent.
	ErrInternal = errors.New("guest agent failed")
	// ErrClosed: the connection to the agent is closed or broke; every
	// pending and later call on that Client fails with it.
	ErrClosed = errors.New("guest agent connection closed")
)

var codeErrors = []struct {
	code string
	err  error
}{
	{CodeFrozen, ErrFrozen},
	{CodeNotFrozen, ErrNotFrozen},
	{CodeUnknownOp, ErrUnknownOp},
	{CodeProtocol, ErrProtocol},
	{CodeExec, ErrExec},
	{CodeBusy, ErrBusy},
	{CodeUnsupported, ErrUnsupported},
	{CodeInternal, ErrInternal},
}

// errorCode maps an agent-side error to its wire code.
func errorCode(err error) string {
	for _, ce := range codeErrors {
		if errors.Is(err, ce.err) {
			return ce.code
		}
	}
	return CodeInternal
}

// AgentError is a failure reported by the agent. errors.Is(err, ErrFrozen)
// and friends match it by its code.
type AgentError struct {
	Op      string
	Code    string
	Message string
}

func (e *AgentError) Error() string {
	return fmt.Sprintf("guest agent %s: %s (%s)", e.Op, e.Message, e.Code)
}

// Is reports whether target is the error for e's code.
func (e *AgentError) Is(target error) bool {
	for _, ce := range codeErrors {
		if ce.code == e.Code {
			return ce.err == target
		}
	}
	return target == ErrInternal
}

// DecodeRequest parses one request line (with or without its newline). On
// error it still returns the request id when the line carried a readable
// one, so that the error can be answered to the right caller; the error
// wraps ErrProtocol.
func DecodeRequest(line []byte) (Request, uint64, error) {
	line = bytes.TrimRight(line, "\r\n")
	if len(line) >= MaxRequestSize {
		return Request{}, 0, fmt.Errorf("%w: request line longer than %d bytes", ErrProtocol, MaxRequestSize)
	}
	id := probeID(line)
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return Request{}, id, fmt.Errorf("%w: malformed request: %v", ErrProtocol, err)
	}
	if req.V != ProtocolVersion {
		return Request{}, id, fmt.Errorf("%w: protocol version %d, the agent speaks %d", ErrProtocol, req.V, ProtocolVersion)
	}
	if req.ID == 0 {
		return Request{}, 0, fmt.Errorf("%w: request id must be a positive integer", ErrProtocol)
	}
	if req.Op == "" {
		return Request{}, req.ID, fmt.Errorf("%w: request has no op", ErrProtocol)
	}
	if req.DeadlineMS < 0 || req.TimeoutMS < 0 || req.Bytes < 0 || req.Signal < 0 {
		return Request{}, req.ID, fmt.Errorf("%w: negative duration", ErrProtocol)
	}
	return req, req.ID, nil
}

// probeID reads only the id of a line that may be malformed elsewhere.
func probeID(line []byte) uint64 {
	var p struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(line, &p) != nil || len(p.ID) == 0 {
		return 0
	}
	id, err := strconv.ParseUint(string(p.ID), 10, 64)
	if err != nil {
		return 0
	}
	return id
}

// encodeLine marshals v as one line ending in '\n'. encoding/json escapes
// control characters, so the line never holds another newline.
func encodeLine(v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// errorResponse builds the failed response for err.
func errorResponse(id uint64, err error) Response {
	return Response{
		V:     ProtocolVersion,
		ID:    id,
		Error: &WireError{Code: errorCode(err), Message: err.Error()},
	}
}

// errLineTooLong is returned by readLine for a line over the limit; the
// rest of the line has been discarded and the stream is usable.
var errLineTooLong = errors.New("line too long")

// readLine reads one '\n'-terminated line of at most max bytes (newline
// included). A longer line is consumed up to and including its newline and
// reported as errLineTooLong. A final line without newline is returned
// with io.EOF only if it is empty; otherwise it is returned as a line.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		frag, err := r.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(frag) > max {
				tooLong = true
				line = nil
			} else {
				line = append(line, frag...)
			}
		}
		switch {
		case err == nil:
			if tooLong {
				return nil, errLineTooLong
			}
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0 && !tooLong:
			return line, nil
		default:
			return nil, err
		}
	}
}

// durationMS converts a wire millisecond count to a Duration.
func durationMS(ms int64) time.Duration {
	if ms > int64(time.Duration(1<<63-1)/time.Millisecond) {
		return time.Duration(1<<63 - 1)
	}
	return time.Duration(ms) * time.Millisecond
}

// toMS converts a Duration to a wire millisecond count, rounding up so that
// a positive duration never becomes 0 ("use the default").
func toMS(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}
