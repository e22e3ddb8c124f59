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

// TestKill: a process whose command line names the machine (-name superjolt-<id>,…) and whose pid
// is in the run directory's qemu.pid is killed; one that does not name it is left alone.
func TestKill(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("needs sh")
	}
	start := func(t *testing.T, name string) (*exec.Cmd, chan struct{}) {
		// sh waits on its stdin, a pipe nobody writes to, with "-name NAME" in its command line.
		cmd := exec.Command(sh, "-c", "read x", "-name", name)
		if _, err := cmd.StdinPipe(); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() // reaps it, so that /proc/PID goes when it dies
		t.Cleanup(func() { cmd.Process.Kill(); <-done })
		return cmd, done
	}
	for _, tt := range []struct {
		name, qemuName string
		killed         bool
	}{
		{"names the machine", "superjolt-vm-stale1,debug-threads=on", true},
		{"names another machine", "superjolt-vm-stale12,debug-threads=on", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cmd, done := start(t, tt.qemuName)
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "qemu.pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := vmm.Kill(dir, "vm-stale1"); err != nil {
				t.Fatal(err)
			}
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
	if err := vmm.Kill(t.TempDir(), "vm-stale1"); err != nil { // no pid file: nothing to do
		t.Fatal(err)
	}
}
