package vmm

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// Usage is what a process has used so far, as /proc tells it.
type Usage struct {
	// RSSBytes is its resident memory: for QEMU, the guest's memory it has
	// touched plus QEMU's own.
	RSSBytes int64
	// CPUTime is the CPU time (user and system) of all its threads.
	CPUTime time.Duration
	// Started and Sampled are when the process started and when it was
	// read, both since the host booted (the clock of /proc/uptime, which
	// goes on in a suspend): their difference is its age, and the CPU
	// time of two samples over the difference of their Sampled is how
	// busy it was in between, whatever the daemon's clock says.
	Started, Sampled time.Duration
}

// userHZ is the unit of the clock-tick fields of /proc/PID/stat: USER_HZ,
// 100 on every Linux architecture (the kernel converts to it for /proc).
const userHZ = 100

// ProcessUsage reads the resident memory and CPU time of process pid from
// /proc/PID/stat, and the host's uptime. A process that is gone gives an
// error that wraps fs.ErrNotExist.
func ProcessUsage(pid int) (Usage, error) {
	var u Usage
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	up, err := os.ReadFile("/proc/uptime")
	if err != nil {
		return u, err
	}
	// The second field, the command name, is in parentheses and may hold
	// spaces and parentheses itself: the fields that follow are after the
	// last ')'. They start at field 3 (state); utime and stime are fields
	// 14 and 15, starttime 22, rss (pages) 24 (proc(5)).
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return u, fmt.Errorf("vmm: /proc/%d/stat does not parse: no ')' after the command name", pid)
	}
	f := strings.Fields(s[i+1:])
	const first = 3
	field := func(n int) (int64, error) {
		if n-first >= len(f) {
			return 0, fmt.Errorf("vmm: /proc/%d/stat has %d fields, not the %d it needs", pid, len(f)+first-1, n)
		}
		v, err := strconv.ParseInt(f[n-first], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("vmm: /proc/%d/stat field %d: %w", pid, n, err)
		}
		return v, nil
	}
	var utime, stime, start, rss int64
	for _, x := range []struct {
		n int
		v *int64
	}{{14, &utime}, {15, &stime}, {22, &start}, {24, &rss}} {
		if *x.v, err = field(x.n); err != nil {
			return u, err
		}
	}
	upFields := strings.Fields(string(up))
	if len(upFields) == 0 {
		return u, fmt.Errorf("vmm: /proc/uptime is empty")
	}
	upSec, err := strconv.ParseFloat(upFields[0], 64)
	if err != nil {
		return u, fmt.Errorf("vmm: /proc/uptime: %w", err)
	}
	tick := time.Second / userHZ
	u.RSSBytes = rss * int64(os.Getpagesize())
	u.CPUTime = time.Duration(utime+stime) * tick
	u.Started = time.Duration(start) * tick
	u.Sampled = time.Duration(upSec * float64(time.Second))
	return u, nil
}

// CPUPercent is how busy a process was between two of its samples, prev
// and cur: CPU time over the time between them, 100 for one core kept
// busy. With no earlier sample (prev zero, or of an earlier process with
// the same pid) it is the average since the process started. It is 0 when
// no time has passed that the host's uptime can measure (10 ms).
func CPUPercent(prev, cur Usage) float64 {
	from, cpu := cur.Started, cur.CPUTime
	if prev.Started == cur.Started && prev.Sampled > 0 && prev.CPUTime <= cur.CPUTime {
		from, cpu = prev.Sampled, cur.CPUTime-prev.CPUTime
	}
	wall := cur.Sampled - from
	if wall <= 0 {
		return 0
	}
	return 100 * cpu.Seconds() / wall.Seconds()
}
