package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/systemd/nspawntest"
)

// TestCLIInstall runs the real `superjolt install` and `--uninstall`, from
// the directory of freshly built binaries (the default --from), inside a
// booted systemd. --no-start: starting the real daemon needs a pool and the
// built-in image, which the daemon's own tests cover; systemd's package
// tests start a stand-in daemon through the same code.
func TestCLIInstall(t *testing.T) {
	bin := binaries(t)
	c := nspawntest.Boot(t, nspawntest.Options{PrivateNetwork: true, BindsRO: []string{bin}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sj := filepath.Join(bin, "superjolt")

	out, err := c.Run(ctx, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sj, "install")
	if err == nil || !strings.Contains(out, "needs root") {
		t.Errorf("install as nobody: %v\n%s", err, out)
	}
	out, err = c.Run(ctx, sj, "install", "--no-start", "--bin-dir", "/opt/sj/bin")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"installed /opt/sj/bin/superjolt-agent", "installed /opt/sj/bin/superjoltd", "enabled superjoltd.service"} {
		if !strings.Contains(out, want) {
			t.Errorf("install output lacks %q:\n%s", want, out)
		}
	}
	if out, err := c.Run(ctx, "systemctl", "is-enabled", "superjoltd"); err != nil || strings.TrimSpace(out) != "enabled" {
		t.Errorf("is-enabled: %q, %v", out, err)
	}
	if out, _ := c.Run(ctx, "systemctl", "is-active", "superjoltd"); strings.TrimSpace(out) != "inactive" {
		t.Errorf("--no-start started it: %q", out)
	}
	unit, err := os.ReadFile(filepath.Join(c.Root(), "etc/systemd/system/superjoltd.service"))
	if err != nil || !strings.Contains(string(unit), "ExecStart=/opt/sj/bin/superjoltd --socket-group superjolt") {
		t.Errorf("superjoltd.service: %v\n%s", err, unit)
	}
	// The installed CLI runs and knows its version.
	if out, err := c.Run(ctx, "/opt/sj/bin/superjolt", "--version"); err != nil {
		t.Errorf("installed superjolt: %v\n%s", err, out)
	}

	out, err = c.Run(ctx, "/opt/sj/bin/superjolt", "install", "--uninstall", "--bin-dir", "/opt/sj/bin")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "left the state in /var/lib/superjolt") {
		t.Errorf("uninstall output does not say where the state is:\n%s", out)
	}
	for _, f := range []string{"opt/sj/bin/superjolt", "opt/sj/bin/superjoltd", "etc/systemd/system/superjoltd.service"} {
		if _, err := os.Stat(filepath.Join(c.Root(), f)); !os.IsNotExist(err) {
			t.Errorf("/%s after uninstall: %v", f, err)
		}
	}
	if _, err := os.Stat(filepath.Join(c.Root(), "var/lib/superjolt")); err != nil {
		t.Errorf("uninstall removed the state directory: %v", err)
	}
}
