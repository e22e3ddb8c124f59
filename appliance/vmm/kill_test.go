package vmm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/vmm"
)

// TestKillStale: a process whose command line names the machine and whose pid is in the run
// directory's qemu.pid is killed; one that does not name it is left alone.
func TestKillStale(t *testing.T) {
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("needs sleep (coreutils)")
	}
	start := func(t *testing.T, argv0 string) (*exec.Cmd, chan struct{}) {
		cmd := &exec.Cmd{Path: sleep, Args: []string{argv0, "60"}}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // reaps it, so that /proc/PID goes when it dies
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		return cmd, done
	}
	for _, tt := range []struct {
		name, argv0 string
		killed      bool
	}{
		{"names the machine", "superjolt-vm-stale1,debug-threads=on", true},
		{"another process", "sleep", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd, done := start(t, tt.argv0)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			vmm.KillStale(dir, "vm-stale1", nil)
			select {
			case <-done:
				if !tt.killed {
					t.Error("a process that does not name the machine was killed")
				}
			case <-time.After(500 * time.Millisecond):
				if tt.killed {
					t.Error("the stale QEMU is still running")
				}
			}
		})
	}
	vmm.KillStale(t.TempDir(), "vm-stale1", nil) // no pid file: nothing to do
}
