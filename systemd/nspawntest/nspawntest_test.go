package nspawntest

import (
	"context"
	osexec "os/exec"
	"strings"
	"testing"
	"time"
)

func TestBoot(t *testing.T) {
	if Inside() {
		out, err := osexec.Command("systemctl", "is-system-running").CombinedOutput()
		if err != nil && !strings.Contains(string(out), "degraded") {
			t.Fatalf("inside: %s: %v", out, err)
		}
		return
	}
	start := time.Now()
	c := Boot(t, Options{PrivateNetwork: true})
	t.Logf("booted in %v, PID %d", time.Since(start), c.PID())
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := c.Run(ctx, "cat", "/proc/1/comm")
	if err != nil || strings.TrimSpace(out) != "systemd" {
		t.Fatalf("PID 1 inside is %q, %v; want systemd", out, err)
	}
	if out, err := c.Run(ctx, "ip", "-o", "link"); err != nil || strings.Count(out, "\n") != 1 {
		t.Errorf("private network: want only lo, got %q (%v)", out, err)
	}
	c.RunTest(ctx, t, "TestBoot")
	if err := c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(ctx, "true"); err == nil {
		t.Error("the container still runs commands after Poweroff")
	}
}
