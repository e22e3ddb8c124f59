package mcpserver

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance/model"
)

func toolNames(t testing.TB, cs *mcp.ClientSession) map[string]*mcp.Tool {
	t.Helper()
	res, err := cs.ListTools(context.Background(), nil)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*mcp.Tool{}
	for _, tl := range res.Tools {
		out[tl.Name] = tl
	}
	return out
}

// TestToolsOverHTTP drives every tool through the go-sdk's client, over
// HTTPS, against the remote listener's /mcp with a real account token and
// a real appliance: list, backup, list newest first, "restore from
// yesterday" after a clock advance (two-phase, nothing changed by the
// first call), destroy (two-phase) -> graveyard -> resume_vm.
func TestToolsOverHTTP(t *testing.T) {
	f := newFixture(t)
	cs := f.httpSession(t, f.tokA)

	tools := toolNames(t, cs)
	if len(tools) != len(ReadTools)+len(WriteTools) {
		t.Fatalf("%d tools: %v", len(tools), tools)
	}
	for name, tl := range tools {
		a := tl.Annotations
		if a == nil || a.DestructiveHint == nil || a.OpenWorldHint == nil || *a.OpenWorldHint {
			t.Errorf("%s: annotations not all set: %+v", name, a)
			continue
		}
		ro, destr := slices.Contains(ReadTools, name), slices.Contains(DestructiveTools, name)
		if a.ReadOnlyHint != ro || *a.DestructiveHint != destr {
			t.Errorf("%s: readOnly %v destructive %v; want %v %v", name, a.ReadOnlyHint, *a.DestructiveHint, ro, destr)
		}
		if destr && !strings.Contains(tl.Description, "DESTRUCTIVE") {
			t.Errorf("%s does not say it is destructive", name)
		}
		if tl.InputSchema == nil {
			t.Errorf("%s has no input schema", name)
		}
	}

	var vms vmsOut
	mustCall(t, cs, ToolListVMs, map[string]any{}, &vms)
	if len(vms.VMs) != 1 || vms.VMs[0].ID != f.vmA || vms.VMs[0].State != "running" {
		t.Fatalf("list_vms = %+v; want only %s running", vms, f.vmA)
	}
	var vm VMView
	mustCall(t, cs, ToolGetVM, map[string]any{"vm": f.vmA}, &vm)
	if vm.Name != "alice-web" || vm.Account != f.acctA {
		t.Fatalf("get_vm = %+v", vm)
	}

	var acct accountOut
	mustCall(t, cs, ToolGetAccount, map[string]any{}, &acct)
	if acct.ID != f.acctA || acct.BackupRetention != model.DefaultBackupRetention || acct.BurnPerHour == "0" || acct.RunwayHours <= 0 || acct.Runway == "" {
		t.Fatalf("get_account = %+v", acct)
	}

	// A backup "yesterday", then one today.
	var op OperationView
	mustCall(t, cs, ToolCreateBackup, map[string]any{"vm": f.vmA}, &op)
	if op.Kind != string(model.OpBackup) || op.ID == "" {
		t.Fatalf("create_backup = %+v", op)
	}
	old := follow(t, cs, op)
	if _, err := f.app.AdvanceClock(context.Background(), 25*time.Hour); err != nil {
		t.Fatal(err)
	}
	mustCall(t, cs, ToolCreateBackup, map[string]any{"vm": f.vmA}, &op)
	follow(t, cs, op)

	var bl backupsOut
	mustCall(t, cs, ToolListBackups, map[string]any{"vm": f.vmA}, &bl)
	// Ours two, and what the daily schedule took meanwhile.
	if len(bl.Backups) < 2 {
		t.Fatalf("list_backups = %+v", bl)
	}
	now := f.clk.Now()
	yesterday := now.AddDate(0, 0, -1).Format(time.DateOnly)
	var b1 BackupView // the newest of yesterday (UTC)
	for i, b := range bl.Backups {
		if i > 0 && b.TakenAt > bl.Backups[i-1].TakenAt {
			t.Fatalf("list_backups not newest first: %+v", bl)
		}
		if b.Kind != "on_demand" && b.Kind != "scheduled" || b.Consistency != "frozen" || b.TakenAt == "" || b.VM != f.vmA || b.SizeBytes < 0 {
			t.Fatalf("backup %+v", b)
		}
		if b1.ID == "" && strings.HasPrefix(b.TakenAt, yesterday) {
			b1 = b
		}
	}
	b0 := bl.Backups[0]
	if b0.Kind != "on_demand" || b1.ID == "" || !slices.ContainsFunc(bl.Backups, func(b BackupView) bool { return b.ID == old.Backup }) {
		t.Fatalf("want the newest on demand, one of %s, and %s: %+v", yesterday, old.Backup, bl)
	}
	raw, _ := json.Marshal(bl)
	for _, k := range []string{`"kind"`, `"takenAt"`, `"sizeBytes"`, `"consistency"`} {
		if !strings.Contains(string(raw), k) {
			t.Fatalf("list_backups lacks %s: %s", k, raw)
		}
	}

	// Restore from yesterday: the first call changes nothing.
	before := digest(t, f.st)
	var pre destructiveOut
	mustCall(t, cs, ToolRestore, map[string]any{"vm": f.vmA, "backup": "yesterday"}, &pre)
	if pre.Done || pre.Preview == nil || pre.Preview.Confirm == "" || pre.Preview.Backup == nil || pre.Preview.Backup.ID != b1.ID {
		t.Fatalf("restore preview = %+v", pre)
	}
	if !strings.Contains(pre.Preview.Lost, "since "+b1.TakenAt) || !strings.Contains(pre.Preview.Undo, "create_backup") {
		t.Fatalf("restore preview does not say what is lost and how to keep it: %+v", pre.Preview)
	}
	if after := digest(t, f.st); after != before {
		t.Fatalf("the first call of restore changed the store")
	}
	var done destructiveOut
	mustCall(t, cs, ToolRestore, map[string]any{"vm": f.vmA, "backup": "yesterday", "confirm": pre.Preview.Confirm}, &done)
	if !done.Done || done.Operation == nil || done.Operation.Kind != string(model.OpRestore) || done.Operation.Backup != b1.ID {
		t.Fatalf("restore = %+v", done)
	}
	follow(t, cs, *done.Operation)
	// The confirmation acts once.
	if e := call(t, cs, ToolRestore, map[string]any{"vm": f.vmA, "backup": "yesterday", "confirm": pre.Preview.Confirm}, nil); !strings.Contains(e, "used already") {
		t.Fatalf("a confirmation used twice: %q", e)
	}

	// Delete the newer on-demand backup, two-phase.
	before = digest(t, f.st)
	mustCall(t, cs, ToolDeleteBackup, map[string]any{"backup": b0.ID}, &pre)
	if pre.Done || pre.Preview == nil || !strings.Contains(pre.Preview.Undo, "gone for good") {
		t.Fatalf("delete preview = %+v", pre)
	}
	if digest(t, f.st) != before {
		t.Fatal("the first call of delete_backup changed the store")
	}
	mustCall(t, cs, ToolDeleteBackup, map[string]any{"backup": b0.ID, "confirm": pre.Preview.Confirm}, &done)
	follow(t, cs, *done.Operation)
	mustCall(t, cs, ToolListBackups, map[string]any{"vm": f.vmA}, &bl)
	if slices.ContainsFunc(bl.Backups, func(b BackupView) bool { return b.ID == b0.ID }) || !slices.ContainsFunc(bl.Backups, func(b BackupView) bool { return b.ID == b1.ID }) {
		t.Fatalf("after delete_backup of %s: %+v", b0.ID, bl)
	}

	// stop_vm, start_vm.
	mustCall(t, cs, ToolStopVM, map[string]any{"vm": f.vmA}, &op)
	follow(t, cs, op)
	mustCall(t, cs, ToolGetVM, map[string]any{"vm": f.vmA}, &vm)
	if vm.State != "stopped" {
		t.Fatalf("after stop_vm: %+v", vm)
	}
	mustCall(t, cs, ToolStartVM, map[string]any{"vm": f.vmA}, &op)
	follow(t, cs, op)

	// Destroy: two-phase, graveyard, resume.
	before = digest(t, f.st)
	mustCall(t, cs, ToolDestroyVM, map[string]any{"vm": f.vmA}, &pre)
	if pre.Done || pre.Preview == nil || !strings.Contains(pre.Preview.Undo, "graveyard") || !strings.Contains(pre.Preview.Undo, "resume_vm") {
		t.Fatalf("destroy preview = %+v", pre)
	}
	if digest(t, f.st) != before {
		t.Fatal("the first call of destroy_vm changed the store")
	}
	mustCall(t, cs, ToolDestroyVM, map[string]any{"vm": f.vmA, "confirm": pre.Preview.Confirm}, &done)
	follow(t, cs, *done.Operation)
	mustCall(t, cs, ToolListVMs, map[string]any{"state": "graveyard"}, &vms)
	if len(vms.VMs) != 1 || vms.VMs[0].ID != f.vmA || vms.VMs[0].ReclaimAt == "" || !strings.Contains(vms.VMs[0].Note, "resume_vm") {
		t.Fatalf("graveyard = %+v", vms)
	}
	mustCall(t, cs, ToolResumeVM, map[string]any{"vm": f.vmA}, &op)
	follow(t, cs, op)
	mustCall(t, cs, ToolGetVM, map[string]any{"vm": f.vmA}, &vm)
	if vm.State != "running" {
		t.Fatalf("after resume_vm: %+v", vm)
	}

	// create_vm in the token's account, then destroy it young: no graveyard.
	mustCall(t, cs, ToolCreateVM, map[string]any{"tier": "nano", "name": "scratch"}, &op)
	op = follow(t, cs, op)
	mustCall(t, cs, ToolDestroyVM, map[string]any{"vm": op.VM}, &pre)
	if !strings.Contains(pre.Preview.Lost, "younger than an hour") || !strings.Contains(pre.Preview.Undo, "no resume_vm") {
		t.Fatalf("young destroy preview = %+v", pre.Preview)
	}

	// Every change made with the token is an event naming it.
	evs, err := f.app.LastEvents(context.Background(), 200)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range evs {
		if e.Type == "tenant.action" && strings.Contains(e.Message, `"claude"`) && strings.Contains(e.Message, "MCP ") {
			n++
		}
	}
	if n < 8 {
		t.Fatalf("%d tenant.action events of the MCP token; want one per change", n)
	}
}

