package model

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestNewIDValidates(t *testing.T) {
	for _, k := range []Kind{KindAccount, KindVM, KindBackup, KindOperation} {
		seen := map[string]bool{}
		for range 1000 {
			id := NewID(k)
			if err := ValidateID(k, id); err != nil {
				t.Fatalf("NewID(%s) = %q does not validate: %v", k, id, err)
			}
			if KindOf(id) != k {
				t.Fatalf("KindOf(%q) = %q, want %q", id, KindOf(id), k)
			}
			seen[id] = true
		}
		// 36^6 ≈ 2.2e9: a thousand draws colliding would mean a broken generator.
		if len(seen) < 999 {
			t.Errorf("NewID(%s): %d distinct ids in 1000 draws", k, len(seen))
		}
	}
}

func TestValidateID(t *testing.T) {
	tests := []struct {
		kind Kind
		id   string
		ok   bool
	}{
		{KindVM, "vm-abc123", true},
		{KindVM, "vm-ABC123", false},
		{KindVM, "vm-abc12", false},
		{KindVM, "vm-abc1234", false},
		{KindVM, "vm-../../", false},
		{KindVM, "vm-abc/12", false},
		{KindVM, "vm-abc\x0012", false},
		{KindVM, "bk-abc123", false},
		{KindVM, "", false},
		{KindBackup, "bk-0123456789", true},
		{KindBackup, "bk-012345678", false},
		{KindAccount, "ac-zz9zz9", true},
		{KindOperation, "op-aaaaaaaaaa", true},
		{Kind("xx"), "xx-aaaaaa", false},
	}
	for _, tt := range tests {
		err := ValidateID(tt.kind, tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateID(%s, %q) = %v, want ok=%v", tt.kind, tt.id, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateID(%s, %q): error %v does not wrap ErrInvalid", tt.kind, tt.id, err)
		}
	}
}

func TestValidateIDMessageShowsForm(t *testing.T) {
	err := ValidateID(KindVM, "web")
	if err == nil || !strings.Contains(err.Error(), "vm-") || !strings.Contains(err.Error(), "6 lowercase") {
		t.Fatalf("error %q should show the expected form of a VM id", err)
	}
}

// FuzzValidateID checks that whatever is accepted as an id is safe to use as
// a single path component.
func FuzzValidateID(f *testing.F) {
	for _, s := range []string{"vm-abc123", "..", "/", "vm-../..", "vm-\x00\x00\x00\x00\x00\x00", "",
		strings.Repeat("a", 10000), "bk-0123456789", "vm-abc12/", "ac-.a.a.a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, k := range []Kind{KindAccount, KindVM, KindBackup, KindOperation} {
			if ValidateID(k, s) != nil {
				continue
			}
			if strings.ContainsAny(s, "/\x00.") || len(s) > 13 || !strings.HasPrefix(s, string(k)+"-") {
				t.Fatalf("ValidateID(%s, %q) accepted an unsafe id", k, s)
			}
		}
	})
}

