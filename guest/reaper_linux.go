package guest

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Reaper collects the exit status of every child of a PID 1, orphans
// included, and hands the status of a process started through it back to
// its starter. Reaping with wait4(-1) would otherwise steal the status that
// os.Process.Wait is waiting for, so while a Reaper runs, start children
// only with Reaper.StartProcess (ProcessRunner does when given one).
type Reaper struct {
	log *slog.Logger

	mu      sync.Mutex
	waiters map[int]chan unix.WaitStatus
}

// NewReaper returns a reaper; call Run to start it.
func NewReaper(log *slog.Logger) *Reaper {
	if log == nil {
		log = slog.Default()
	}
	return &Reaper{log: log, waiters: map[int]chan unix.WaitStatus{}}
}

// Run reaps on every SIGCHLD, and once a second in case one was missed,
// until ctx is done.
func (r *Reaper) Run(ctx context.Context) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGCHLD)
	defer signal.Stop(sig)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		r.reap()
		select {
		case <-ctx.Done():
			return
		case <-sig:
		case <-tick.C:
		}
	}
}

// reap collects every exited child. It holds mu, so a child started by
// StartProcess is always registered before its status can be collected.
func (r *Reaper) reap() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err != nil || pid <= 0 {
			return
		}
		if ch, ok := r.waiters[pid]; ok {
			delete(r.waiters, pid)
			ch <- ws // buffered 1
			continue
		}
		r.log.Debug("reaped orphan", "pid", pid, "status", int(ws))
	}
}

// StartProcess starts a child like os.StartProcess and returns a channel
// that receives its wait status once it exits. Do not call Wait on the
// returned process; Signal and Kill work.
func (r *Reaper) StartProcess(name string, argv []string, attr *os.ProcAttr) (*os.Process, <-chan unix.WaitStatus, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	p, err := os.StartProcess(name, argv, attr)
	if err != nil {
		return nil, nil, err
	}
	ch := make(chan unix.WaitStatus, 1)
	r.waiters[p.Pid] = ch
	return p, ch, nil
}