// TestCrossTenant: B's token on A's VM, backup and operation, through every
// tool, gets exactly what a missing object gets and changes nothing; B's
// lists do not show A's objects.
func TestCrossTenant(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	opA, err := f.app.SubmitBackup(ctx, f.vmA)
	if err != nil {
		t.Fatal(err)
	}
	bkA := waitOp(t, f.app, opA.ID).BackupID
	csA, csB := f.httpSession(t, f.tokA), f.httpSession(t, f.tokB)
	// A confirmation A got, for B to replay.
	var pre destructiveOut
	mustCall(t, csA, ToolDestroyVM, map[string]any{"vm": f.vmA}, &pre)
	confA := pre.Preview.Confirm

	missingVM, missingBk, missingOp := "vm-zzzzzz", "bk-zzzzzzzzzz", "op-zzzzzzzzzz"
	if model.ValidateID(model.KindBackup, missingBk) != nil || model.ValidateID(model.KindOperation, missingOp) != nil {
		missingBk, missingOp = model.NewID(model.KindBackup), model.NewID(model.KindOperation)
	}
	type probe struct {
		tool        string
		args, fresh map[string]any
	}
	probes := []probe{
		{ToolGetVM, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolListBackups, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolGetOperation, map[string]any{"operation": opA.ID}, map[string]any{"operation": missingOp}},
		{ToolGetOperation, map[string]any{"operation": opA.ID, "waitSeconds": 1}, map[string]any{"operation": missingOp, "waitSeconds": 1}},
		{ToolGetAccount, map[string]any{"account": f.acctA}, map[string]any{"account": model.NewID(model.KindAccount)}},
		{ToolCreateVM, map[string]any{"tier": "nano", "account": f.acctA}, map[string]any{"tier": "nano", "account": model.NewID(model.KindAccount)}},
		{ToolCreateBackup, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolStopVM, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolStartVM, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolResumeVM, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolRestore, map[string]any{"vm": f.vmA, "backup": bkA}, map[string]any{"vm": missingVM, "backup": missingBk}},
		{ToolRestore, map[string]any{"vm": f.vmA, "backup": "latest", "confirm": confA}, map[string]any{"vm": missingVM, "backup": "latest", "confirm": confA}},
		{ToolDeleteBackup, map[string]any{"backup": bkA}, map[string]any{"backup": missingBk}},
		{ToolDeleteBackup, map[string]any{"backup": bkA, "confirm": confA}, map[string]any{"backup": missingBk, "confirm": confA}},
		{ToolDestroyVM, map[string]any{"vm": f.vmA}, map[string]any{"vm": missingVM}},
		{ToolDestroyVM, map[string]any{"vm": f.vmA, "confirm": confA}, map[string]any{"vm": missingVM, "confirm": confA}},
		// B's own VM with A's backup.
		{ToolRestore, map[string]any{"vm": f.vmB, "backup": bkA}, map[string]any{"vm": f.vmB, "backup": missingBk}},
	}
	covered := map[string]bool{}
	before := digest(t, f.st)
	for _, p := range probes {
		covered[p.tool] = true
		got := call(t, csB, p.tool, p.args, nil)
		want := call(t, csB, p.tool, p.fresh, nil)
		if got == "" {
			t.Errorf("B's %s on A's objects %v succeeded", p.tool, p.args)
			continue
		}
		norm := func(s string, m map[string]any) string {
			for _, v := range m {
				if s2, ok := v.(string); ok && s2 != "" && s2 != "nano" && s2 != "latest" {
					s = strings.ReplaceAll(s, s2, "<id>")
				}
			}
			return s
		}
		if norm(got, p.args) != norm(want, p.fresh) || !strings.Contains(got, "not found") && !strings.Contains(got, "does not exist") && !strings.Contains(got, "not one of") {
			t.Errorf("B's %s on A's %v = %q; a missing object gets %q", p.tool, p.args, got, want)
		}
		if after := digest(t, f.st); after != before {
			t.Fatalf("B's %s %v changed the store", p.tool, p.args)
		}
	}
	for _, tool := range append(slices.Clone(ReadTools), WriteTools...) {
		if !covered[tool] && tool != ToolListVMs {
			t.Errorf("tool %s not probed across tenants", tool)
		}
	}
	var vms vmsOut
	mustCall(t, csB, ToolListVMs, map[string]any{}, &vms)
	if len(vms.VMs) != 1 || vms.VMs[0].ID != f.vmB {
		t.Fatalf("B's list_vms = %+v", vms)
	}
	var acct accountOut
	mustCall(t, csB, ToolGetAccount, map[string]any{}, &acct)
	if acct.ID != f.acctB {
		t.Fatalf("B's get_account = %+v", acct)
	}
}

