package guest

import (
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// DroppingWriter is a writer that never blocks: each Write (one log line,
// as slog handlers write them) is queued and copied to the underlying
// writer by a goroutine; when the queue is full the line is dropped, and
// the count is reported once the queue has drained. The agent logs through
// it because its log may end on a filesystem it froze (journald writes
// there): a blocked log write must never stall a request.
type DroppingWriter struct {
	w       io.Writer
	q       chan []byte
	pending atomic.Int64 // queued or being written

	mu      sync.Mutex
	dropped int
}

var _ io.Writer = (*DroppingWriter)(nil)

// NewDroppingWriter returns a DroppingWriter to w queueing up to n lines.
func NewDroppingWriter(w io.Writer, n int) *DroppingWriter {
	d := &DroppingWriter{w: w, q: make(chan []byte, n)}
	go d.drain()
	return d
}

// Write queues p, or drops it when the queue is full; it never fails.
func (d *DroppingWriter) Write(p []byte) (int, error) {
	line := append([]byte(nil), p...)
	d.pending.Add(1)
	select {
	case d.q <- line:
	default:
		d.pending.Add(-1)
		d.mu.Lock()
		d.dropped++
		d.mu.Unlock()
	}
	return len(p), nil
}

// Flush waits, at most timeout, until every queued line is written: for a
// process about to exit.
func (d *DroppingWriter) Flush(timeout time.Duration) {
	for deadline := time.Now().Add(timeout); d.pending.Load() > 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
}

func (d *DroppingWriter) drain() {
	for line := range d.q {
		_, _ = d.w.Write(line)
		if len(d.q) == 0 {
			// Caught up: say what was lost since the queue filled.
			d.mu.Lock()
			dropped := d.dropped
			d.dropped = 0
			d.mu.Unlock()
			if dropped > 0 {
				fmt.Fprintf(d.w, "level=WARN msg=\"log lines dropped while the log was blocked\" dropped=%d\n", dropped)
			}
		}
		d.pending.Add(-1)
	}
}
