package guest

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// execStart serves exec_start: it answers "started" (or why not), streams
// the program's output as it comes, and ends with its exit. The program is
// killed at its timeout, or when the connection ends.
func (a *Agent) execStart(ctx context.Context, sc *serverConn, req Request) {
	log := a.log.With("op", req.Op, "id", req.ID)
	start := time.Now()
	e, proc, status, outputs, err := a.startStream(req)
	if err != nil {
		log.Warn("request failed", "err", err)
		sc.send(errorResponse(req.ID, err))
		return
	}
	defer proc.Release()
	sc.execs.add(e)
	defer sc.execs.remove(req.ID)
	frame := func(r Response) {
		r.V, r.ID, r.OK = ProtocolVersion, req.ID, true
		sc.send(r)
	}
	frame(Response{Event: EventStarted})

	var (
		exitedMu sync.Mutex
		exitedAt time.Time // zero while the program runs
	)
	var readers sync.WaitGroup
	read := func(f *os.File, event string) {
		defer readers.Done()
		buf := make([]byte, ExecChunkSize)
		for {
			n := e.take(ExecChunkSize)
			if n == 0 {
				return
			}
			exitedMu.Lock()
			at := exitedAt
			exitedMu.Unlock()
			if !at.IsZero() {
				// After the exit, read what is there; an idle pipe
				// (held by a descendant) ends the stream.
				_ = f.SetReadDeadline(min2(time.Now().Add(execPipeGrace), at.Add(execPipeCap)))
			}
			m, err := f.Read(buf[:n])
			e.give(n - int64(m))
			if m > 0 {
				frame(Response{Event: event, Data: append([]byte(nil), buf[:m]...)})
			}
			if err != nil {
				return
			}
		}
	}
	for _, o := range outputs {
		readers.Add(1)
		go read(o.f, o.event)
	}

	// A terminal session without a timeout of its own lasts while the
	// host is attached: it ends when the connection or the caller does.
	var expired <-chan time.Time
	if !req.TTY || req.TimeoutMS > 0 {
		timeout := durationMS(req.TimeoutMS)
		if timeout <= 0 {
			timeout = DefaultExecTimeout
		}
		timer := time.NewTimer(min(timeout, MaxExecTimeout))
		defer timer.Stop()
		expired = timer.C
	}
	var (
		ws       unix.WaitStatus
		timedOut bool
	)
	select {
	case ws = <-status:
	case <-expired:
		timedOut = true
		_ = e.kill(unix.SIGKILL)
		ws = <-status
	case <-ctx.Done():
		_ = e.kill(unix.SIGKILL)
		ws = <-status
	}
	e.exited.Store(true)
	_ = e.stdinFile.Close() // unblocks a stdin write the program never read

	now := time.Now()
	exitedMu.Lock()
	exitedAt = now
	exitedMu.Unlock()
	// Readers blocked in Read see the deadline; readers waiting for credit
	// set it themselves.
	for _, o := range outputs {
		_ = o.f.SetReadDeadline(now.Add(execPipeGrace))
	}
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(execPipeCap + execPipeGrace):
	case <-ctx.Done():
	}
	e.end()
	<-done
	for _, o := range outputs {
		_ = o.f.Close()
	}

	res := Response{Event: EventExit, TimedOut: timedOut}
	res.ExitCode, res.Signal = exitOf(ws)
	log.Info("request done", "took", time.Since(start).Round(time.Microsecond), "exit", res.ExitCode, "signal", res.Signal, "timed_out", timedOut)
	frame(res)
}

