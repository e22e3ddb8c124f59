package tui

import (
	"fmt"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// A console left open keeps a bounded number of finished operations, the
// newest, and every operation under way.
func TestDataKeepsOpsBounded(t *testing.T) {
	d := newData()
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	d.putOp(model.Operation{ID: "op-running00", State: model.OpRunning, StartedAt: t0})
	for i := range 5000 {
		id := fmt.Sprintf("op-%010d", i)
		d.steps[id] = []opStep{{step: "recorded"}}
		d.putOp(model.Operation{ID: id, State: model.OpDone, StartedAt: t0.Add(time.Duration(i) * time.Second)})
	}
	if n := len(d.ops); n > maxOps+maxOps/10+1 {
		t.Fatalf("%d operations kept after 5,000, want at most %d", n, maxOps+maxOps/10+1)
	}
	if _, ok := d.ops["op-running00"]; !ok {
		t.Fatal("the operation under way was dropped")
	}
	if _, ok := d.ops[fmt.Sprintf("op-%010d", 4999)]; !ok {
		t.Fatal("the newest finished operation was dropped")
	}
	if _, ok := d.ops[fmt.Sprintf("op-%010d", 0)]; ok {
		t.Fatal("the oldest finished operation was kept")
	}
	if len(d.steps) > len(d.ops) {
		t.Fatalf("steps of %d operations kept for %d operations", len(d.steps), len(d.ops))
	}
}

func TestStepOf(t *testing.T) {
	for msg, want := range map[string]string{
		"restore of vm-abc123: stopped (20%)": "stopped",
		"backup of vm-abc123: frozen (20%)":   "frozen",
		"backup of vm-abc123 started":         "",
	} {
		if got := stepOf(msg); got != want {
			t.Errorf("stepOf(%q) = %q, want %q", msg, got, want)
		}
	}
}
