package guest

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The streaming exec, on the same connection as every other request:
//
//	host → agent  exec_start {id: 7, path, args, timeout_ms}
//	agent → host  {id: 7, ok, event: "started"}
//	agent → host  {id: 7, ok, event: "stdout"|"stderr", data}   (any number)
//	host → agent  exec_window {id: 9, exec: 7, bytes}           (no answer)
//	host → agent  exec_stdin  {id: 8, exec: 7, data, eof}       (answered once written)
//	host → agent  exec_signal {id: 10, exec: 7, signal: 2}      (answered)
//	agent → host  {id: 7, ok, event: "exit", exit_code, signal, timed_out}
//
// A failed frame (ok false) instead of "started" means the program did not
// start; after "started", one means the exec broke, and ends the stream too.
//
// Flow control: output chunks are at most ExecChunkSize bytes, and the agent
// has at most ExecWindow bytes of one exec's output on the way to the host
// before the host grants more with exec_window, once it has passed them on.
// So a chatty command, or a host slow to pass its output on, holds the
// connection for at most one chunk at a time: ping, freeze and thaw answers
// never wait behind more than a few chunks, and the host's read loop never
// blocks. Stdin is flow controlled by its answers: the host sends the next
// chunk once the last one was written to the program's pipe.

// Sizes of the streaming exec.
const (
	// ExecChunkSize bounds the data of one output frame or stdin request.
	ExecChunkSize = 32 << 10
	// ExecWindow is how many output bytes of one exec may be unacknowledged.
	ExecWindow = 256 << 10
)

// ExecInterruptGrace is how long a cancelled streaming exec has, after
// SIGINT, before the host sends SIGKILL.
const ExecInterruptGrace = 2 * time.Second

// execPipeCap bounds how long output is read after the program exited,
// while descendants keep writing to its pipes.
const execPipeCap = 5 * time.Second

// isExecControl reports whether op addresses a running exec: such requests
// are quick, so they never wait for a slot.
func isExecControl(op string) bool {
	return op == OpExecStdin || op == OpExecSignal || op == OpExecWindow || op == OpExecResize
}

// execTable holds the running streaming execs of one connection by the id
// of their exec_start. The zero value is ready.
type execTable struct {
	mu sync.Mutex
	m  map[uint64]*agentExec
}

func (t *execTable) add(e *agentExec) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = make(map[uint64]*agentExec)
	}
	t.m[e.id] = e
}

func (t *execTable) get(id uint64) *agentExec {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[id]
}

func (t *execTable) remove(id uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.m, id)
}

// agentExec is one running streaming exec.
type agentExec struct {
	id     uint64
	kill   func(sig syscall.Signal) error // to the process group
	exited atomic.Bool                    // set once the program is reaped: no more signals
	tty    *os.File                       // the terminal's master side, for a TTY exec
	keepIn bool                           // stdin EOF does not close it (a TTY's master)

	stdinMu   sync.Mutex
	stdin     *os.File // nil once closed
	stdinFile *os.File // the same file, closed at exit without stdinMu

	cmu    sync.Mutex
	cond   *sync.Cond
	credit int64
	ended  bool // no more output will be sent
}

func newAgentExec(id uint64, stdin *os.File, kill func(syscall.Signal) error) *agentExec {
	e := &agentExec{id: id, stdin: stdin, stdinFile: stdin, kill: kill, credit: ExecWindow}
	e.cond = sync.NewCond(&e.cmu)
	return e
}

// take waits for output credit and takes up to n bytes of it; 0 once the
// exec has ended.
func (e *agentExec) take(n int64) int64 {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	for e.credit == 0 && !e.ended {
		e.cond.Wait()
	}
	if e.ended {
		return 0
	}
	n = min(n, e.credit)
	e.credit -= n
	return n
}

// give returns credit: granted by the host, or taken and not used.
func (e *agentExec) give(n int64) {
	e.cmu.Lock()
	e.credit = min(e.credit+n, 1<<40)
	e.cmu.Unlock()
	e.cond.Broadcast()
}

// end stops the output readers that wait for credit.
func (e *agentExec) end() {
	e.cmu.Lock()
	e.ended = true
	e.cmu.Unlock()
	e.cond.Broadcast()
}

// writeStdin writes data to the program's stdin, then closes it on eof.
func (e *agentExec) writeStdin(data []byte, eof bool) error {
	e.stdinMu.Lock()
	defer e.stdinMu.Unlock()
	if e.stdin == nil {
		if len(data) == 0 {
			return nil
		}
		return fmt.Errorf("%w: stdin of exec %d is closed", ErrProtocol, e.id)
	}
	if len(data) > 0 {
		if _, err := e.stdin.Write(data); err != nil {
			// The program closed its stdin or exited: what it did
			// not read is dropped, as a pipe would.
			_ = e.stdin.Close()
			e.stdin = nil
			return nil
		}
	}
	if eof && !e.keepIn {
		_ = e.stdin.Close()
		e.stdin = nil
	}
	return nil
}

// execControl serves exec_stdin, exec_signal and exec_window. It answers
// all but exec_window, whose only effect is more credit.
func (a *Agent) execControl(sc *serverConn, req Request) {
	e := sc.execs.get(req.Exec)
	if req.Op == OpExecWindow {
		if e != nil {
			e.give(req.Bytes)
		}
		return
	}
	var err error
	switch {
	case e == nil:
		err = fmt.Errorf("%w: no exec %d is running on this connection", ErrProtocol, req.Exec)
	case req.Op == OpExecStdin:
		if len(req.Data) > ExecChunkSize {
			err = fmt.Errorf("%w: stdin chunk of %d bytes, the limit is %d", ErrProtocol, len(req.Data), ExecChunkSize)
		} else {
			err = e.writeStdin(req.Data, req.EOF)
		}
	case req.Op == OpExecResize:
		if e.tty == nil {
			err = fmt.Errorf("%w: exec %d has no terminal to resize", ErrProtocol, req.Exec)
		} else {
			err = setWinsize(e.tty, req.Rows, req.Cols)
		}
	case req.Op == OpExecSignal:
		if req.Signal <= 0 || req.Signal > 64 {
			err = fmt.Errorf("%w: signal %d", ErrProtocol, req.Signal)
		} else if e.exited.Load() {
			// Too late: it has ended, its exit frame is on the way.
		} else if kerr := e.kill(syscall.Signal(req.Signal)); kerr != nil {
			a.log.Debug("exec signal", "exec", req.Exec, "signal", req.Signal, "err", kerr)
		}
	}
	if err != nil {
		sc.send(errorResponse(req.ID, err))
		return
	}
	sc.send(Response{V: ProtocolVersion, ID: req.ID, OK: true})
}

// execStream serves the streaming exec's requests (registered in ServeConn).
func (a *Agent) execStream(ctx context.Context, sc *serverConn, req Request) {
	if req.Op == OpExecStart {
		a.execStart(ctx, sc, req)
		return
	}
	a.execControl(sc, req)
}

// release frees a request's slot, if it took one.
func release(slot bool, sem chan struct{}) {
	if slot {
		<-sem
	}
}
