package main

import (
	"testing"
	"time"
)

func TestExecTimeoutMessage(t *testing.T) {
	for _, c := range []struct {
		given time.Duration
		want  string
	}{
		{0, "killed after the 60 s default; use --timeout (up to 10m)"},
		{2 * time.Second, "killed after --timeout 2 s; use a longer --timeout (up to 10m)"},
		{90 * time.Second, "killed after --timeout 1m30s; use a longer --timeout (up to 10m)"},
		{5 * time.Minute, "killed after --timeout 5m; use a longer --timeout (up to 10m)"},
	} {
		if got := timeoutMessage(c.given); got != c.want {
			t.Errorf("timeoutMessage(%s) = %q, want %q", c.given, got, c.want)
		}
	}
}
