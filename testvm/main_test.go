package testvm_test

import (
	"log/slog"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	// The btrfs pool logs every subvolume it makes through slog.Default; in these tests that is noise
	// (and it splits benchmark result lines), so only warnings get through.
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	os.Exit(m.Run())
}
