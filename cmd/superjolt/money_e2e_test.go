package main

import (
	"slices"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// TestNegativeAmounts: `account adjust ID -5` means minus five credits, not
// a flag -5; nothing else changes.
func TestNegativeAmounts(t *testing.T) {
	tests := []struct{ in, want []string }{
		{[]string{"account", "adjust", "ac-abc123", "-5", "--reason", "x"}, []string{"account", "adjust", "ac-abc123", "--reason", "x", "--", "-5"}},
		{[]string{"--socket", "/s", "account", "adjust", "ac-abc123", "-.5", "-o", "json", "--reason", "-5"}, []string{"--socket", "/s", "account", "adjust", "ac-abc123", "-o", "json", "--reason", "-5", "--", "-.5"}},
		{[]string{"account", "adjust", "--reason", "x", "--", "ac-abc123", "-5"}, []string{"account", "adjust", "--reason", "x", "--", "ac-abc123", "-5"}},
		{[]string{"account", "adjust", "ac-abc123", "5", "--reason", "x"}, []string{"account", "adjust", "ac-abc123", "5", "--reason", "x"}},
		{[]string{"account", "topup", "ac-abc123", "-5"}, []string{"account", "topup", "ac-abc123", "-5"}},
		{[]string{"vm", "exec", "vm-abc123", "--", "account", "adjust", "-1"}, []string{"vm", "exec", "vm-abc123", "--", "account", "adjust", "-1"}},
	}
	for _, tt := range tests {
		if got := negativeAmounts(tt.in); !slices.Equal(got, tt.want) {
			t.Errorf("negativeAmounts(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// TestCLIAccountAdjust: an operator takes back a mistaken top-up with
// `account adjust` and a reason; the ledger shows it with the reason, the
// balance is the sum of the ledger; bad input is refused with its exit
// code and changes nothing.
func TestCLIAccountAdjust(t *testing.T) {
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "alice", "--balance", "25")
	d.ok(t, "account", "topup", a.ID, "500") // meant 50

	got := okJSON[model.Account](t, d, "account", "adjust", a.ID, "-450", "--reason", "top-up of 50 typed as 500")
	if got.Balance != 75*model.Credit {
		t.Fatalf("balance after adjust -450 = %s, want 75", got.Balance)
	}
	out := d.ok(t, "account", "adjust", a.ID, "2.5", "--reason", "goodwill for the outage")
	if !strings.Contains(out, "77.5 credits") {
		t.Fatalf("account adjust prints:\n%s", out)
	}

	ledger := d.ok(t, "account", "ledger", a.ID)
	table, totals, _ := strings.Cut(ledger, "\n\n")
	for _, want := range []string{"4 entries (0 charges)", "Topped up:   525\n", "Adjusted:    -447.5\n", "Sum:         77.5 credits, the balance"} {
		if !strings.Contains(totals, want) {
			t.Errorf("account ledger's whole-life totals do not say %q:\n%s", want, totals)
		}
	}
	if tot := okJSON[model.LedgerTotals](t, d, "account", "ledger", a.ID, "--totals"); tot.ToppedUp != 525*model.Credit ||
		tot.Adjusted != -447_500_000 || tot.Sum != 77_500_000 || tot.Entries != 4 {
		t.Errorf("account ledger --totals -o json = %+v; want 525 topped up, -447.5 adjusted, sum 77.5, 4 entries", tot)
	}
	lines := strings.Split(strings.TrimSpace(table), "\n")
	if len(lines) != 5 || !strings.Contains(lines[0], "NOTE") ||
		!strings.Contains(lines[1], "adjustment") || !strings.Contains(lines[1], "2.5") || !strings.Contains(lines[1], "goodwill for the outage") ||
		!strings.Contains(lines[2], "adjustment") || !strings.Contains(lines[2], "-450") || !strings.Contains(lines[2], "top-up of 50 typed as 500") ||
		!strings.Contains(lines[3], "topup") || !strings.Contains(lines[3], "500") {
		t.Fatalf("account ledger does not show the adjustments with their reasons, newest first:\n%s", ledger)
	}
	es := okJSON[[]model.LedgerEntry](t, d, "account", "ledger", a.ID)
	var sum model.Micro
	for _, e := range es {
		sum += e.Amount
	}
	if sum != 77_500_000 || es[1].Kind != model.Adjustment || es[1].Reason != "top-up of 50 typed as 500" {
		t.Fatalf("ledger -o json sums to %s (want 77.5) or lost the reason: %+v", sum, es)
	}
	if evs := okJSON[[]model.Event](t, d, "events"); !slices.ContainsFunc(evs, func(e model.Event) bool {
		return e.Type == "account.adjusted" && strings.Contains(e.Message, "top-up of 50 typed as 500")
	}) {
		t.Fatalf("no account.adjusted event with the reason: %+v", evs)
	}

	bad := []struct {
		args []string
		code int
		msg  string
	}{
		{[]string{"account", "adjust", a.ID, "-5"}, exitUsage, "needs a reason"},
		{[]string{"account", "adjust", a.ID, "5", "--reason", "   "}, exitUsage, "needs a reason"},
		{[]string{"account", "adjust", a.ID, "0", "--reason", "nothing"}, exitUsage, "is zero"},
		{[]string{"account", "adjust", a.ID, "-0", "--reason", "nothing"}, exitUsage, "is zero"},
		{[]string{"account", "adjust", a.ID, "5", "--reason", strings.Repeat("r", model.MaxReasonLen+1)}, exitUsage, "keep it to 200"},
		{[]string{"account", "adjust", a.ID, "5", "--reason", "two\nlines"}, exitUsage, "one line"},
		{[]string{"account", "adjust", a.ID, "--reason", "x", "--", "--5"}, exitUsage, "--5"},
		{[]string{"account", "adjust", a.ID, "five", "--reason", "x"}, exitUsage, "not a number"},
		{[]string{"account", "adjust", "ac-zzzzzz", "5", "--reason", "ghost"}, exitNotFound, "ac-zzzzzz"},
		{[]string{"account", "adjust", "nobody", "5", "--reason", "by name"}, exitNotFound, "no account is named nobody"},
		{[]string{"account", "adjust", a.ID, "-100", "--reason", "more than there is"}, exitFunds, "at most that much"},
		{[]string{"account", "adjust", a.ID, "--reason", "no amount"}, exitUsage, "2 argument"},
	}
	for _, tt := range bad {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := d.sj(t, tt.args...)
			if r.code != tt.code {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, tt.code, r.stderr)
			}
			if !strings.HasPrefix(r.stderr, "superjolt: ") || !strings.Contains(r.stderr, tt.msg) {
				t.Errorf("stderr %q should be a superjolt: message mentioning %q", r.stderr, tt.msg)
			}
			if r.stdout != "" {
				t.Errorf("stdout should be empty on failure, got %q", r.stdout)
			}
		})
	}
	if after := okJSON[model.Account](t, d, "account", "show", a.ID); after.Balance != 77_500_000 {
		t.Fatalf("bad input changed the balance to %s", after.Balance)
	}
	if n := len(okJSON[[]model.LedgerEntry](t, d, "account", "ledger", a.ID)); n != len(es) {
		t.Fatalf("bad input added ledger entries: %d, had %d", n, len(es))
	}
}

// TestCLIResumeNeedsRunway: a real VM whose account ran out is archived
// with the balance at zero and the unpaid rest forgiven in the ledger; a
// resume with too little runway is refused (exit 5) saying how much to top
// up; topping up exactly that resumes it.
func TestCLIResumeNeedsRunway(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "thrifty", "--balance", "0.0101")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano")
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "3h") // 0.0101 lasts 2h01m at 0.005/h
	if got := okJSON[model.VM](t, d, "vm", "show", vm.ID); got.State != model.StateArchived {
		t.Fatalf("%s is %s after the balance ran out, want archived", vm.ID, got.State)
	}
	if got := okJSON[model.Account](t, d, "account", "show", a.ID); got.Balance != 0 {
		t.Fatalf("balance after archival %s, want 0 (no debt)", got.Balance)
	}
	if ledger := d.ok(t, "account", "ledger", a.ID); !strings.Contains(ledger, "forgiven") {
		t.Fatalf("the ledger does not say what was forgiven:\n%s", ledger)
	}

	d.ok(t, "account", "topup", a.ID, "0.001")
	r := d.sj(t, "vm", "resume", vm.ID)
	if r.code != exitFunds || !strings.Contains(r.stderr, "top up at least 0.004 credits") || !strings.Contains(r.stderr, "superjolt account topup "+a.ID+" 0.004") {
		t.Fatalf("resume with 0.001 of the 0.005 an hour needs: exit %d, stderr %q; want %d and how much to top up", r.code, r.stderr, exitFunds)
	}
	d.ok(t, "account", "topup", a.ID, "0.004")
	if got := okJSON[model.VM](t, d, "vm", "resume", vm.ID); got.State != model.StateRunning {
		t.Fatalf("resume after topping up what it said: %s, want running", got.State)
	}
}
