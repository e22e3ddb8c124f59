package guest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestProcessRunner(t *testing.T) {
	tests := []struct {
		name     string
		req      ExecRequest
		want     ExecResult
		maxTook  time.Duration
		checkOut func(t *testing.T, res ExecResult)
	}{
		{
			name: "exit status",
			req:  ExecRequest{Path: "/bin/sh", Args: []string{"-c", "exit 7"}},
			want: ExecResult{ExitCode: 7},
		},
		{
			name: "PATH lookup and args",
			req:  ExecRequest{Path: "printf", Args: []string{"%s|%s", "a b", "c"}},
			want: ExecResult{Stdout: []byte("a b|c")},
		},
		{
			name: "stdin",
			req:  ExecRequest{Path: "cat", Stdin: []byte("line1\nline2\n")},
			want: ExecResult{Stdout: []byte("line1\nline2\n")},
		},
		{
			name: "program ignores stdin",
			req:  ExecRequest{Path: "true", Stdin: bytes.Repeat([]byte("x"), 1<<20)},
			want: ExecResult{},
		},
		{
			name:    "timeout kills",
			req:     ExecRequest{Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 30"}, Timeout: 200 * time.Millisecond},
			want:    ExecResult{ExitCode: -1, Signal: int(syscall.SIGKILL), TimedOut: true, Stdout: []byte("started\n")},
			maxTook: 5 * time.Second,
		},
		{
			name:    "descendant keeps the pipes open",
			req:     ExecRequest{Path: "/bin/sh", Args: []string{"-c", "sleep 3 & echo bye"}},
			want:    ExecResult{Stdout: []byte("bye\n")},
			maxTook: 5 * time.Second,
		},
		{
			name: "output capped",
			req:  ExecRequest{Path: "/bin/sh", Args: []string{"-c", "head -c 3000000 /dev/zero; head -c 10 /dev/zero >&2"}},
			checkOut: func(t *testing.T, res ExecResult) {
				if len(res.Stdout) != MaxExecOutput || !res.Truncated || len(res.Stderr) != 10 || res.ExitCode != 0 {
					t.Errorf("got stdout %d bytes, stderr %d, truncated %v, exit %d; want %d, 10, true, 0",
						len(res.Stdout), len(res.Stderr), res.Truncated, res.ExitCode, MaxExecOutput)
				}
			},
		},
		{
			name: "output exactly at the cap",
			req:  ExecRequest{Path: "head", Args: []string{"-c", "1048576", "/dev/zero"}},
			checkOut: func(t *testing.T, res ExecResult) {
				if len(res.Stdout) != MaxExecOutput || res.Truncated {
					t.Errorf("got %d bytes, truncated %v; want %d, false", len(res.Stdout), res.Truncated, MaxExecOutput)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &ProcessRunner{}
			start := time.Now()
			res, err := r.Run(context.Background(), tt.req)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if tt.maxTook > 0 && time.Since(start) > tt.maxTook {
				t.Errorf("took %s, want at most %s", time.Since(start), tt.maxTook)
			}
			if tt.checkOut != nil {
				tt.checkOut(t, res)
				return
			}
			if !execEqual(res, tt.want) {
				t.Errorf("Run = %s, want %s", fmtExec(res), fmtExec(tt.want))
			}
		})
	}
}

func TestProcessRunnerCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := (&ProcessRunner{}).Run(ctx, ExecRequest{Path: "sleep", Args: []string{"30"}})
	if !errors.Is(err, ErrInternal) || !strings.Contains(err.Error(), "cancelled") {
		t.Fatalf("Run with a cancelled ctx = %v", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("cancel took %s", took)
	}
}

func TestProcessRunnerTimeoutKillsGroup(t *testing.T) {
	res, err := (&ProcessRunner{}).Run(context.Background(), ExecRequest{
		Path:    "/bin/sh",
		Args:    []string{"-c", "sleep 30 & echo $!; wait"},
		Timeout: 300 * time.Millisecond,
	})
	if err != nil || !res.TimedOut {
		t.Fatalf("Run = %s, %v; want a timeout", fmtExec(res), err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(res.Stdout)))
	if err != nil {
		t.Fatalf("no pid in %q", res.Stdout)
	}
	// The orphaned sleep is killed with its group (it may linger as a
	// zombie until its new parent reaps it).
	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("sleep %d outlived the timeout: %s", pid, b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestProcessRunnerStartErrors(t *testing.T) {
	notExec := filepath.Join(t.TempDir(), "not-executable")
	if err := os.WriteFile(notExec, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/nonexistent", notExec, "/etc", "nothing-named-this"} {
		t.Run(path, func(t *testing.T) {
			_, err := (&ProcessRunner{}).Run(context.Background(), ExecRequest{Path: path})
			if !errors.Is(err, ErrExec) {
				t.Fatalf("Run(%s) = %v, want ErrExec", path, err)
			}
		})
	}
}