func TestParseCredits(t *testing.T) {
	tests := []struct {
		in   string
		want Micro
		ok   bool
	}{
		{"10", 10 * Credit, true},
		{"2.5", 2_500_000, true},
		{"0.000001", 1, true},
		{".5", 500_000, true},
		{"+3", 3 * Credit, true},
		{" 7 ", 7 * Credit, true},
		{"1000000000", MaxAmount, true},
		{"1000000000.000001", 0, false},
		{"99999999999999999999", 0, false},
		{"0", 0, false},
		{"0.0000001", 0, false},
		{"-5", 0, false},
		{"", 0, false},
		{".", 0, false},
		{"1e6", 0, false},
		{"NaN", 0, false},
		{"1,5", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseCredits(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseCredits(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseCredits(%q): %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestParseSignedCredits(t *testing.T) {
	tests := []struct {
		in   string
		want Micro
		ok   bool
	}{
		{"-5", -5 * Credit, true},
		{" -2.5 ", -2_500_000, true},
		{"-.000001", -1, true},
		{"+3", 3 * Credit, true},
		{"4", 4 * Credit, true},
		{"-1000000000", -MaxAmount, true},
		{"-1000000000.000001", 0, false},
		{"-0", 0, false},
		{"0", 0, false},
		{"--5", 0, false},
		{"-+5", 0, false},
		{"-", 0, false},
		{"- 5", 0, false},
		{"-1e3", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSignedCredits(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSignedCredits(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSignedCredits(%q): %v does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestValidateAdjustment(t *testing.T) {
	tests := []struct {
		amount Micro
		reason string
		ok     bool
	}{
		{-Credit, "top-up typed twice", true},
		{Credit, "goodwill, 30 € off — Müller", true},
		{MaxAmount, strings.Repeat("x", MaxReasonLen), true},
		{-MaxAmount, "all of it", true},
		{0, "nothing", false},
		{MaxAmount + 1, "too much", false},
		{-MaxAmount - 1, "too much", false},
		{Credit, "", false},
		{Credit, " \t ", false},
		{Credit, strings.Repeat("x", MaxReasonLen+1), false},
		{Credit, "two\nlines", false},
		{Credit, "bell\a", false},
		{Credit, "\xff\xfe", false},
	}
	for _, tt := range tests {
		err := ValidateAdjustment(tt.amount, tt.reason)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateAdjustment(%d, %q) = %v, want ok=%v", tt.amount, tt.reason, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateAdjustment(%d, %q): %v does not wrap ErrInvalid", tt.amount, tt.reason, err)
		}
	}
}

func TestMicroString(t *testing.T) {
	for m, want := range map[Micro]string{0: "0", 3 * Credit: "3", 2_500_000: "2.5", 1: "0.000001", -1_250_000: "-1.25"} {
		if got := m.String(); got != want {
			t.Errorf("Micro(%d).String() = %q, want %q", int64(m), got, want)
		}
		if m > 0 {
			if back, err := ParseCredits(m.String()); err != nil || back != m {
				t.Errorf("ParseCredits(%q) = %d, %v; want %d", m.String(), back, err, m)
			}
		}
	}
}

func TestNames(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) error
		in    string
		ok    bool
	}{
		{"account", ValidateAccountName, "Alice Müller", true},
		{"account", ValidateAccountName, "", false},
		{"account", ValidateAccountName, " alice", false},
		{"account", ValidateAccountName, "al\nice", false},
		{"account", ValidateAccountName, strings.Repeat("a", 65), false},
		{"vm", ValidateVMName, "web-1", true},
		{"vm", ValidateVMName, "Web", false},
		{"vm", ValidateVMName, "-web", false},
		{"vm", ValidateVMName, "a/b", false},
		{"vm", ValidateVMName, strings.Repeat("a", 64), false},
		{"image", ValidateImageName, "debian-12.1_min", true},
		{"image", ValidateImageName, "..", false},
		{"image", ValidateImageName, ".hidden", false},
		{"image", ValidateImageName, "a/b", false},
		{"domain", ValidateDomain, "app.example.com", true},
		{"domain", ValidateDomain, "localhost", false},
		{"domain", ValidateDomain, "a..b", false},
		{"domain", ValidateDomain, "Ex.com", false},
		{"domain", ValidateDomain, "*.example.com", false},
		{"domain", ValidateDomain, "xn--bcher-kva.example", true},
		{"domain", ValidateDomain, strings.Repeat("a", 64) + ".example.com", false},
	}
	for _, tt := range tests {
		if err := tt.check(tt.in); (err == nil) != tt.ok {
			t.Errorf("%s %q: err = %v, want ok=%v", tt.name, tt.in, err, tt.ok)
		}
	}
}

func TestCodeRoundTrip(t *testing.T) {
	for _, e := range []error{ErrNotFound, ErrInvalid, ErrConflict, ErrInsufficientFunds, ErrUnavailable} {
		wrapped := errors.Join(errors.New("context"), e)
		if got := CodeError(Code(wrapped)); got != e {
			t.Errorf("CodeError(Code(%v)) = %v", e, got)
		}
	}
	if Code(errors.New("boom")) != "internal" {
		t.Error("an uncategorised error should have code internal")
	}
}

func TestParseVMState(t *testing.T) {
	if s, err := ParseVMState("graveyard"); err != nil || s != StateGraveyard {
		t.Fatalf("ParseVMState(graveyard) = %q, %v", s, err)
	}
	if _, err := ParseVMState("deleted"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("ParseVMState(deleted) = %v, want ErrInvalid", err)
	}
}

// TestDropStale: a VM that runs again has no stop time or reason left; a
// stopped one keeps them, and so does one in the graveyard (a resume to
// stopped still says why).
func TestDropStale(t *testing.T) {
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		state VMState
		keep  bool
	}{
		{StateCreating, false},
		{StateRunning, false},
		{StateStopped, true},
		{StateGraveyard, true},
		{StateArchived, true},
	} {
		vm := VM{State: tc.state, StoppedAt: at, StopReason: StopGuestPowerOff}
		vm.DropStale()
		if kept := !vm.StoppedAt.IsZero() && vm.StopReason != ""; kept != tc.keep {
			t.Errorf("%s: stop kept = %v, want %v", tc.state, kept, tc.keep)
		}
	}
}

func TestStopReasonDescribe(t *testing.T) {
	for r, want := range map[StopReason]string{
		StopOperator:      "stopped by the operator",
		StopGuestPowerOff: "powered off from inside",
		StopExited:        "exited unexpectedly at 12:00",
		StopBootFailed:    "did not boot",
		"":                "reason not recorded",
	} {
		if got := r.Describe("12:00"); got != want {
			t.Errorf("%q.Describe = %q, want %q", r, got, want)
		}
	}
	if got := StopExited.Describe(""); got != "exited unexpectedly" {
		t.Errorf("Describe without a time = %q", got)
	}
}

func TestNormalizeDomain(t *testing.T) {
	for in, want := range map[string]string{
		"App.Example.COM.":      "app.example.com",
		"bücher.example":        "xn--bcher-kva.example",
		"BÜCHER.example.":       "xn--bcher-kva.example",
		"xn--bcher-kva.example": "xn--bcher-kva.example",
	} {
		if got := NormalizeDomain(in); got != want {
			t.Errorf("NormalizeDomain(%q) = %q, want %q", in, got, want)
		}
		if err := ValidateDomain(NormalizeDomain(in)); err != nil {
			t.Errorf("%q, normalized, is refused: %v", in, err)
		}
	}
	if err := ValidateDomain("*.example.com"); err == nil || !strings.Contains(err.Error(), "wildcards are not supported") {
		t.Errorf("a wildcard: %v", err)
	}
}
