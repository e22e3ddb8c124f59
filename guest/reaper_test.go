package guest

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReaper runs the reaper in the test process made a child subreaper,
// so that orphans come to it as they would to PID 1: exec statuses must
// still reach their callers, and orphans must be reaped, not left zombies.
func TestReaper(t *testing.T) {
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Skipf("needs prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	r := NewReaper(testLogger(t))
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() { defer close(stopped); r.Run(ctx) }()
	defer func() { cancel(); <-stopped }()
	runner := &ProcessRunner{Reaper: r}

	// Many children at once, each with its own exit status, while the
	// reaper collects everything that exits.
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			res, err := runner.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", fmt.Sprintf("exit %d", i)}})
			if err != nil {
				errs <- err
			} else if res.ExitCode != i {
				errs <- fmt.Errorf("child %d: exit code %d: the status went astray", i, res.ExitCode)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	// An orphan: the shell exits at once, its background sleep is
	// reparented to us and must be reaped when it exits.
	res, err := runner.Run(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "sleep 0.2 </dev/null >/dev/null 2>&1 & echo $!; exit 4"}})
	if err != nil || res.ExitCode != 4 {
		t.Fatalf("Run = %s, %v", fmtExec(res), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("no pid in %q", res.Stdout)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			break // gone: reaped
		}
		if time.Now().After(deadline) {
			t.Fatalf("orphan %d not reaped: %s", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
