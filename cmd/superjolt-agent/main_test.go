package main

import "testing"

func TestRunArgs(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want int
	}{
		{"version", []string{"version"}, 0},
		{"help", []string{"-h"}, 0},
		{"unknown command", []string{"dance"}, 2},
		{"unknown flag", []string{"-frobnicate"}, 2},
		{"bad log level", []string{"-log-level=loud", "version"}, 2},
		{"selftest without what", []string{"selftest"}, 2},
		{"selftest of something else", []string{"selftest", "disk"}, 2},
		{"version with extra args", []string{"version", "x"}, 2},
		{"vsock port out of range", []string{"-vsock-port=4294967296", "version"}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := run(tt.args); got != tt.want {
				t.Errorf("run(%q) = %d, want %d", tt.args, got, tt.want)
			}
		})
	}
}
