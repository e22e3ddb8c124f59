package guest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestUserProcesses(t *testing.T) {
	cmd := exec.Command("sleep", "5")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	got := userProcesses()
	if !slices.Contains(got, cmd.Process.Pid) {
		t.Errorf("userProcesses() = %v misses the child %d", got, cmd.Process.Pid)
	}
	if slices.Contains(got, os.Getpid()) || slices.Contains(got, 1) {
		t.Errorf("userProcesses() = %v lists PID 1 or itself", got)
	}
}

func TestInitPowerRefusesOutsidePID1(t *testing.T) {
	if os.Getpid() == 1 {
		t.Skip("the test itself runs as PID 1")
	}
	after, err := InitPower(testLogger(t))(context.Background(), PowerOff)
	if !errors.Is(err, ErrUnsupported) || after != nil {
		t.Fatalf("InitPower as pid %d = %v, %v; want ErrUnsupported", os.Getpid(), after != nil, err)
	}
}

func TestCommandPower(t *testing.T) {
	tests := []struct {
		name    string
		tools   []string // fake commands in PATH
		action  PowerAction
		wantRan string // what the fake recorded
		wantErr error
	}{
		{"systemctl first", []string{"systemctl", "poweroff"}, PowerOff, "systemctl poweroff", nil},
		{"systemctl reboot", []string{"systemctl"}, Restart, "systemctl reboot", nil},
		{"poweroff without systemd", []string{"poweroff"}, PowerOff, "poweroff", nil},
		{"reboot without systemd", []string{"reboot"}, Restart, "reboot", nil},
		{"nothing to call", nil, PowerOff, "", ErrUnsupported},
		{"wrong tool only", []string{"poweroff"}, Restart, "", ErrUnsupported},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			record := filepath.Join(dir, "ran")
			for _, tool := range tt.tools {
				script := "#!/bin/sh\necho " + tool + " \"$@\" > " + record + "\n"
				if err := os.WriteFile(filepath.Join(dir, tool), []byte(script), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			// Only the fakes are reachable: the real systemctl must never run.
			t.Setenv("PATH", dir)
			after, err := CommandPower(context.Background(), tt.action)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("CommandPower = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if _, err := os.Stat(record); err == nil {
				t.Fatal("the command ran before the answer could go out")
			}
			after()
			b, err := os.ReadFile(record)
			if err != nil {
				t.Fatalf("the command did not run: %v", err)
			}
			if got := strings.TrimSpace(string(b)); got != tt.wantRan {
				t.Errorf("ran %q, want %q", got, tt.wantRan)
			}
		})
	}
}