// TestReadOnly: a read-only token's /mcp has the read tools only, and a
// server made ReadOnly too.
func TestReadOnly(t *testing.T) {
	f := newFixture(t)
	cs := f.httpSession(t, f.tokARO)
	tools := toolNames(t, cs)
	if len(tools) != len(ReadTools) {
		t.Fatalf("read-only token sees %d tools: %v", len(tools), tools)
	}
	for _, n := range ReadTools {
		if tools[n] == nil {
			t.Errorf("read-only token lacks %s", n)
		}
	}
	before := digest(t, f.st)
	for _, n := range WriteTools {
		if e := call(t, cs, n, map[string]any{"vm": f.vmA, "backup": "latest", "tier": "nano"}, nil); e == "" || !strings.Contains(strings.ToLower(e), "unknown tool") {
			t.Errorf("read-only %s = %q; want unknown tool", n, e)
		}
	}
	var vms vmsOut
	mustCall(t, cs, ToolListVMs, map[string]any{}, &vms)
	if digest(t, f.st) != before {
		t.Fatal("a read-only token changed the store")
	}
	ro := memSession(t, Local(f.app, f.principalA, nil), Options{ReadOnly: true})
	if n := len(toolNames(t, ro)); n != len(ReadTools) {
		t.Fatalf("Options.ReadOnly: %d tools", n)
	}
}