func min2(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// output is a pipe (or terminal) the program's output comes from.
type output struct {
	f     *os.File
	event string
}

// startStream starts the program of an exec_start in its own process group,
// with three pipes or, for a TTY, a new pseudo-terminal whose controlling
// process it is.
func (a *Agent) startStream(req Request) (e *agentExec, proc *os.Process, status <-chan unix.WaitStatus, outputs []output, err error) {
	if req.Path == "" {
		return nil, nil, nil, nil, fmt.Errorf("%w: exec needs a path", ErrProtocol)
	}
	pr, ok := a.opts.Runner.(*ProcessRunner)
	if !ok {
		return nil, nil, nil, nil, fmt.Errorf("%w: streaming exec needs the process runner", ErrUnsupported)
	}
	env := pr.Env
	if env == nil {
		env = DefaultExecEnv
	}
	path := req.Path
	if !strings.Contains(path, "/") {
		p, err := lookPath(path, env)
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrExec, err)
		}
		path = p
	}

	var (
		childFiles []*os.File // the child's 0, 1, 2; closed here after the start
		ours       []*os.File // closed on failure
		stdin      *os.File
		tty        *os.File
	)
	sys := &syscall.SysProcAttr{Setpgid: true}
	if req.TTY {
		master, slave, err := openPTY()
		if err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrInternal, err)
		}
		if req.Rows > 0 && req.Cols > 0 {
			_ = setWinsize(master, req.Rows, req.Cols)
		}
		// Writes go through their own descriptor, so that closing it at
		// the exit (to unblock a write) leaves the reader's alone.
		var fd int
		err = control(master, func(mfd int) (err error) { fd, err = unix.Dup(mfd); return err })
		if err != nil {
			closeAll(master, slave)
			return nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrInternal, err)
		}
		stdin = os.NewFile(uintptr(fd), "ptmx-in")
		tty = master
		childFiles = []*os.File{slave, slave, slave}
		ours = []*os.File{master, stdin}
		outputs = []output{{master, EventStdout}}
		sys = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
		term := req.Term
		if term == "" {
			term = "xterm"
		}
		env = append(append([]string{}, env...), "TERM="+term)
	} else {
		var files []*os.File // r0 w0 r1 w1 r2 w2
		for range 3 {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll(files...)
				return nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrInternal, err)
			}
			files = append(files, r, w)
		}
		childFiles = []*os.File{files[0], files[3], files[5]}
		stdin = files[1]
		ours = []*os.File{files[1], files[2], files[4]}
		outputs = []output{{files[2], EventStdout}, {files[4], EventStderr}}
	}
	attr := &os.ProcAttr{Dir: "/", Env: env, Files: childFiles, Sys: sys}
	argv := append([]string{req.Path}, req.Args...)
	proc, status, err = startProcess(pr.Reaper, path, argv, attr)
	closeAll(childFiles...)
	if err != nil {
		closeAll(ours...)
		return nil, nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrExec, req.Path, err)
	}
	pid := proc.Pid
	kill := func(sig syscall.Signal) error {
		return unix.Kill(-pid, sig) // the group, while its leader is unreaped
	}
	e = newAgentExec(req.ID, stdin, kill)
	e.tty, e.keepIn = tty, tty != nil
	return e, proc, status, outputs, nil
}

// openPTY opens a new pseudo-terminal, mounting devpts first when the
// guest has none (the agent as init mounts only proc, sys and dev).
func openPTY() (master, slave *os.File, err error) {
	if _, err := os.Stat("/dev/pts/ptmx"); err != nil {
		if err := mountFS("devpts", "/dev/pts", unix.MS_NOSUID|unix.MS_NOEXEC, "ptmxmode=0666,mode=0620"); err != nil {
			return nil, nil, fmt.Errorf("pseudo-terminal: %w", err)
		}
	}
	master, err = os.OpenFile("/dev/pts/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	var n int
	err = control(master, func(fd int) error {
		if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
		n, err = unix.IoctlGetInt(fd, unix.TIOCGPTN)
		return err
	})
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	slave, err = os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		return nil, nil, fmt.Errorf("pseudo-terminal: %w", err)
	}
	return master, slave, nil
}

// setWinsize sets a terminal's size; the program gets SIGWINCH.
func setWinsize(f *os.File, rows, cols uint16) error {
	err := control(f, func(fd int) error {
		return unix.IoctlSetWinsize(fd, unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	})
	if err != nil {
		return fmt.Errorf("%w: set terminal size: %v", ErrInternal, err)
	}
	return nil
}

// control runs fn on f's descriptor without f.Fd, which would make f
// blocking and so end its read deadlines.
func control(f *os.File, fn func(fd int) error) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = fn(int(fd)) }); err != nil {
		return err
	}
	return ferr
}
