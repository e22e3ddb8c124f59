package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// TestCLIAccountTokens: account token create, list and revoke against a
// real superjoltd (no VM): the secret is printed once and never again, not
// in a list, an event or the daemon's log.
func TestCLIAccountTokens(t *testing.T) {
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "alice")

	out := d.ok(t, "account", "token", "create", "alice", "--name", "laptop", "--expires", "30d")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	secretRE := regexp.MustCompile(`^sjt_tk-[a-z0-9]{10}_[A-Za-z0-9_-]{43}$`)
	if len(lines) != 3 || !strings.Contains(lines[0], `"laptop"`) || !strings.Contains(lines[0], a.ID) || !strings.Contains(lines[0], "full") ||
		!strings.Contains(lines[0], "expires") || !secretRE.MatchString(lines[1]) || !strings.Contains(lines[2], "cannot be shown again") {
		t.Fatalf("account token create:\n%s", out)
	}
	secret := lines[1]
	id := secret[len("sjt_") : len("sjt_")+13]
	// The clock is manual: move it, so that "newest first" has an order to
	// show (tokens made in the same instant are listed by id).
	d.ok(t, "debug", "clock", "advance", "1m")

	ct := okJSON[api.CreatedToken](t, d, "account", "token", "create", a.ID, "--name", "assistant", "--read-only")
	if !ct.Token.ReadOnly || ct.Token.Name != "assistant" || !ct.Token.ExpiresAt.IsZero() || !secretRE.MatchString(ct.Secret) ||
		!strings.HasPrefix(ct.Secret, "sjt_"+ct.Token.ID+"_") {
		t.Fatalf("account token create -o json = %+v", ct)
	}

	list := d.ok(t, "account", "token", "list", "alice")
	rows := strings.Split(strings.TrimSpace(list), "\n")
	if len(rows) != 3 || !strings.HasPrefix(rows[0], "NAME") || !strings.Contains(rows[0], "LAST USED") ||
		!strings.HasPrefix(rows[1], "assistant") || !strings.Contains(rows[1], "read-only") ||
		!strings.HasPrefix(rows[2], "laptop") || !strings.Contains(rows[2], id) || !strings.Contains(rows[2], "full") {
		t.Fatalf("account token list (newest first):\n%s", list)
	}
	ts := okJSON[[]model.Token](t, d, "account", "token", "list", a.ID)
	if len(ts) != 2 || ts[1].ID != id || !ts[1].ExpiresAt.Equal(ts[1].CreatedAt.Add(30*24*time.Hour)) {
		t.Fatalf("account token list -o json = %+v", ts)
	}

	if out := d.ok(t, "account", "token", "revoke", id); !strings.Contains(out, id) || !strings.Contains(out, "revoked") {
		t.Fatalf("account token revoke:\n%s", out)
	}
	if r := okJSON[model.Token](t, d, "account", "token", "revoke", id); r.RevokedAt.IsZero() {
		t.Fatalf("account token revoke twice -o json = %+v, want it still revoked", r)
	}
	if rows := strings.Split(strings.TrimSpace(d.ok(t, "account", "token", "list", a.ID)), "\n"); strings.HasSuffix(rows[2], " -") {
		t.Fatalf("the revoked token's row shows no revocation: %q", rows[2])
	}
	// Its name is free again.
	d.ok(t, "account", "token", "create", a.ID, "--name", "laptop")

	for _, tt := range []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"account", "token", "create", a.ID, "--name", "assistant"}, exitConflict, "already has a live token"},
		{[]string{"account", "token", "create", "ac-zzzzzz"}, exitNotFound, "ac-zzzzzz"},
		{[]string{"account", "token", "create", "nobody"}, exitNotFound, "nobody"},
		{[]string{"account", "token", "create", a.ID, "--expires", "a month"}, exitUsage, "30d"},
		{[]string{"account", "token", "create", a.ID, "--expires", "10s"}, exitUsage, "expires after"},
		{[]string{"account", "token", "create", a.ID, "--name", " x"}, exitUsage, "leading or trailing"},
		{[]string{"account", "token", "list", "ac-zzzzzz"}, exitNotFound, "ac-zzzzzz"},
		{[]string{"account", "token", "revoke", "tk-zzzzzzzzzz"}, exitNotFound, "tk-zzzzzzzzzz"},
		{[]string{"account", "token", "revoke", secret}, exitUsage, "not a token id"},
		{[]string{"account", "token", "revoke"}, exitUsage, "TOKEN-ID"},
	} {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := d.sj(t, tt.args...)
			if r.code != tt.code || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("exit %d, want %d; stderr %q should mention %q", r.code, tt.code, r.stderr, tt.msg)
			}
			if strings.Contains(r.stderr, secret[20:]) {
				t.Errorf("stderr shows the secret: %q", r.stderr)
			}
		})
	}

	events := d.ok(t, "events", "--after", "0", "--limit", "1000", "-o", "json")
	if !strings.Contains(events, "token.created") || !strings.Contains(events, "token.revoked") || !strings.Contains(events, `\"laptop\"`) {
		t.Fatalf("events do not tell of the tokens:\n%s", events)
	}
	d.stop(t)
	for what, s := range map[string]string{"events": events, "superjoltd's log": d.log.String()} {
		for _, sec := range []string{secret, ct.Secret} {
			if strings.Contains(s, sec[len(sec)-43:]) {
				t.Errorf("%s hold a secret", what)
			}
		}
	}
}

