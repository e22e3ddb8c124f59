package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// fuzzRoutes are the routes that take a request body.
var fuzzRoutes = []struct{ method, path string }{
	{"POST", "/v1/accounts"},
	{"POST", "/v1/accounts/ac-abc123/topup"},
	{"POST", "/v1/vms"},
	{"POST", "/v1/vms/vm-abc123/exec"},
	{"POST", "/v1/vms/vm-abc123/ports"},
	{"POST", "/v1/vms/vm-abc123/domains"},
	{"POST", "/v1/vms/vm-abc123/restore"},
	{"POST", "/v1/debug/clock/advance"},
	{"POST", "/v1/vms/vm-abc123/stop"},
	{"POST", "/v1/accounts/ac-abc123/tokens"},
}

// FuzzDecodeRequest feeds arbitrary bodies to every route that reads one and
// checks that (1) the server never fails with anything but a JSON "invalid"
// error, (2) whatever reaches the appliance passes the model's validation,
// and (3) an accepted body decodes the same after a round trip.
func FuzzDecodeRequest(f *testing.F) {
	seeds := []struct {
		route int
		body  string
	}{
		{0, `{"name":"alice","balance":10000000,"backup_retention":5}`},
		{0, `{"name":"alice","balance":-1}`},
		{0, `{"name":"\u0000"}`},
		{0, `{"name":"alice","name":"bob"}`},
		{0, `{"name":"alice"} trailing`},
		{0, `null`},
		{1, `{"amount":1}`},
		{1, `{"amount":1000000000000000}`},
		{1, `{"amount":1e3}`},
		{1, `{"amount":-9223372036854775808}`},
		{2, `{"account_id":"ac-abc123","tier":"small","image":"superjolt-busybox","name":"web-1"}`},
		{2, `{"account_id":"ac-../../","tier":"small"}`},
		{3, `{"path":"sh","args":["-c","id"],"stdin":"aGVsbG8=","timeout":"30s"}`},
		{3, `{"path":"sh","timeout":"1d2h"}`},
		{4, `{"proto":"tcp","number":443}`},
		{4, `{"proto":"udp","number":65535}`},
		{5, `{"domain":"app.example.com"}`},
		{6, `{"backup_id":"bk-0123456789"}`},
		{6, `{"from":"yesterday"}`},
		{6, `{"from":"2026-02-30"}`},
		{7, `{"by":"24h"}`},
		{7, `{"by":"7d"}`},
		{7, `{"by":"1d-1h"}`},
		{8, ``},
		{8, `{}`},
		{8, ` {} `},
		{9, `{"name":"laptop","read_only":true,"expires_in":"30d"}`},
		{9, `{"name":"","expires_in":"59s"}`},
		{9, `{"name":"\u0085","expires_in":"3650d"}`},
		{9, `{"expires_in":"1d-1h"}`},
	}
	for _, s := range seeds {
		f.Add(uint8(s.route), []byte(s.body))
	}
	app := &validatingApp{}
	srv := New(app, Options{Logger: slog.New(slog.DiscardHandler)})
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		rt := fuzzRoutes[int(route)%len(fuzzRoutes)]
		app.t = t
		req := httptest.NewRequest(rt.method, rt.path, bytes.NewReader(body))
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusOK, http.StatusCreated, http.StatusAccepted:
		case http.StatusBadRequest:
			var eb api.ErrorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code != "invalid" || eb.Error.Message == "" {
				t.Fatalf("%s %s %q: 400 without a JSON invalid error: %s", rt.method, rt.path, body, rec.Body)
			}
		default:
			t.Fatalf("%s %s %q: status %d: %s", rt.method, rt.path, body, rec.Code, rec.Body)
		}
		roundTrip[api.CreateAccountRequest](t, body)
		roundTrip[api.TopUpRequest](t, body)
		roundTrip[api.AdjustRequest](t, body)
		roundTrip[api.CreateVMRequest](t, body)
		roundTrip[api.ExecRequest](t, body)
		roundTrip[api.RestoreRequest](t, body)
		roundTrip[api.AdvanceClockRequest](t, body)
		roundTrip[api.CreateTokenRequest](t, body)
	})
}

