package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"24h", 24 * time.Hour, true},
		{"7d", 7 * 24 * time.Hour, true},
		{"1d12h", 36 * time.Hour, true},
		{"90m", 90 * time.Minute, true},
		{"0d", 0, true},
		{"1.5h", 90 * time.Minute, true},
		{"d", 0, false},
		{"-1d", 0, false},
		{"+1d", 0, false},
		{"1d-1h", 0, false},
		{"7days", 0, false},
		{"soon", 0, false},
		{"", 0, false},
		{"100001d", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, model.ErrInvalid) {
			t.Errorf("ParseDuration(%q): %v is not ErrInvalid", tt.in, err)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	for _, d := range []time.Duration{0, time.Second, 90 * time.Minute, 24 * time.Hour, 7 * 24 * time.Hour, 36*time.Hour + 30*time.Second} {
		b, err := json.Marshal(Duration(d))
		if err != nil {
			t.Fatal(err)
		}
		var back Duration
		if err := json.Unmarshal(b, &back); err != nil || time.Duration(back) != d {
			t.Errorf("Duration %v -> %s -> %v, %v", d, b, time.Duration(back), err)
		}
	}
	if s := Duration(7 * 24 * time.Hour).String(); s != "7d" {
		t.Errorf("7 days prints as %q", s)
	}
	var d Duration
	if err := json.Unmarshal([]byte(`3600`), &d); !errors.Is(err, model.ErrInvalid) {
		t.Errorf("a number as a duration: %v, want ErrInvalid", err)
	}
}

func TestParsePort(t *testing.T) {
	tests := []struct {
		in   string
		want model.Port
		ok   bool
	}{
		{"80/tcp", model.Port{Proto: "tcp", Number: 80}, true},
		{"53/udp", model.Port{Proto: "udp", Number: 53}, true},
		{"443", model.Port{Proto: "tcp", Number: 443}, true},
		{"65535/tcp", model.Port{Proto: "tcp", Number: 65535}, true},
		{"0/tcp", model.Port{}, false},
		{"65536/tcp", model.Port{}, false},
		{"80/sctp", model.Port{}, false},
		{"-1/tcp", model.Port{}, false},
		{"http", model.Port{}, false},
		{"80/TCP", model.Port{Proto: "tcp", Number: 80}, true}, // protocols in any case
		{"8080:80/tcp", model.Port{Proto: "tcp", Number: 8080, GuestPort: 80}, true},
		{"8443:443", model.Port{Proto: "tcp", Number: 8443, GuestPort: 443}, true},
		{"53:53/udp", model.Port{Proto: "udp", Number: 53}, true}, // the same on both sides is no mapping
		{"8080:0/tcp", model.Port{}, false},
		{"8080:70000/tcp", model.Port{}, false},
		{"0:80/tcp", model.Port{}, false},
		{"8000-8010/tcp", model.Port{}, false}, // ranges are refused
		{"8080:/tcp", model.Port{}, false},
		{":80/tcp", model.Port{}, false},
		{"1:2:3/tcp", model.Port{}, false},
	}
	for _, tt := range tests {
		got, err := ParsePort(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParsePort(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, model.ErrInvalid) {
			t.Errorf("ParsePort(%q): %v is not invalid input", tt.in, err)
		}
		if tt.ok && tt.in != "80/TCP" && tt.in != "443" && tt.in != "8443:443" && tt.in != "53:53/udp" && got.String() != tt.in {
			t.Errorf("ParsePort(%q).String() = %q: it must write what it read", tt.in, got.String())
		}
	}
	if _, err := ParsePort("8000-8010/tcp"); err == nil || !strings.Contains(err.Error(), "one port at a time") {
		t.Errorf("a range: %v, want it refused saying to add one port at a time", err)
	}
}

func TestErrorWrapsItsCategory(t *testing.T) {
	cats := map[string]error{
		"not_found": model.ErrNotFound, "invalid": model.ErrInvalid, "conflict": model.ErrConflict,
		"insufficient_funds": model.ErrInsufficientFunds, "unavailable": model.ErrUnavailable, "no_space": model.ErrNoSpace,
	}
	for code, cat := range cats {
		var err error = &Error{Code: code, Message: "m", Status: StatusOf(code)}
		err = fmt.Errorf("context: %w", err)
		if !errors.Is(err, cat) || model.Code(err) != code {
			t.Errorf("code %s: errors.Is = %v, model.Code = %q", code, errors.Is(err, cat), model.Code(err))
		}
		// And back: the body of the error names the same code and status.
		status, body := Body(err)
		if body.Error.Code != code || status != StatusOf(code) {
			t.Errorf("Body(%s) = %d %+v", code, status, body)
		}
	}
	internal := &Error{Code: "internal", Message: "m"}
	for _, cat := range cats {
		if errors.Is(internal, cat) {
			t.Errorf("an internal error matches %v", cat)
		}
	}
	if StatusOf("internal") != 500 || StatusOf("whatever") != 500 {
		t.Error("unknown codes must be 500")
	}
}

func TestRequestValidation(t *testing.T) {
	tests := []struct {
		name string
		req  interface{ Validate() error }
		ok   bool
	}{
		{"account", CreateAccountRequest{Name: "alice"}, true},
		{"account with balance", CreateAccountRequest{Name: "alice", Balance: model.Credit, BackupRetention: 14}, true},
		{"account negative balance", CreateAccountRequest{Name: "alice", Balance: -1}, false},
		{"account absurd balance", CreateAccountRequest{Name: "alice", Balance: model.MaxAmount + 1}, false},
		{"account negative retention", CreateAccountRequest{Name: "alice", BackupRetention: -1}, false},
		{"topup", TopUpRequest{Amount: 1}, true},
		{"topup zero", TopUpRequest{}, false},
		{"vm", CreateVMRequest{AccountID: "ac-abc123", Tier: "nano"}, true},
		{"vm bad account", CreateVMRequest{AccountID: "vm-abc123", Tier: "nano"}, false},
		{"exec", ExecRequest{Path: "ls", Timeout: Duration(time.Minute)}, true},
		{"exec NUL", ExecRequest{Path: "ls", Args: []string{"a\x00b"}}, false},
		{"exec long timeout", ExecRequest{Path: "ls", Timeout: Duration(25 * time.Hour)}, false},
		{"restore id", RestoreRequest{BackupID: "bk-0123456789"}, true},
		{"restore date", RestoreRequest{From: "2026-11-28"}, true},
		{"restore bad date", RestoreRequest{From: "2026-11-31"}, false},
		{"clock", AdvanceClockRequest{By: Duration(time.Hour)}, true},
		{"clock too far", AdvanceClockRequest{By: Duration(MaxClockAdvance + time.Hour)}, false},
		{"filter", VMFilter{State: model.StateArchived}, true},
		{"filter bad", VMFilter{AccountID: "alice"}, false},
	}
	for _, tt := range tests {
		err := tt.req.Validate()
		if (err == nil) != tt.ok {
			t.Errorf("%s: Validate = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, model.ErrInvalid) {
			t.Errorf("%s: %v is not ErrInvalid", tt.name, err)
		}
	}
}
