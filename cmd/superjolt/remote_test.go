package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/proxy"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
)

// tokens stands in for the appliance's account tokens, which live on
// another branch: the remote API only asks an Authenticator.
type tokens map[string]model.Principal

func (f tokens) Authenticate(_ context.Context, secret string) (model.Principal, error) {
	if p, ok := f[secret]; ok {
		return p, nil
	}
	return model.Principal{}, fmt.Errorf("%w: no such token", model.ErrUnauthenticated)
}

// cli runs the CLI in this process with args and returns its exit code,
// stdout and the message main would print.
func cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	root := newRootCommand()
	var out, errb bytes.Buffer
	root.opts.stdout, root.opts.stderr = &out, &errb
	root.cmd.SetOut(&out)
	root.cmd.SetErr(&errb)
	root.cmd.SetArgs(args)
	ctx := context.Background()
	err := root.cmd.ExecuteContext(ctx)
	msg := ""
	if err != nil {
		msg = message(err)
	}
	return exitCode(ctx, err, root.ran), out.String(), msg
}

// TestCLIRemote: `superjolt --server --token --ca` reaches the remote API
// over TLS with a certificate from the local CA, pinned, sees its own
// account only, and says what to do on a bad token or an operator's verb.
// The server is the real remote handler (server.NewRemote, Tenant scoping)
// over a real appliance, on loopback; tokens come from a fake
// Authenticator until the tokens branch stores real ones.
func TestCLIRemote(t *testing.T) {
	pool := btrfstest.NewPool(t, 0)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	app, err := appliance.New(ctx, appliance.Options{Store: st, Pool: pool, Clock: clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)),
		RunDir: t.TempDir(), Subnet: netip.MustParsePrefix("10.78.0.0/24"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	var vms [2]string
	var accts [2]string
	for i, name := range []string{"alice", "bob"} {
		a, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: name, Balance: model.Credit})
		if err != nil {
			t.Fatal(err)
		}
		accts[i] = a.ID
		err = st.Update(ctx, func(tx *store.Tx) error {
			id, err := tx.NewID(model.KindVM)
			vms[i] = id
			if err != nil {
				return err
			}
			at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
			return tx.PutVM(model.VM{ID: id, AccountID: a.ID, Name: name + "-web", Tier: "nano", Image: appliance.DefaultImage,
				State: model.StateStopped, CreatedAt: at, StoppedAt: at, BilledUntil: at})
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	ca, err := proxy.LoadOrCreateCA(filepath.Join(dir, "ca"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.IssueFor([]string{"appliance.test"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	rm := server.NewRemote(app, server.RemoteOptions{
		Auth:     tokens{"sjt_alice": {AccountID: accts[0], TokenID: "tk-aaaaaaaaaa", TokenName: "laptop"}},
		Recorder: app, Logger: slog.New(slog.DiscardHandler),
	}, server.Options{Logger: slog.New(slog.DiscardHandler), CACert: ca.CertPEM()})
	ts := httptest.NewUnstartedServer(rm)
	ts.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}}
	ts.StartTLS()
	t.Cleanup(ts.Close)

	remote := []string{"--server", ts.URL, "--token", "sjt_alice", "--ca", caFile}
	code, out, msg := cli(t, append(remote, "vm", "list", "-o", "json")...)
	if code != 0 || !strings.Contains(out, vms[0]) || strings.Contains(out, vms[1]) {
		t.Fatalf("vm list = %d %s %s; want alice's VM only", code, out, msg)
	}
	// Names resolve within the account: bob's VM is not found, by name or id.
	if code, out, msg := cli(t, append(remote, "vm", "show", "alice-web")...); code != 0 || !strings.Contains(out, vms[0]) {
		t.Errorf("vm show alice-web = %d %s %s", code, out, msg)
	}
	for _, ref := range []string{vms[1], "bob-web"} {
		if code, _, msg := cli(t, append(remote, "vm", "show", ref)...); code != exitNotFound {
			t.Errorf("vm show %s (bob's) = %d %s, want exit %d", ref, code, msg, exitNotFound)
		}
	}
	if code, _, msg := cli(t, append(remote, "account", "topup", accts[0], "5")...); code != exitAuth || !strings.Contains(msg, "is the operator's") {
		t.Errorf("account topup = %d %q, want exit %d and the operator's", code, msg, exitAuth)
	}
	bad := []string{"--server", ts.URL, "--token", "sjt_guess", "--ca", caFile, "vm", "list"}
	if code, _, msg := cli(t, bad...); code != exitAuth || !strings.Contains(msg, "unknown, revoked or expired") || !strings.Contains(msg, "superjolt account token create") {
		t.Errorf("a bad token = %d %q, want exit %d and how to get a new one", code, msg, exitAuth)
	}
	// Pinned: without --ca the system's roots do not know the local CA.
	if code, _, msg := cli(t, "--server", ts.URL, "--token", "sjt_alice", "vm", "list"); code != exitUnavailable || !strings.Contains(msg, "certificate") {
		t.Errorf("without --ca = %d %q, want exit %d naming the certificate", code, msg, exitUnavailable)
	}
	// Another CA's file is not trusted either.
	other, err := proxy.LoadOrCreateCA(filepath.Join(dir, "other"))
	if err != nil {
		t.Fatal(err)
	}
	otherFile := filepath.Join(dir, "other.pem")
	if err := os.WriteFile(otherFile, other.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, _, msg := cli(t, "--server", ts.URL, "--token", "sjt_alice", "--ca", otherFile, "vm", "list"); code != exitUnavailable {
		t.Errorf("with another CA = %d %q, want exit %d", code, msg, exitUnavailable)
	}
	if code, _, msg := cli(t, "--server", ts.URL, "vm", "list"); code != exitUsage || !strings.Contains(msg, "--token") {
		t.Errorf("--server without a token = %d %q, want exit %d", code, msg, exitUsage)
	}
	if code, _, msg := cli(t, "--server", "http://"+strings.TrimPrefix(ts.URL, "https://"), "--token", "x", "vm", "list"); code != exitUsage || !strings.Contains(msg, "https://") {
		t.Errorf("an http:// server = %d %q, want exit %d", code, msg, exitUsage)
	}
	// The environment does the same as the flags.
	t.Setenv("SUPERJOLT_SERVER", ts.URL)
	t.Setenv("SUPERJOLT_TOKEN", "sjt_alice")
	t.Setenv("SUPERJOLT_CA", caFile)
	if code, out, msg := cli(t, "account", "list", "-o", "json"); code != 0 || !strings.Contains(out, accts[0]) || strings.Contains(out, accts[1]) {
		t.Errorf("account list from the environment = %d %s %s; want alice's account only", code, out, msg)
	}
	if code, out, msg := cli(t, "--help"); code != 0 || strings.Contains(out, "sjt_alice") {
		t.Errorf("--help = %d %s; it must not print the token", code, msg)
	}
}
