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

	"golang.org/x/sys/unix"
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

// TestInitSignalAction: the signals busybox's reboot, poweroff and halt
// send PID 1 (checked by running them under a PID namespace whose init
// traps signals) reboot or power off; others are not init's business.
func TestInitSignalAction(t *testing.T) {
	for _, tc := range []struct {
		sig  os.Signal
		want PowerAction
		ok   bool
	}{
		{unix.SIGTERM, Restart, true},  // reboot
		{unix.SIGINT, Restart, true},   // Ctrl-Alt-Del
		{unix.SIGUSR2, PowerOff, true}, // poweroff
		{unix.SIGUSR1, PowerOff, true}, // halt: a VM halted without power is useless
		{unix.SIGPWR, PowerOff, true},  // halt
		{unix.SIGHUP, 0, false},
		{unix.SIGQUIT, 0, false},
	} {
		got, ok := InitSignalAction(tc.sig)
		if ok != tc.ok || got != tc.want {
			t.Errorf("InitSignalAction(%v) = %v, %v; want %v, %v", tc.sig, got, ok, tc.want, tc.ok)
		}
	}
	for _, sig := range InitSignals {
		if _, ok := InitSignalAction(sig); !ok {
			t.Errorf("%v is in InitSignals but has no action", sig)
		}
	}
}

// TestBusyboxSignalsInit checks the convention InitSignalAction relies on:
// busybox's reboot, poweroff and halt signal PID 1 (here the init of a new
// PID namespace, a shell that traps signals).
func TestBusyboxSignalsInit(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	for _, bin := range []string{"busybox", "unshare"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("needs %s: %v", bin, err)
		}
	}
	script := `for s in TERM INT USR1 USR2 PWR; do trap "echo SIG$s" $s; done
busybox reboot; sleep 0.3; busybox poweroff; sleep 0.3; busybox halt; sleep 0.3`
	out, err := exec.Command("unshare", "--fork", "--pid", "--mount-proc", "bash", "-c", script).CombinedOutput()
	if err != nil {
		t.Skipf("cannot make a PID namespace here: %v: %s", err, out)
	}
	if got, want := strings.Fields(string(out)), []string{"SIGTERM", "SIGUSR2", "SIGUSR1"}; !slices.Equal(got, want) {
		t.Fatalf("busybox reboot, poweroff, halt sent %q to PID 1; want %q", got, want)
	}
}
