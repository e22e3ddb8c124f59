package guest

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gateWriter blocks every Write until open is closed.
type gateWriter struct {
	open chan struct{}
	mu   sync.Mutex
	b    strings.Builder
}

func (g *gateWriter) Write(p []byte) (int, error) {
	<-g.open
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.Write(p)
}

func (g *gateWriter) String() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.b.String()
}

func TestDroppingWriter(t *testing.T) {
	g := &gateWriter{open: make(chan struct{})}
	w := NewDroppingWriter(g, 3)
	within(t, 2*time.Second, "writes to a blocked log", func() {
		for i := range 10 {
			fmt.Fprintf(w, "line %d\n", i)
		}
	})
	close(g.open)
	waitFor := func(s string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for !strings.Contains(g.String(), s) {
			if time.Now().After(deadline) {
				t.Fatalf("log never showed %q: %q", s, g.String())
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitFor("dropped=")
	fmt.Fprintf(w, "after\n")
	waitFor("after")
	// Some lines got through, in order; every other one was counted as
	// dropped; the report comes after them, then logging goes on.
	lines := strings.Split(strings.TrimSuffix(g.String(), "\n"), "\n")
	last, kept := -1, 0
	for len(lines) > 0 && strings.HasPrefix(lines[0], "line ") {
		var n int
		if _, err := fmt.Sscanf(lines[0], "line %d", &n); err != nil || n <= last {
			t.Fatalf("line %q out of order in %q", lines[0], g.String())
		}
		last, kept, lines = n, kept+1, lines[1:]
	}
	if kept < 3 || kept > 4 {
		t.Fatalf("%d lines got through, want 3 (the queue) or 4 (one more already taken): %q", kept, g.String())
	}
	want := []string{fmt.Sprintf("level=WARN msg=\"log lines dropped while the log was blocked\" dropped=%d", 10-kept), "after"}
	if !slices.Equal(lines, want) {
		t.Errorf("after the kept lines the log is %q, want %q", lines, want)
	}
}

func TestDroppingWriterFlush(t *testing.T) {
	g := &gateWriter{open: make(chan struct{})}
	w := NewDroppingWriter(g, 10)
	fmt.Fprintf(w, "one\n")
	start := time.Now()
	w.Flush(50 * time.Millisecond) // blocked: gives up at the timeout
	if took := time.Since(start); took < 50*time.Millisecond || took > 2*time.Second {
		t.Errorf("Flush on a blocked log took %s, want about 50ms", took)
	}
	fmt.Fprintf(w, "two\n")
	close(g.open)
	w.Flush(5 * time.Second)
	if got := g.String(); got != "one\ntwo\n" {
		t.Errorf("after Flush the log is %q, want both lines", got)
	}
}
