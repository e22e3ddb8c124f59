package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"syscall"
	"time"
)

// ExecIO is where a streaming exec's input comes from and its output goes.
type ExecIO struct {
	// Stdin is copied to the program's standard input, then closed; nil
	// closes it at once.
	Stdin io.Reader
	// Stdout and Stderr receive the program's output as it comes (nil
	// drops it). A failed write drops the rest of that stream; the
	// program runs on.
	Stdout, Stderr io.Writer
	// Started, when set, is called once the program runs, before any
	// output.
	Started func()
	// Resize carries new sizes of a TTY exec's terminal.
	Resize <-chan WindowSize
}

// clientExec queues the frames of one streaming exec for its caller.
type clientExec struct {
	mu     sync.Mutex
	q      []Response
	notify chan struct{} // 1-buffered: frames queued
}

func (ce *clientExec) push(r Response) {
	ce.mu.Lock()
	ce.q = append(ce.q, r)
	ce.mu.Unlock()
	select {
	case ce.notify <- struct{}{}:
	default:
	}
}

func (ce *clientExec) pop() (Response, bool) {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	if len(ce.q) == 0 {
		return Response{}, false
	}
	r := ce.q[0]
	ce.q = ce.q[1:]
	return r, true
}

// ExecStream runs a program in the guest, passing its output to eio as it
// comes and eio.Stdin to it, and returns how it ended. Like Exec, a program
// that ran past its Timeout is a result with TimedOut set, and one that
// could not start is ErrExec.
//
// When ctx ends first, the program's process group gets SIGINT, then
// SIGKILL after ExecInterruptGrace; ExecStream waits (a few seconds at most)
// for it to end and returns ctx's error.
func (c *Client) ExecStream(ctx context.Context, req ExecRequest, eio ExecIO) (ExecResult, error) {
	limit := req.Timeout
	if limit <= 0 {
		limit = DefaultExecTimeout
	}
	// The agent kills the program at its timeout; this bound is for an
	// agent that stops answering altogether.
	lost := time.NewTimer(min(limit, MaxExecTimeout) + c.timeout + execPipeCap)
	defer lost.Stop()
	if req.TTY && req.Timeout == 0 {
		lost.Stop() // a terminal session has no time limit
	}

	id := c.nextID.Add(1)
	line, err := encodeLine(Request{V: ProtocolVersion, ID: id, Op: OpExecStart, Path: req.Path, Args: req.Args, TimeoutMS: toMS(req.Timeout),
		TTY: req.TTY, Term: req.Term, Rows: req.Size.Rows, Cols: req.Size.Cols})
	if err != nil {
		return ExecResult{}, fmt.Errorf("guest: exec: %w", err)
	}
	if len(line) > MaxRequestSize {
		return ExecResult{}, fmt.Errorf("guest: exec: %w: request is %d bytes, the limit is %d", ErrProtocol, len(line), MaxRequestSize)
	}
	ce := &clientExec{notify: make(chan struct{}, 1)}
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return ExecResult{}, fmt.Errorf("guest: exec: %w", err)
	}
	c.streams[id] = ce
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.streams, id)
		c.mu.Unlock()
	}()
	wctx, wcancel := context.WithTimeout(ctx, c.timeout)
	err = c.write(wctx, line)
	wcancel()
	if err != nil {
		return ExecResult{}, fmt.Errorf("guest: exec: %w", err)
	}

	// From here on the program may run: it must not outlive the call.
	stdinCtx, stopStdin := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStdin()
	started := false
	var (
		cancelled  <-chan struct{} = ctx.Done()
		killAt     <-chan time.Time
		giveUpAt   <-chan time.Time
		stdout     = eio.Stdout
		stderr     = eio.Stderr
		wasStopped error
	)
	// handle acts on a cancel or a timer; it returns an error to end with.
	handle := func(which int) error {
		switch which {
		case 0: // ctx ended
			cancelled = nil
			wasStopped = ctx.Err()
			c.signal(id, syscall.SIGINT)
			killAt = time.After(ExecInterruptGrace)
		case 1:
			killAt = nil
			c.signal(id, syscall.SIGKILL)
			giveUpAt = time.After(c.timeout)
		case 2:
			return fmt.Errorf("guest: exec: the program did not end after SIGKILL: %w", wasStopped)
		case 3:
			c.signal(id, syscall.SIGKILL)
			return fmt.Errorf("guest: exec: no exit from the agent %s after the program's time limit: %w", c.timeout+execPipeCap, context.DeadlineExceeded)
		}
		return nil
	}
	resize := eio.Resize
	for {
		r, ok := ce.pop()
		if !ok {
			// Nothing queued: wait for frames, a cancel or a timer.
			select {
			case ws, ok := <-resize:
				if !ok {
					resize = nil
				} else if started {
					c.resize(id, ws)
				}
			case <-ce.notify:
			case <-c.done:
				if _, ok := ce.peek(); !ok {
					return ExecResult{}, fmt.Errorf("guest: exec: %w", c.Err())
				}
			case <-cancelled:
				err = handle(0)
			case <-killAt:
				err = handle(1)
			case <-giveUpAt:
				err = handle(2)
			case <-lost.C:
				err = handle(3)
			}
			if err != nil {
				return ExecResult{}, err
			}
			continue
		}
		// A stream that never runs dry must not hide a cancel.
		select {
		case <-cancelled:
			err = handle(0)
		case <-killAt:
			err = handle(1)
		case <-giveUpAt:
			err = handle(2)
		default:
		}
		if err != nil {
			return ExecResult{}, err
		}
		if !r.OK {
			if _, err := answer("exec", r); err != nil {
				return ExecResult{}, err
			}
		}
		switch r.Event {
		case EventStarted:
			if !started {
				if wasStopped != nil {
					// Cancelled before it started: the SIGINT found
					// nothing to interrupt.
					c.signal(id, syscall.SIGKILL)
				}
				started = true
				if eio.Started != nil {
					eio.Started()
				}
				go c.pumpStdin(stdinCtx, id, eio.Stdin)
			}
		case EventStdout, EventStderr:
			w := &stdout
			if r.Event == EventStderr {
				w = &stderr
			}
			if *w != nil {
				if _, err := (*w).Write(r.Data); err != nil {
					*w = nil
				}
			}
			c.grant(id, len(r.Data))
		case EventExit:
			res := ExecResult{ExitCode: r.ExitCode, Signal: r.Signal, TimedOut: r.TimedOut}
			if wasStopped != nil {
				return res, fmt.Errorf("guest: exec: stopped: %w", wasStopped)
			}
			return res, nil
		}
	}
}