// TestConfirmationBinding: a confirmation is refused with other arguments,
// by another token (even of the same account), for another tool, edited,
// or expired.
func TestConfirmationBinding(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	var bks []string
	for range 2 {
		op, err := f.app.SubmitBackup(ctx, f.vmA)
		if err != nil {
			t.Fatal(err)
		}
		bks = append(bks, waitOp(t, f.app, op.ID).BackupID)
		f.app.AdvanceClock(ctx, time.Minute)
	}
	csA, csA2 := f.httpSession(t, f.tokA), f.httpSession(t, f.tokA2)
	var pre destructiveOut
	mustCall(t, csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0]}, &pre)
	conf := pre.Preview.Confirm
	before := digest(t, f.st)
	for _, c := range []struct {
		name string
		cs   *mcp.ClientSession
		tool string
		args map[string]any
	}{
		{"other backup", csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[1], "confirm": conf}},
		{"latest for the same backup's id", csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": "latest", "confirm": conf}},
		{"other zone", csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0], "timeZone": "Europe/Berlin", "confirm": conf}},
		{"other token of the same account", csA2, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0], "confirm": conf}},
		{"other tool", csA, ToolDestroyVM, map[string]any{"vm": f.vmA, "confirm": conf}},
		{"other tool", csA, ToolDeleteBackup, map[string]any{"backup": bks[0], "confirm": conf}},
		{"edited", csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0], "confirm": conf[:len(conf)-2] + "AA"}},
		{"garbage", csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0], "confirm": "yes"}},
	} {
		e := call(t, c.cs, c.tool, c.args, nil)
		if !strings.Contains(e, "confirmation refused") {
			t.Errorf("%s: %q; want a refused confirmation", c.name, e)
		}
		if digest(t, f.st) != before {
			t.Fatalf("%s: the store changed", c.name)
		}
	}
	// Still good for the right call.
	var done destructiveOut
	mustCall(t, csA, ToolRestore, map[string]any{"vm": f.vmA, "backup": bks[0], "confirm": conf}, &done)
	if !done.Done {
		t.Fatalf("restore = %+v", done)
	}

	// Expiry, on the Confirmer's own clock.
	now := time.Now()
	c := NewConfirmer(func() time.Time { return now })
	tok, _ := c.Issue("token tk-1", ToolDestroyVM, struct{ VM string }{"vm-abc123"})
	now = now.Add(ConfirmTTL + time.Second)
	if err := c.Redeem(tok, "token tk-1", ToolDestroyVM, struct{ VM string }{"vm-abc123"}); !IsConfirmation(err) || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("expired: %v", err)
	}
	// Another Confirmer (another daemon run) refuses it.
	now = time.Now()
	tok, _ = c.Issue("token tk-1", ToolDestroyVM, struct{ VM string }{"vm-abc123"})
	if err := NewConfirmer(nil).Redeem(tok, "token tk-1", ToolDestroyVM, struct{ VM string }{"vm-abc123"}); !IsConfirmation(err) {
		t.Fatalf("another key: %v", err)
	}
}

