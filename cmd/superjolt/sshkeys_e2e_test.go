package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/model"
)

// sshKeygen makes an ed25519 key pair at dir/name (and dir/name.pub) with
// ssh-keygen, and returns the public key's line.
func sshKeygen(tb testing.TB, dir, name string) string {
	tb.Helper()
	bin, err := exec.LookPath("ssh-keygen")
	if err != nil {
		tb.Skip("needs ssh-keygen (apt-get install openssh-client)")
	}
	p := filepath.Join(dir, name)
	if out, err := exec.Command(bin, "-q", "-t", "ed25519", "-N", "", "-C", name+"@test", "-f", p).CombinedOutput(); err != nil {
		tb.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	b, err := os.ReadFile(p + ".pub")
	if err != nil {
		tb.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// TestCLISSHKeys: an account's default key (set from stdin) and a key given
// to vm create --ssh-key reach root's authorized_keys in a real guest on
// its first boot, 0600 and owned by root; vm show says how to log in; a
// private key or a missing file is refused before anything is made.
func TestCLISSHKeys(t *testing.T) {
	needVMs(t)
	dir := t.TempDir()
	own, def := sshKeygen(t, dir, "k"), sshKeygen(t, dir, "ops")
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "keys", "--balance", "100")

	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"vm", "create", "--account", a.ID, "--tier", "nano", "--ssh-key", filepath.Join(dir, "k")}, filepath.Join(dir, "k") + " looks like a private key; pass the .pub file"},
		{[]string{"vm", "create", "--account", a.ID, "--tier", "nano", "--ssh-key", filepath.Join(dir, "nope.pub")}, "no such file"},
		{[]string{"account", "set", a.ID, "--ssh-key", filepath.Join(dir, "ops")}, "looks like a private key"},
		{[]string{"account", "set", a.ID}, "--ssh-key FILE or --no-ssh-keys"},
	} {
		r := d.sj(t, tt.args...)
		if r.code != exitUsage || !strings.Contains(r.stderr, tt.msg) || r.stdout != "" {
			t.Errorf("superjolt %s: exit %d, stderr %q; want exit %d saying %q", strings.Join(tt.args, " "), r.code, r.stderr, exitUsage, tt.msg)
		}
	}
	if vms := okJSON[[]model.VM](t, d, "vm", "list"); len(vms) != 0 {
		t.Fatalf("refused creates made VMs: %+v", vms)
	}

	// The account's default key, from stdin.
	cmd := d.cli("account", "set", a.ID, "--ssh-key", "-")
	cmd.Stdin = strings.NewReader(def + "\n")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil || !strings.Contains(out.String(), "SSH keys:") || !strings.Contains(out.String(), "SHA256:") {
		t.Fatalf("account set --ssh-key -: %v\n%s", err, out.String())
	}

	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", "keyed", "--ssh-key", filepath.Join(dir, "k.pub"))
	if want := []string{def, own}; !slices.Equal(vm.SSHKeys, want) {
		t.Errorf("VM keys = %q, want %q", vm.SSHKeys, want)
	}
	if got := d.ok(t, "vm", "exec", vm.ID, "--", "cat", "/root/.ssh/authorized_keys"); got != def+"\n"+own+"\n" {
		t.Errorf("authorized_keys in the guest = %q, want the account's key then the given one", got)
	}
	ls := d.ok(t, "vm", "exec", vm.ID, "--", "ls", "-lnd", "/root/.ssh", "/root/.ssh/authorized_keys")
	for _, want := range []string{"drwx------", "-rw-------"} {
		if !strings.Contains(ls, want) {
			t.Errorf("ls -lnd in the guest: no %s in\n%s", want, ls)
		}
	}
	for _, l := range strings.Split(strings.TrimSpace(ls), "\n") {
		if f := strings.Fields(l); len(f) < 4 || f[2] != "0" || f[3] != "0" {
			t.Errorf("not owned by 0:0: %q", l)
		}
	}
	show := d.ok(t, "vm", "show", vm.ID)
	t.Logf("vm show:\n%s", show)
	if !strings.Contains(show, "SSH:") || !strings.Contains(show, "ssh root@"+vm.IP.String()) {
		t.Errorf("vm show has no SSH line for %s:\n%s", vm.IP, show)
	}
}
