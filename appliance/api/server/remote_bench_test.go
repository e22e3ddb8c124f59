package server

import (
	"context"
	"encoding/pem"
	"log/slog"
	"net"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/clock"
)

// BenchmarkListVMs measures `GET /v1/vms` of one account's 100 VMs (on a
// box with 200) through the three doors, in one run: the operator's UNIX
// socket (no authentication, no scoping), and the remote API over HTTPS
// with an account token (authentication, the tenant's filter, TLS on a
// kept-alive connection) with a real token and with the fixture's
// authenticator (to tell the token check's cost from the rest's).
func BenchmarkListVMs(b *testing.B) {
	app, st := newAppliance(b, clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)))
	ctx := context.Background()
	var accts []string
	for _, name := range []string{"alice", "bob"} {
		acct, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: name, Balance: 5 * model.Credit})
		if err != nil {
			b.Fatal(err)
		}
		accts = append(accts, acct.ID)
		err = st.Update(ctx, func(tx *store.Tx) error {
			for range 100 {
				id, err := tx.NewID(model.KindVM)
				if err != nil {
					return err
				}
				at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC)
				if err := tx.PutVM(model.VM{ID: id, AccountID: acct.ID, Name: id, Tier: "nano", Image: appliance.DefaultImage,
					State: model.StateStopped, CreatedAt: at, StoppedAt: at, BilledUntil: at}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	quiet := Options{Logger: slog.New(slog.DiscardHandler)}
	_, secret, err := app.CreateToken(ctx, appliance.CreateTokenRequest{AccountID: accts[0], Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}

	sock := filepath.Join(b.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		b.Fatal(err)
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go Serve(sctx, ln, New(app, quiet), quiet.Logger)
	local := api.NewClient(sock)
	defer local.Close()

	remote := func(auth Authenticator, token string) *api.Client {
		ts := httptest.NewUnstartedServer(NewRemote(app, RemoteOptions{Auth: auth, Recorder: app, Logger: quiet.Logger}, quiet))
		ts.StartTLS()
		b.Cleanup(ts.Close)
		ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
		c, err := api.NewRemoteClient(api.RemoteOptions{Server: ts.URL, Token: token, CAPEM: ca})
		if err != nil {
			b.Fatal(err)
		}
		return c
	}
	for _, c := range []struct {
		name   string
		client *api.Client
		filter api.VMFilter
	}{
		{"socket", local, api.VMFilter{AccountID: accts[0]}},
		{"https-token", remote(app, secret), api.VMFilter{}},
		{"https-fake-auth", remote(fakeAuth{"sjt_bench": {AccountID: accts[0], TokenID: "tk-aaaaaaaaaa", TokenName: "bench"}}, "sjt_bench"), api.VMFilter{}},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				vms, err := c.client.VMs(ctx, c.filter)
				if err != nil || len(vms) != 100 {
					b.Fatalf("%d VMs, %v", len(vms), err)
				}
			}
		})
	}
}
