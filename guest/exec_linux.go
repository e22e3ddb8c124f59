package guest

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// MaxExecTimeout caps ExecRequest.Timeout.
const MaxExecTimeout = time.Hour

// execPipeGrace is how long output is still read after the program exited,
// for descendants that keep its stdout or stderr open.
const execPipeGrace = 500 * time.Millisecond

// DefaultExecEnv is the environment of programs run by ProcessRunner.
var DefaultExecEnv = []string{
	"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	"HOME=/root",
	"LANG=C.UTF-8",
}

// ProcessRunner is the real Runner: it runs the program in its own process
// group in "/", feeds it Stdin, keeps the first MaxExecOutput bytes of
// stdout and stderr (draining the rest so the program never blocks on a
// full pipe), and kills the whole group at the timeout or when ctx ends.
type ProcessRunner struct {
	// Reaper, when set (the agent is PID 1), starts and waits for the
	// program so that it and the orphan reaper never race.
	Reaper *Reaper
	// Env is the program's environment (default DefaultExecEnv).
	Env []string
}

var _ Runner = (*ProcessRunner)(nil)

// Run runs req. Failing to start is ErrExec; running past the timeout is
// a result with TimedOut set.
func (r *ProcessRunner) Run(ctx context.Context, req ExecRequest) (ExecResult, error) {
	timeout := req.Timeout
	if timeout <= 0 {
		timeout = DefaultExecTimeout
	}
	if timeout > MaxExecTimeout {
		timeout = MaxExecTimeout
	}
	env := r.Env
	if env == nil {
		env = DefaultExecEnv
	}
	path := req.Path
	if !strings.Contains(path, "/") {
		p, err := lookPath(path, env)
		if err != nil {
			return ExecResult{}, fmt.Errorf("%w: %v", ErrExec, err)
		}
		path = p
	}

	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return ExecResult{}, fmt.Errorf("%w: %v", ErrInternal, err)
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW)
		return ExecResult{}, fmt.Errorf("%w: %v", ErrInternal, err)
	}
	stderrR, stderrW, err := os.Pipe()
	if err != nil {
		closeAll(stdinR, stdinW, stdoutR, stdoutW)
		return ExecResult{}, fmt.Errorf("%w: %v", ErrInternal, err)
	}
	attr := &os.ProcAttr{
		Dir:   "/",
		Env:   env,
		Files: []*os.File{stdinR, stdoutW, stderrW},
		Sys:   &syscall.SysProcAttr{Setpgid: true},
	}
	argv := append([]string{req.Path}, req.Args...)

	proc, status, err := startProcess(r.Reaper, path, argv, attr)
	closeAll(stdinR, stdoutW, stderrW) // the child's ends
	if err != nil {
		closeAll(stdinW, stdoutR, stderrR)
		return ExecResult{}, fmt.Errorf("%w: %s: %v", ErrExec, req.Path, err)
	}
	defer proc.Release()

	go func() {
		_, _ = stdinW.Write(req.Stdin) // EPIPE when the program ignores stdin
		_ = stdinW.Close()
	}()
	var stdout, stderr cappedBuffer
	var copying sync.WaitGroup
	copying.Add(2)
	go func() { defer copying.Done(); _, _ = io.Copy(&stdout, stdoutR) }()
	go func() { defer copying.Done(); _, _ = io.Copy(&stderr, stderrR) }()

	var res ExecResult
	kill := func() {
		_ = unix.Kill(-proc.Pid, unix.SIGKILL) // the group, while its leader is unreaped
		_ = proc.Kill()
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var ws unix.WaitStatus
	select {
	case ws = <-status:
	case <-timer.C:
		res.TimedOut = true
		kill()
		ws = <-status
	case <-ctx.Done():
		kill()
		ws = <-status
	}

	_ = stdinW.Close() // a descendant may hold stdin without reading it

	copied := make(chan struct{})
	go func() { copying.Wait(); close(copied) }()
	select {
	case <-copied:
	case <-time.After(execPipeGrace):
		// A descendant holds the pipes open: stop reading.
		closeAll(stdoutR, stderrR)
		<-copied
	}
	closeAll(stdoutR, stderrR)

	res.ExitCode, res.Signal = exitOf(ws)
	res.Stdout, res.Stderr = stdout.Bytes(), stderr.Bytes()
	res.Truncated = stdout.truncated || stderr.truncated
	if ctx.Err() != nil && !res.TimedOut {
		return res, fmt.Errorf("%w: exec cancelled: %v", ErrInternal, ctx.Err())
	}
	return res, nil
}

// lookPath finds file in the PATH of env.
func lookPath(file string, env []string) (string, error) {
	pathVar := ""
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			pathVar = v
		}
	}
	for _, dir := range strings.Split(pathVar, ":") {
		if dir == "" {
			continue
		}
		p := dir + "/" + file
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%q: %w", file, exec.ErrNotFound)
}

func closeAll(fs ...*os.File) {
	for _, f := range fs {
		_ = f.Close()
	}
}

// cappedBuffer keeps the first MaxExecOutput bytes written and counts the
// rest as truncated; it never fails a write, so the pipe keeps draining.
type cappedBuffer struct {
	mu        sync.Mutex
	b         []byte
	truncated bool
}

func (c *cappedBuffer) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	room := MaxExecOutput - len(c.b)
	if len(p) > room {
		c.b = append(c.b, p[:max(room, 0)]...)
		c.truncated = true
		return len(p), nil
	}
	c.b = append(c.b, p...)
	return len(p), nil
}

func (c *cappedBuffer) Bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.b == nil {
		return nil
	}
	return c.b
}

// startProcess starts a program through the reaper when the agent is PID 1
// (rp not nil: it reaps every child and hands each status to its waiter),
// else with os.StartProcess and a goroutine that waits for it. The channel
// carries the program's wait status once it has exited.
func startProcess(rp *Reaper, path string, argv []string, attr *os.ProcAttr) (*os.Process, <-chan unix.WaitStatus, error) {
	if rp != nil {
		return rp.StartProcess(path, argv, attr)
	}
	proc, err := os.StartProcess(path, argv, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	go func() {
		ps, _ := proc.Wait()
		if ps != nil {
			ch <- unix.WaitStatus(ps.Sys().(syscall.WaitStatus))
		} else {
			ch <- unix.WaitStatus(0xff00) // exit 255: status lost
		}
	}()
	return proc, ch, nil
}

// exitOf reads a wait status as the protocol reports it: the exit code, or
// -1 and the signal that ended the program.
func exitOf(ws unix.WaitStatus) (code, signal int) {
	switch {
	case ws.Exited():
		return ws.ExitStatus(), 0
	case ws.Signaled():
		return -1, int(ws.Signal())
	}
	return -1, 0
}
