package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestLedgerTableFolded: a day of charges folded by the history pass is one
// line that says how many charges it stands for (and what was forgiven);
// a charge as booked says nothing of the kind.
func TestLedgerTableFolded(t *testing.T) {
	var out bytes.Buffer
	o := &globalOptions{stdout: &out, loc: time.UTC}
	day := time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)
	es := []model.LedgerEntry{
		{Seq: 300, At: day.Add(30 * time.Hour), Amount: -825, Kind: model.Charge, VMID: "vm-aaaaaa",
			PeriodStart: day.Add(30*time.Hour - 10*time.Minute), PeriodEnd: day.Add(30 * time.Hour), BalanceAfter: 5_000},
		{Seq: 288, At: day.Add(23*time.Hour + 50*time.Minute), Amount: -118_800, Kind: model.Charge, VMID: "vm-aaaaaa", Charges: 144,
			PeriodStart: day.Add(-10 * time.Minute), PeriodEnd: day.Add(23*time.Hour + 50*time.Minute), BalanceAfter: 5_825, Forgiven: 15},
	}
	if err := o.ledgerTable(es); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("ledger table:\n%s\nwant a header and two lines", out.String())
	}
	if strings.Contains(lines[1], "charges ×") {
		t.Errorf("a charge as booked says it folds charges: %q", lines[1])
	}
	if !strings.Contains(lines[2], "charges ×144 (one day, folded); forgiven 0.000015") || !strings.Contains(lines[2], "-0.1188") {
		t.Errorf("folded line %q does not say it folds 144 charges and what was forgiven", lines[2])
	}
}