// TestBadInput: unknown tools, wrong argument types, missing arguments get
// clear errors, and nothing changes.
func TestBadInput(t *testing.T) {
	f := newFixture(t)
	cs := memSession(t, Local(f.app, f.principalA, nil), Options{Caller: "test"})
	before := digest(t, f.st)
	for _, c := range []struct {
		tool string
		args any
		want string
	}{
		{"rm_rf", map[string]any{}, "unknown tool"},
		{ToolGetVM, map[string]any{"vm": 123}, "vm"},
		{ToolGetVM, map[string]any{}, "vm"},
		{ToolGetVM, map[string]any{"vm": "not-an-id"}, "not-an-id"},
		{ToolDestroyVM, map[string]any{"vm": f.vmA, "confirm": 5}, "confirm"},
		{ToolRestore, map[string]any{"vm": f.vmA}, "backup"},
		{ToolRestore, map[string]any{"vm": f.vmA, "backup": "last tuesday"}, "last tuesday"},
		{ToolRestore, map[string]any{"vm": f.vmA, "backup": "latest", "timeZone": "Mars/Olympus"}, "Mars/Olympus"},
		{ToolGetOperation, map[string]any{"operation": "op-x", "waitSeconds": "soon"}, "waitSeconds"},
		{ToolGetOperation, map[string]any{"operation": model.NewID(model.KindOperation), "waitSeconds": 1000}, "waitSeconds"},
		{ToolListVMs, map[string]any{"state": "exploded"}, "exploded"},
		{ToolCreateVM, map[string]any{"tier": "gigantic"}, "gigantic"},
		{ToolCreateVM, map[string]any{}, "tier"},
		{ToolListBackups, []any{1, 2}, ""},
	} {
		e := call(t, cs, c.tool, c.args, nil)
		if e == "" || !strings.Contains(e, c.want) {
			t.Errorf("%s %v = %q; want an error about %q", c.tool, c.args, e, c.want)
		}
		if digest(t, f.st) != before {
			t.Fatalf("%s %v changed the store", c.tool, c.args)
		}
	}
	if digest(t, f.st) != before {
		t.Fatal("bad input changed the store")
	}
}
