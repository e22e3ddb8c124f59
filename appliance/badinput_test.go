package appliance

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/guest"
)

// TestBadInput: every bad request fails with the right category, says
// what to do, and changes nothing (accounts, VMs, backups, addresses,
// ledger and events are byte-for-byte the same). The stub hypervisor
// stands in for VM processes: no request here reaches a guest.
func TestBadInput(t *testing.T) {
	e := newEnv(t, envOptions{})
	ctx := context.Background()
	rich := e.account("rich", 100*model.Credit, 0)
	vm := e.vm(rich.ID)
	other := e.vm(rich.ID)
	bkOther, err := e.a.CreateBackup(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	e.advance(vm.NextBackupAt.Sub(e.clk.Now()) + time.Minute) // vm has a scheduled backup
	poor := e.account("poor", 1, 0)
	poorVM := e.vm(poor.ID)
	// A whole billing period after its creation (which may fall a few
	// seconds before a period's end, too short to cost a whole granule), the
	// poor VM is archived.
	e.advance(2 * BillingPeriod)
	if got := e.getVM(poorVM.ID); got.State != model.StateArchived {
		t.Fatalf("poor VM is %s, want archived", got.State)
	}
	var scheduled string
	bks, _ := e.a.Backups(ctx, vm.ID)
	for _, b := range bks {
		if b.Kind == model.Scheduled {
			scheduled = b.ID
		}
	}
	if scheduled == "" {
		t.Fatal("no scheduled backup after a day")
	}
	graveyard := e.vm(rich.ID)
	// Host port 8080 goes to vm's 80; the graveyard VM keeps its claim on
	// 9090 while it can come back.
	if _, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "tcp", Number: 8080, GuestPort: 80}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.a.AddPort(ctx, graveyard.ID, model.Port{Proto: "tcp", Number: 9090}); err != nil {
		t.Fatal(err)
	}
	e.advance(2 * time.Hour)
	if _, err := e.a.DestroyVM(ctx, graveyard.ID); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		code string
		hint string // part of the message
		call func() error
	}{
		{"unknown vm", "not_found", "superjolt vm list", func() error { _, err := e.a.VM(ctx, "vm-zzzzzz"); return err }},
		{"malformed vm id", "invalid", "vm-", func() error { _, err := e.a.StopVM(ctx, "../../etc"); return err }},
		{"vm id of another kind", "invalid", "vm-", func() error { _, err := e.a.DestroyVM(ctx, rich.ID); return err }},
		{"unknown account", "not_found", "account list", func() error { _, err := e.a.TopUp(ctx, "ac-zzzzzz", model.Credit); return err }},
		{"malformed account id", "invalid", "ac-", func() error { _, err := e.a.Account(ctx, "ac-\x00/"); return err }},
		{"negative top-up", "invalid", "positive", func() error { _, err := e.a.TopUp(ctx, rich.ID, -5); return err }},
		{"zero top-up", "invalid", "positive", func() error { _, err := e.a.TopUp(ctx, rich.ID, 0); return err }},
		{"absurd top-up", "invalid", "allowed", func() error { _, err := e.a.TopUp(ctx, rich.ID, model.MaxAmount+1); return err }},
		{"negative opening balance", "invalid", "positive", func() error {
			_, err := e.a.CreateAccount(ctx, CreateAccountRequest{Name: "neg", Balance: -1})
			return err
		}},
		{"absurd retention", "invalid", "retention", func() error {
			_, err := e.a.CreateAccount(ctx, CreateAccountRequest{Name: "x", Balance: 1, BackupRetention: 100000})
			return err
		}},
		{"empty account name", "invalid", "name", func() error { _, err := e.a.CreateAccount(ctx, CreateAccountRequest{}); return err }},
		{"unknown tier", "not_found", "tier list", func() error {
			_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: rich.ID, Tier: "gigantic"})
			return err
		}},
		{"unknown image", "not_found", "image list", func() error {
			_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: rich.ID, Tier: "nano", Image: "nope"})
			return err
		}},
		{"bad vm name", "invalid", "VM name", func() error {
			_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: rich.ID, Tier: "nano", Name: "Bad Name"})
			return err
		}},
		{"create without balance", "insufficient_funds", "topup", func() error {
			_, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: poor.ID, Tier: "nano"})
			return err
		}},
		{"restore another VM's backup", "invalid", "own backups", func() error { _, err := e.a.RestoreVM(ctx, vm.ID, bkOther.ID); return err }},
		{"restore unknown backup", "not_found", "backup list", func() error { _, err := e.a.RestoreVM(ctx, vm.ID, "bk-zzzzzzzzzz"); return err }},
		{"restore malformed backup id", "invalid", "bk-", func() error { _, err := e.a.RestoreVM(ctx, vm.ID, "latest"); return err }},
		{"resolve nonsense", "invalid", "YYYY", func() error { _, err := e.a.ResolveBackup(ctx, vm.ID, "last tuesday", time.UTC); return err }},
		{"delete scheduled backup", "conflict", "retention", func() error { return e.a.DeleteBackup(ctx, scheduled) }},
		{"delete unknown backup", "not_found", "backup list", func() error { return e.a.DeleteBackup(ctx, "bk-zzzzzzzzzz") }},
		{"double destroy", "conflict", "vm resume " + graveyard.ID, func() error { _, err := e.a.DestroyVM(ctx, graveyard.ID); return err }},
		{"start a graveyard VM", "conflict", "vm resume", func() error { _, err := e.a.StartVM(ctx, graveyard.ID); return err }},
		{"resume a running VM", "conflict", "nothing to resume", func() error { _, err := e.a.ResumeVM(ctx, vm.ID); return err }},
		{"resume with no balance", "insufficient_funds", "account topup " + poor.ID, func() error { _, err := e.a.ResumeVM(ctx, poorVM.ID); return err }},
		{"stop a stopped VM", "conflict", "already stopped", func() error { _, err := e.a.StopVM(ctx, other.ID); return err }},
		{"exec nothing", "invalid", "command", func() error { _, err := e.a.Exec(ctx, vm.ID, guest.ExecRequest{}); return err }},
		{"exec in archived VM", "conflict", "archived", func() error {
			_, err := e.a.Exec(ctx, poorVM.ID, guest.ExecRequest{Path: "true"})
			return err
		}},
		{"port 0", "invalid", "1-65535", func() error { _, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "tcp"}); return err }},
		{"port proto", "invalid", "tcp or udp", func() error {
			_, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "sctp", Number: 1})
			return err
		}},
		{"host port held by another VM", "conflict", "held by " + vm.ID, func() error {
			_, err := e.a.AddPort(ctx, other.ID, model.Port{Proto: "tcp", Number: 8080, GuestPort: 8080})
			return err
		}},
		{"host port held by a VM in the graveyard", "conflict", "held by " + graveyard.ID, func() error {
			_, err := e.a.AddPort(ctx, other.ID, model.Port{Proto: "tcp", Number: 9090})
			return err
		}},
		{"host port already forwarded elsewhere in the VM", "conflict", "already forwards host port 8080/tcp (as 8080:80/tcp)", func() error {
			_, err := e.a.AddPort(ctx, vm.ID, model.Port{Proto: "tcp", Number: 8080, GuestPort: 81})
			return err
		}},
		{"port on a VM in the graveyard", "conflict", "graveyard", func() error {
			_, err := e.a.AddPort(ctx, graveyard.ID, model.Port{Proto: "tcp", Number: 7070})
			return err
		}},
		{"domain on a VM in the graveyard", "conflict", "graveyard", func() error {
			_, err := e.a.AddDomain(ctx, graveyard.ID, "grave.example.com", 0)
			return err
		}},
		{"remove a forward by the wrong guest port", "not_found", "vm show", func() error {
			_, err := e.a.RemovePort(ctx, vm.ID, model.Port{Proto: "tcp", Number: 8080, GuestPort: 81})
			return err
		}},
		{"remove absent port", "not_found", "vm show", func() error {
			_, err := e.a.RemovePort(ctx, vm.ID, model.Port{Proto: "udp", Number: 53})
			return err
		}},
		{"bad domain", "invalid", "DNS", func() error { _, err := e.a.AddDomain(ctx, vm.ID, "not a domain", 0); return err }},
		{"unknown operation", "not_found", "op list", func() error { _, err := e.a.Operation(ctx, "op-zzzzzzzzzz"); return err }},
		{"advance backwards", "invalid", "positive", func() error { _, err := e.a.AdvanceClock(ctx, -time.Hour); return err }},
		{"list bad state", "invalid", "state", func() error { _, err := e.a.VMs(ctx, VMFilter{State: "zombie"}); return err }},
	}
	// "other" is stopped for the "stop a stopped VM" case.
	if _, err := e.a.StopVM(ctx, other.ID); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := snapshot(t, e)
			err := tt.call()
			wantCode(t, err, tt.code)
			if !strings.Contains(err.Error(), tt.hint) {
				t.Errorf("message %q does not mention %q", err, tt.hint)
			}
			if after := snapshot(t, e); after != before {
				t.Errorf("a refused request changed the state:\nbefore %s\nafter  %s", before, after)
			}
		})
	}
}

// snapshot returns the whole state a request could change, as JSON.
func snapshot(t *testing.T, e *env) string {
	t.Helper()
	var s struct {
		Accounts []model.Account
		VMs      []model.VM
		Backups  map[string][]model.Backup
		Ledgers  map[string][]model.LedgerEntry
		Events   []model.Event
		IPs      []store.IPClaim
	}
	s.Backups = map[string][]model.Backup{}
	s.Ledgers = map[string][]model.LedgerEntry{}
	err := e.st.View(context.Background(), func(tx *store.Tx) error {
		var err error
		if s.Accounts, err = tx.Accounts(); err != nil {
			return err
		}
		for _, a := range s.Accounts {
			if s.Ledgers[a.ID], err = tx.Ledger(a.ID, 0); err != nil {
				return err
			}
		}
		if s.VMs, err = tx.VMs(store.VMFilter{}); err != nil {
			return err
		}
		for _, v := range s.VMs {
			if s.Backups[v.ID], err = tx.Backups(v.ID); err != nil {
				return err
			}
		}
		if s.Events, err = tx.EventsAfter(0, 0); err != nil {
			return err
		}
		s.IPs, err = tx.IPClaims()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(s)
	return string(b)
}
