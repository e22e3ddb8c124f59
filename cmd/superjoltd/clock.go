package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superjolt/superjolt/clock"
)

// manualClockFile keeps a manual clock's time across restarts, so that a
// demo or test daemon advanced by days does not fall back to the wall clock
// (time never runs back for the appliance's stored deadlines).
const manualClockFile = "manual-clock"

// openManualClock returns a manual clock starting at the later of the wall
// clock and the time saved in stateDir.
func openManualClock(stateDir string) (*clock.Manual, error) {
	start := time.Now().UTC().Truncate(time.Second)
	b, err := os.ReadFile(filepath.Join(stateDir, manualClockFile))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("manual clock: %w", err)
	default:
		saved, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("manual clock: %s: %w", filepath.Join(stateDir, manualClockFile), err)
		}
		if saved.After(start) {
			start = saved
		}
	}
	return clock.NewManual(start), nil
}

// saveManualClock writes the clock's time to stateDir every second while it
// changes, and once more when ctx ends.
func saveManualClock(ctx context.Context, c *clock.Manual, stateDir string, log *slog.Logger) {
	path := filepath.Join(stateDir, manualClockFile)
	var saved time.Time
	save := func() {
		now := c.Now()
		if now.Equal(saved) {
			return
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(now.Format(time.RFC3339Nano)+"\n"), 0o600); err != nil {
			log.Warn("manual clock: save", "err", err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			log.Warn("manual clock: save", "err", err)
			return
		}
		saved = now
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		save()
		select {
		case <-ctx.Done():
			save()
			return
		case <-t.C:
		}
	}
}