// roundTrip checks that a body decode accepts is invalid-free and decodes to
// the same value after encoding it again; and that a refusal is ErrInvalid.
func roundTrip[T request](t *testing.T, body []byte) {
	t.Helper()
	v, err := decode[T](bytes.NewReader(body))
	if err != nil {
		if !errors.Is(err, model.ErrInvalid) {
			t.Fatalf("decode %T %q: error %v is not ErrInvalid", v, body, err)
		}
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encode %T %+v: %v", v, v, err)
	}
	w, err := decode[T](bytes.NewReader(b))
	if err != nil {
		t.Fatalf("decode %T of its own encoding %s: %v", v, b, err)
	}
	if !reflect.DeepEqual(normal(v), normal(w)) {
		t.Fatalf("%T round trip: %+v became %+v", v, v, w)
	}
}

// normal makes empty and nil slices compare equal.
func normal(v any) any {
	b, _ := json.Marshal(v)
	var m any
	_ = json.Unmarshal(b, &m)
	return m
}

// validatingApp fails the test when a value that the model would refuse
// reaches the appliance.
type validatingApp struct {
	errApp
	t *testing.T
}

func (a *validatingApp) check(what string, err error) {
	if err != nil {
		a.t.Fatalf("%s reached the appliance unvalidated: %v", what, err)
	}
}

func (a *validatingApp) CreateAccount(ctx contextT, req appliance.CreateAccountRequest) (model.Account, error) {
	a.check("account name", model.ValidateAccountName(req.Name))
	if req.Balance != 0 {
		a.check("balance", model.ValidateAmount(req.Balance))
	}
	if req.BackupRetention < 0 || req.BackupRetention > model.MaxBackupRetention {
		a.t.Fatalf("retention %d reached the appliance", req.BackupRetention)
	}
	return model.Account{}, nil
}

func (a *validatingApp) TopUp(ctx contextT, id string, m model.Micro) (model.Account, error) {
	a.check("account id", model.ValidateID(model.KindAccount, id))
	a.check("amount", model.ValidateAmount(m))
	return model.Account{}, nil
}

func (a *validatingApp) Adjust(ctx contextT, id string, m model.Micro, reason string) (model.Account, error) {
	a.check("account id", model.ValidateID(model.KindAccount, id))
	a.check("adjustment", model.ValidateAdjustment(m, reason))
	return model.Account{}, nil
}

func (a *validatingApp) SubmitCreateVM(ctx contextT, req appliance.CreateVMRequest) (model.Operation, error) {
	a.check("account id", model.ValidateID(model.KindAccount, req.AccountID))
	a.check("tier", model.ValidateTierName(req.Tier))
	return model.Operation{}, nil
}

func (a *validatingApp) AddPort(ctx contextT, id string, p model.Port) (model.VM, error) {
	a.check("port", model.ValidatePort(p))
	return model.VM{}, nil
}

func (a *validatingApp) AddDomain(ctx contextT, id, d string, _ uint16) (model.VM, error) {
	a.check("domain", model.ValidateDomain(d))
	return model.VM{}, nil
}

func (a *validatingApp) SubmitRestore(ctx contextT, id, bk string) (model.Operation, error) {
	a.check("backup id", model.ValidateID(model.KindBackup, bk))
	return model.Operation{}, nil
}

func (a *validatingApp) ResolveBackup(ctx contextT, id, from string, loc *time.Location) (model.Backup, error) {
	a.check("from", model.ValidateFrom(from))
	return model.Backup{ID: "bk-0123456789"}, nil
}

func (a *validatingApp) CreateToken(ctx contextT, req appliance.CreateTokenRequest) (model.Token, string, error) {
	a.check("account id", model.ValidateID(model.KindAccount, req.AccountID))
	if req.Name != "" {
		a.check("token name", model.ValidateTokenName(req.Name))
	}
	a.check("token lifetime", model.ValidateTokenLifetime(req.ExpiresIn))
	return model.Token{}, "", nil
}

type contextT = context.Context
