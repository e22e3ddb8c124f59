package main

import (
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
