package guest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"slices"
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
