package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"
)

// ErrClosed is returned by [Conn.Execute] once the connection is closed or QEMU went away.
var ErrClosed = errors.New("qmp: connection closed")

// Error is an error answered by QEMU to a command.
type Error struct {
	Command string
	Class   string `json:"class"`
	Desc    string `json:"desc"`
}

func (e *Error) Error() string {
	return fmt.Sprintf("qmp: %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event.
type Event struct {
	Name string
	Data json.RawMessage
	Time time.Time
}

// Version is QEMU's version as announced in the greeting.
type Version struct {
	Major, Minor, Micro int
	Package             string
}

func (v Version) String() string {
	return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Micro)
}

// message is any line QEMU sends: a greeting, a response or an event.
type message struct {
	QMP *struct {
		Version struct {
			QEMU struct {
				Major int `json:"major"`
				Minor int `json:"minor"`
				Micro int `json:"micro"`
			} `json:"qemu"`
			Package string `json:"package"`
		} `json:"version"`
	} `json:"QMP"`
	ID        json.RawMessage `json:"id"`
	Return    json.RawMessage `json:"return"`
	Error     *Error          `json:"error"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *struct {
		Seconds      int64 `json:"seconds"`
		Microseconds int64 `json:"microseconds"`
	} `json:"timestamp"`
}

type response struct {
	ret json.RawMessage
	err *Error
}

// result is what Execute returns for the answer to command.
func (r response) result(command string) (json.RawMessage, error) {
	if r.err != nil {
		r.err.Command = command
		return nil, r.err
	}
	return r.ret, nil
}

// Conn is a negotiated QMP connection.
type Conn struct {
	conn    net.Conn
	version Version
	events  chan Event

	writeMu sync.Mutex

	mu      sync.Mutex
	nextID  uint64
	pending map[string]chan response
	closed  bool
	done    chan struct{}
	readErr error

	droppedEvents uint64
}

// EventBuffer is how many events [Conn.Events] holds when nobody reads them; older events are kept and
// newer ones are dropped (and counted by [Conn.DroppedEvents]) once it is full.
const EventBuffer = 256

// Dial connects to the QMP socket at path and negotiates capabilities. ctx bounds the connection and the
// handshake only.
func Dial(ctx context.Context, path string) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("qmp: dial %s: %w", path, err)
	}
	c, err := NewConn(ctx, nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	return c, nil
}

// NewConn negotiates QMP on an established connection. The Conn owns nc from then on.
func NewConn(ctx context.Context, nc net.Conn) (*Conn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	r := bufio.NewReaderSize(nc, 64<<10)
	var greeting message
	if err := readMessage(r, &greeting); err != nil {
		return nil, fmt.Errorf("qmp: read greeting: %w", ctxErr(ctx, err))
	}
	if greeting.QMP == nil {
		return nil, errors.New("qmp: first message is not a QMP greeting")
	}
	if _, err := nc.Write([]byte(`{"execute":"qmp_capabilities","id":"caps"}` + "\n")); err != nil {
		return nil, fmt.Errorf("qmp: negotiate: %w", ctxErr(ctx, err))
	}
	for {
		var m message
		if err := readMessage(r, &m); err != nil {
			return nil, fmt.Errorf("qmp: negotiate: %w", ctxErr(ctx, err))
		}
		if m.Event != "" {
			continue // cannot happen before negotiation, but harmless
		}
		if m.Error != nil {
			m.Error.Command = "qmp_capabilities"
			return nil, m.Error
		}
		break
	}
	if !stop() {
		return nil, fmt.Errorf("qmp: negotiate: %w", ctx.Err())
	}
	nc.SetDeadline(time.Time{})

	v := greeting.QMP.Version
	c := &Conn{
		conn: nc,
		version: Version{
			Major: v.QEMU.Major, Minor: v.QEMU.Minor, Micro: v.QEMU.Micro, Package: v.Package,
		},
		events:  make(chan Event, EventBuffer),
		pending: make(map[string]chan response),
		done:    make(chan struct{}),
	}
	go c.readLoop(r)
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func readMessage(r *bufio.Reader, m *message) error {
	line, err := r.ReadBytes('\n')
	if err != nil {
		return err
	}
	if err := json.Unmarshal(line, m); err != nil {
		return fmt.Errorf("qmp: bad message %q: %w", line, err)
	}
	return nil
}

// Version returns the QEMU version from the greeting.
func (c *Conn) Version() Version { return c.version }

// Events returns the channel on which events arrive. It is closed when the connection ends.
func (c *Conn) Events() <-chan Event { return c.events }

// DroppedEvents says how many events were dropped because [Conn.Events] was full.
func (c *Conn) DroppedEvents() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.droppedEvents
}

// Done is closed when the connection has ended (closed, or QEMU went away).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection ended, or nil while it is up.
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

func (c *Conn) readLoop(r *bufio.Reader) {
	var err error
	for {
		var m message
		if err = readMessage(r, &m); err != nil {
			break
		}
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			select {
			case c.events <- ev:
			default:
				c.mu.Lock()
				c.droppedEvents++
				c.mu.Unlock()
			}
		case m.ID != nil:
			var id string
			if json.Unmarshal(m.ID, &id) != nil {
				id = string(m.ID)
			}
			c.mu.Lock()
			ch := c.pending[id]
			delete(c.pending, id)
			c.mu.Unlock()
			if ch != nil {
				ch <- response{ret: m.Return, err: m.Error}
			}
		}
	}
	c.mu.Lock()
	c.closed = true
	if c.readErr == nil {
		c.readErr = fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.pending = nil
	c.mu.Unlock()
	close(c.done)
	close(c.events)
}

// Execute runs command with args (nil, or anything that marshals to a JSON object) and returns QEMU's
// "return" value. A command QEMU refuses comes back as an [*Error]. If ctx ends first, Execute returns
// ctx's error; the command may still run in QEMU.
func (c *Conn) Execute(ctx context.Context, command string, args any) (json.RawMessage, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	c.nextID++
	id := strconv.FormatUint(c.nextID, 10)
	ch := make(chan response, 1)
	c.pending[id] = ch
	c.mu.Unlock()

	req := struct {
		Execute   string `json:"execute"`
		Arguments any    `json:"arguments,omitempty"`
		ID        string `json:"id"`
	}{command, args, id}
	b, err := json.Marshal(req)
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp: %s: %w", command, err)
	}
	b = append(b, '\n')

	c.writeMu.Lock()
	if dl, ok := ctx.Deadline(); ok {
		c.conn.SetWriteDeadline(dl)
	} else {
		c.conn.SetWriteDeadline(time.Time{})
	}
	_, err = c.conn.Write(b)
	c.writeMu.Unlock()
	if err != nil {
		c.forget(id)
		return nil, fmt.Errorf("qmp: %s: %w", command, err)
	}

	select {
	case r := <-ch:
		return r.result(command)
	case <-c.done:
		// The read loop may have delivered the answer just before ending.
		select {
		case r := <-ch:
			return r.result(command)
		default:
		}
		return nil, fmt.Errorf("qmp: %s: %w", command, c.Err())
	case <-ctx.Done():
		c.forget(id)
		return nil, fmt.Errorf("qmp: %s: %w", command, ctx.Err())
	}
}

func (c *Conn) forget(id string) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Close closes the connection. Commands waiting for an answer return [ErrClosed].
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.readErr == nil {
		c.readErr = ErrClosed
	}
	c.mu.Unlock()
	err := c.conn.Close()
	<-c.done
	return err
}