func (ce *clientExec) peek() (Response, bool) {
	ce.mu.Lock()
	defer ce.mu.Unlock()
	if len(ce.q) == 0 {
		return Response{}, false
	}
	return ce.q[0], true
}

// grant gives the agent n more bytes of output credit. It does not wait
// for the write: a window update has no answer.
func (c *Client) grant(id uint64, n int) {
	line, err := encodeLine(Request{V: ProtocolVersion, ID: c.nextID.Add(1), Op: OpExecWindow, Exec: id, Bytes: int64(n)})
	if err != nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	_ = c.write(ctx, line)
}

// resize sets the size of a TTY exec's terminal.
func (c *Client) resize(id uint64, ws WindowSize) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if _, err := c.call(ctx, Request{Op: OpExecResize, Exec: id, Rows: ws.Rows, Cols: ws.Cols}, 0); err != nil {
		c.log.Debug("guest: exec resize", "exec", id, "err", err)
	}
}

// signal sends sig to the exec's process group.
func (c *Client) signal(id uint64, sig syscall.Signal) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	if _, err := c.call(ctx, Request{Op: OpExecSignal, Exec: id, Signal: int(sig)}, 0); err != nil {
		c.log.Debug("guest: exec signal", "exec", id, "signal", sig, "err", err)
	}
}

// pumpStdin copies in to the exec's stdin, a chunk at a time, each sent
// once the last was written; then it closes stdin.
func (c *Client) pumpStdin(ctx context.Context, id uint64, in io.Reader) {
	send := func(data []byte, eof bool) error {
		_, err := c.call(ctx, Request{Op: OpExecStdin, Exec: id, Data: data, EOF: eof}, MaxExecTimeout)
		return err
	}
	if in == nil {
		_ = send(nil, true)
		return
	}
	buf := make([]byte, ExecChunkSize)
	for {
		n, err := in.Read(buf)
		if n > 0 {
			// A chunk waits as long as the program takes to read it.
			if serr := send(append([]byte(nil), buf[:n]...), false); serr != nil {
				return
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				_ = send(nil, true)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
	}
}