// TestRemoteEndToEnd: superjoltd --listen serves the API over TLS to real
// account tokens. Bob's token sees none of Alice's VM (not found, exactly
// as a missing one), Alice's read-only token lists it and can change
// nothing, her full token backs it up (an event names the token), the
// operator's verbs are refused, and a revoked token is refused.
func TestRemoteEndToEnd(t *testing.T) {
	needVMs(t)
	// The daemon's loopback is its namespace's: the tenant's CLI runs there.
	ns := newNetns(t, "sjremote")
	port := "8443"
	d := startDaemonIn(t, ns, nil, "--clock=manual", "--network=off", "--listen", "127.0.0.1:"+port, "--listen-name", "box.test")
	alice := okJSON[model.Account](t, d, "account", "create", "alice", "--balance", "50")
	okJSON[model.Account](t, d, "account", "create", "bob", "--balance", "50")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", "alice", "--tier", "nano", "--name", "web")
	secret := func(acct string, args ...string) string {
		return okJSON[api.CreatedToken](t, d, append([]string{"account", "token", "create", acct}, args...)...).Secret
	}
	aliceFull, aliceRO, bobTok := secret("alice", "--name", "laptop"), secret("alice", "--name", "reader", "--read-only"), secret("bob", "--name", "bobs")
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, []byte(d.ok(t, "ca")), 0o644); err != nil {
		t.Fatal(err)
	}
	remote := func(token string, args ...string) result {
		t.Helper()
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, filepath.Join(d.bin, "superjolt"),
			"--server", "https://127.0.0.1:" + port, "--token", token, "--ca", ca}, args...)...)
		cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET=/nonexistent")
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		var ee *exec.ExitError
		if err != nil && !errors.As(err, &ee) {
			t.Fatal(err)
		}
		return result{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
	}

	if r := remote(bobTok, "vm", "list"); r.code != 0 || strings.Contains(r.stdout, vm.ID) {
		t.Fatalf("bob's vm list: exit %d %q %q, want his (empty) list", r.code, r.stdout, r.stderr)
	}
	missing := remote(bobTok, "vm", "show", "vm-zzzzzz")
	theirs := remote(bobTok, "vm", "show", vm.ID)
	if theirs.code != exitNotFound || strings.ReplaceAll(theirs.stderr, vm.ID, "vm-zzzzzz") != missing.stderr {
		t.Fatalf("bob's vm show of alice's VM: exit %d %q; of a missing one: %q: want the same not found", theirs.code, theirs.stderr, missing.stderr)
	}
	if r := remote(bobTok, "backup", "create", vm.ID); r.code != exitNotFound {
		t.Fatalf("bob's backup of alice's VM: exit %d %q, want not found", r.code, r.stderr)
	}
	if r := remote(aliceRO, "vm", "list"); r.code != 0 || !strings.Contains(r.stdout, vm.ID) {
		t.Fatalf("alice's read-only vm list: exit %d %q %q", r.code, r.stdout, r.stderr)
	}
	if r := remote(aliceRO, "vm", "stop", vm.ID); r.code != exitAuth || !strings.Contains(r.stderr, "read-only") {
		t.Fatalf("alice's read-only vm stop: exit %d %q, want refused as read-only", r.code, r.stderr)
	}
	if r := remote(aliceFull, "account", "topup", "alice", "100"); r.code != exitAuth || !strings.Contains(r.stderr, "operator") {
		t.Fatalf("a top-up with alice's token: exit %d %q, want the operator's", r.code, r.stderr)
	}
	bk := remote(aliceFull, "backup", "create", vm.ID, "-o", "json")
	if bk.code != 0 || !strings.Contains(bk.stdout, `"consistency": "frozen"`) {
		t.Fatalf("alice's backup create over the remote API: exit %d %q %q", bk.code, bk.stdout, bk.stderr)
	}
	if ev := d.ok(t, "events", "--tail", "20"); !strings.Contains(ev, "laptop") {
		t.Fatalf("no event names the token laptop:\n%s", ev)
	}
	d.ok(t, "account", "token", "revoke", strings.Split(aliceFull, "_")[1])
	if r := remote(aliceFull, "vm", "list"); r.code != exitAuth || !strings.Contains(r.stderr, "revoked") {
		t.Fatalf("a revoked token: exit %d %q, want refused", r.code, r.stderr)
	}
	_ = alice
}
