package vmm

import (
	"errors"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestProcessUsage reads the test process itself: resident memory, a start
// before now, and CPU time that grows by about what a busy loop burns.
func TestProcessUsage(t *testing.T) {
	before, err := ProcessUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if before.RSSBytes < 1<<20 {
		t.Errorf("RSSBytes = %d, want at least 1 MiB for a Go test binary", before.RSSBytes)
	}
	if before.Started <= 0 || before.Started > before.Sampled {
		t.Errorf("Started %v, Sampled %v: want 0 < Started <= Sampled", before.Started, before.Sampled)
	}
	const burn = 300 * time.Millisecond
	x := 0
	for end := time.Now().Add(burn); time.Now().Before(end); {
		x++
	}
	_ = x
	after, err := ProcessUsage(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// The loop ran on one core for burn, less whatever a busy host took
	// from it (other test binaries run beside this one); ticks are 10 ms.
	if d := after.CPUTime - before.CPUTime; d < burn/10 {
		t.Errorf("CPU time grew by %v over a %v busy loop, want most of it", d, burn)
	}
	if after.Started != before.Started {
		t.Errorf("Started changed from %v to %v", before.Started, after.Started)
	}
	if d := after.Sampled - before.Sampled; d < burn-20*time.Millisecond || d > 10*burn {
		t.Errorf("Sampled advanced by %v over a %v loop", d, burn)
	}
	if p := CPUPercent(before, after); p < 10 || p > 250 {
		t.Errorf("CPUPercent over a busy loop = %.1f, want about 100", p)
	}
	if p := CPUPercent(Usage{}, after); p <= 0 {
		t.Errorf("CPUPercent since the start = %.1f, want more than 0", p)
	}
}

// TestProcessUsageGone: a process that has exited (and been waited for)
// is not found.
func TestProcessUsageGone(t *testing.T) {
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Skipf("cannot run true: %v", err)
	}
	if _, err := ProcessUsage(cmd.Process.Pid); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("ProcessUsage of an exited process = %v, want fs.ErrNotExist", err)
	}
}

func TestCPUPercent(t *testing.T) {
	s := time.Second
	for _, tc := range []struct {
		name       string
		prev, cur  Usage
		wantPerCPU float64
	}{
		{"first sample: average since the start", Usage{}, Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, 50},
		{"since the previous sample", Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, Usage{CPUTime: 7 * s, Started: 10 * s, Sampled: 22 * s}, 100},
		{"two cores busy", Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, Usage{CPUTime: 9 * s, Started: 10 * s, Sampled: 22 * s}, 200},
		{"idle", Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 22 * s}, 0},
		{"pid reused by a new process", Usage{CPUTime: 50 * s, Started: 1 * s, Sampled: 100 * s}, Usage{CPUTime: 1 * s, Started: 200 * s, Sampled: 204 * s}, 25},
		{"no time passed", Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, Usage{CPUTime: 5 * s, Started: 10 * s, Sampled: 20 * s}, 0},
	} {
		if got := CPUPercent(tc.prev, tc.cur); math.Abs(got-tc.wantPerCPU) > 1e-9 {
			t.Errorf("%s: CPUPercent = %v, want %v", tc.name, got, tc.wantPerCPU)
		}
	}
}
