package systemd

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/systemd/nspawntest"
)

// TestSystemStopping: a VM unit's ExecStop, run by StopVM, sees a running
// system; run because the machine powers off, it sees it stopping (which is
// how the daemon tells a host shutdown from a stop it was asked for).
func TestSystemStopping(t *testing.T) {
	if nspawntest.Inside() {
		ctx := context.Background()
		m, err := NewManager(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer m.Close()
		exe, err := os.Executable()
		if err != nil {
			t.Fatal(err)
		}
		out := os.Getenv("SJ_OUT")
		for _, id := range []string{"vm-asked", "vm-shutdown"} {
			err := m.StartVM(ctx, VMUnit{
				VMID:        id,
				Command:     []string{"/usr/bin/sleep", "1000"},
				StopCommand: []string{exe},
				Env:         []string{"SJ_STOP_PROBE=" + out},
			})
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := m.StopVM(ctx, "vm-asked"); err != nil {
			t.Fatal(err)
		}
		return
	}
	dir := t.TempDir()
	out := filepath.Join(dir, "probe")
	c := nspawntest.Boot(t, nspawntest.Options{PrivateNetwork: true, Binds: []string{dir}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := c.Run(ctx, "env", nspawntest.EnvInside+"=1", "SJ_OUT="+out, mustExecutable(t), "-test.run=^TestSystemStopping$"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(out); string(b) != "running\n" {
		t.Fatalf("ExecStop of a stop asked for saw %q, want running", b)
	}
	if err := c.Poweroff(ctx); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(out)
	if got := strings.Fields(string(b)); len(got) != 2 || got[1] != "stopping" {
		t.Errorf("ExecStop at poweroff saw %q, want running then stopping\n%s", b, c.Output())
	}
}

func mustExecutable(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return exe
}
