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
	e, proc, status, stdout, stderr, err := a.startStream(req)
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
	readers.Add(2)
	go read(stdout, EventStdout)
	go read(stderr, EventStderr)

	timeout := durationMS(req.TimeoutMS)
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	timeout = min(timeout, MaxExecTimeout)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var (
		ws       unix.WaitStatus
		timedOut bool
	)
	select {
	case ws = <-status:
	case <-timer.C:
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
	_ = stdout.SetReadDeadline(now.Add(execPipeGrace))
	_ = stderr.SetReadDeadline(now.Add(execPipeGrace))
	done := make(chan struct{})
	go func() { readers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(execPipeCap + execPipeGrace):
	case <-ctx.Done():
	}
	e.end()
	<-done
	closeAll(stdout, stderr)

	res := Response{Event: EventExit, TimedOut: timedOut}
	switch {
	case ws.Exited():
		res.ExitCode = ws.ExitStatus()
	case ws.Signaled():
		res.ExitCode = -1
		res.Signal = int(ws.Signal())
	default:
		res.ExitCode = -1
	}
	log.Info("request done", "took", time.Since(start).Round(time.Microsecond), "exit", res.ExitCode, "signal", res.Signal, "timed_out", timedOut)
	frame(res)
}

func min2(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// startStream starts the program of an exec_start with three pipes, in its
// own process group, the way ProcessRunner does.
func (a *Agent) startStream(req Request) (e *agentExec, proc *os.Process, status <-chan unix.WaitStatus, stdout, stderr *os.File, err error) {
	if req.Path == "" {
		return nil, nil, nil, nil, nil, fmt.Errorf("%w: exec needs a path", ErrProtocol)
	}
	pr, ok := a.opts.Runner.(*ProcessRunner)
	if !ok {
		return nil, nil, nil, nil, nil, fmt.Errorf("%w: streaming exec needs the process runner", ErrUnsupported)
	}
	env := pr.Env
	if env == nil {
		env = DefaultExecEnv
	}
	path := req.Path
	if !strings.Contains(path, "/") {
		p, err := lookPath(path, env)
		if err != nil {
			return nil, nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrExec, err)
		}
		path = p
	}
	var files []*os.File // r0 w0 r1 w1 r2 w2
	for range 3 {
		r, w, err := os.Pipe()
		if err != nil {
			closeAll(files...)
			return nil, nil, nil, nil, nil, fmt.Errorf("%w: %v", ErrInternal, err)
		}
		files = append(files, r, w)
	}
	stdinR, stdinW, stdoutR, stdoutW, stderrR, stderrW := files[0], files[1], files[2], files[3], files[4], files[5]
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []*os.File{stdinR, stdoutW, stderrW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	argv := append([]string{req.Path}, req.Args...)
	if pr.Reaper != nil {
		proc, status, err = pr.Reaper.StartProcess(path, argv, attr)
	} else {
		proc, err = os.StartProcess(path, argv, attr)
		if err == nil {
			ch := make(chan unix.WaitStatus, 1)
			go func() {
				ps, _ := proc.Wait()
				if ps != nil {
					ch <- unix.WaitStatus(ps.Sys().(syscall.WaitStatus))
				} else {
					ch <- unix.WaitStatus(0xff00)
				}
			}()
			status = ch
		}
	}
	closeAll(stdinR, stdoutW, stderrW)
	if err != nil {
		closeAll(stdinW, stdoutR, stderrR)
		return nil, nil, nil, nil, nil, fmt.Errorf("%w: %s: %v", ErrExec, req.Path, err)
	}
	pid := proc.Pid
	var kmu sync.Mutex
	kill := func(sig syscall.Signal) error {
		kmu.Lock()
		defer kmu.Unlock()
		return unix.Kill(-pid, sig) // the group, while its leader is unreaped
	}
	return newAgentExec(req.ID, stdinW, kill), proc, status, stdoutR, stderrR, nil
}
