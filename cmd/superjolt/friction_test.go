package main

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// TestTableWideCharacters: a VM named in Japanese or with an emoji keeps
// every column after it aligned, as a terminal draws it (two cells for a
// wide character).
func TestTableWideCharacters(t *testing.T) {
	var out bytes.Buffer
	o := &globalOptions{stdout: &out, loc: time.UTC}
	if err := o.table([]string{"ID", "NAME", "STATE"}, [][]string{
		{"vm-aaaaaa", "web-1", "running"},
		{"vm-bbbbbb", "ウェブ", "stopped"},
		{"vm-cccccc", "db🚀", "running"},
	}); err != nil {
		t.Fatal(err)
	}
	want := `ID         NAME    STATE
vm-aaaaaa  web-1   running
vm-bbbbbb  ウェブ  stopped
vm-cccccc  db🚀    running
`
	if out.String() != want {
		t.Fatalf("table:\n%s\nwant:\n%s", out.String(), want)
	}
}

// TestTimesNameTheirZone: every time the CLI prints says its zone, and
// the daemon's RFC 3339 times in messages are shown the same way.
func TestTimesNameTheirZone(t *testing.T) {
	la, err := time.LoadLocation("America/Los_Angeles")
	if err != nil {
		t.Skip("no zone database: ", err)
	}
	o := &globalOptions{loc: la}
	at := time.Date(2027, 1, 12, 2, 21, 25, 0, time.UTC)
	if got := o.fmtTime(at); got != "2027-01-11 18:21:25 PST" {
		t.Fatalf("fmtTime = %q", got)
	}
	msg := "vm-abc123 destroyed: in the graveyard until 2027-01-12T02:21:25Z; `superjolt vm resume vm-abc123` brings it back"
	if got := o.localize(msg); !strings.Contains(got, "until 2027-01-11 18:21:25 PST;") {
		t.Fatalf("localize = %q", got)
	}
}

// TestFriction: small things a person notices, through the real daemon.
func TestFriction(t *testing.T) {
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "friction")

	// --version, and both versions in status.
	if out := d.ok(t, "--version"); !strings.HasPrefix(out, "superjolt version ") {
		t.Errorf("--version: %q", out)
	}
	if out := d.ok(t, "status"); !strings.Contains(out, "superjoltd:") || !strings.Contains(out, "superjolt:") ||
		!(strings.Contains(out, "Guests:      tcg") || strings.Contains(out, "Guests:      kvm")) || !strings.Contains(out, "kept for the host") {
		t.Errorf("status does not show both versions, KVM or TCG, and the memory:\n%s", out)
	}

	// Grammar.
	if r := d.sj(t, "account", "show", "AC-ABC123"); !strings.Contains(r.stderr, "is not an account id") {
		t.Errorf("a bad account id says %q", r.stderr)
	}

	// Help of a flag names no command as its argument.
	if out := d.ok(t, "vm", "create", "--help"); strings.Contains(out, "--tier superjolt") {
		t.Errorf("vm create --help:\n%s", out)
	}

	// -o json errors are JSON, in the API's shape, with the exit code.
	r := d.sj(t, "vm", "list", "--account", "ac-zzzzzz", "-o", "json")
	var body api.ErrorBody
	if err := json.Unmarshal([]byte(r.stderr), &body); err != nil || body.Error.Code != "not_found" || r.code != exitNotFound || r.stdout != "" {
		t.Errorf("vm list --account ac-zzzzzz -o json: exit %d, stdout %q, stderr %q; want exit %d and a JSON not_found error", r.code, r.stdout, r.stderr, exitNotFound)
	}
	// An account that does not exist is "not found", not an empty list.
	if r := d.sj(t, "vm", "list", "--account", "ac-zzzzzz"); r.code != exitNotFound || !strings.Contains(r.stderr, "ac-zzzzzz does not exist") {
		t.Errorf("vm list --account ac-zzzzzz: exit %d, %q", r.code, r.stderr)
	}
	if out := d.ok(t, "vm", "list", "--account", a.ID); !strings.HasPrefix(out, "ID ") || !strings.Contains(out, " NOTE") {
		t.Errorf("vm list of an account without VMs, every column named:\n%s", out)
	}

	// A confirmation that asks to type yes takes only yes (on a terminal;
	// here through the same code with a scripted answer).
	for answer, ok := range map[string]bool{"yes\n": true, "y\n": false, "YES\n": false, "yes please\n": false} {
		o := &globalOptions{stdin: strings.NewReader(answer), stderr: &bytes.Buffer{}, interactive: true}
		err := o.confirm(t.Context(), false, "delete backup bk-aaaaaaaaaa", "It goes for good.")
		if (err == nil) != ok {
			t.Errorf("confirm answered %q = %v, want accepted=%v", answer, err, ok)
		}
	}
}

// TestPortsAndDomainsAnyCase: 443/TCP is 443/tcp and APP.Example.com is
// app.example.com.
func TestPortsAndDomainsAnyCase(t *testing.T) {
	p, err := api.ParsePort("443/TCP")
	if err != nil || p != (model.Port{Proto: "tcp", Number: 443}) {
		t.Fatalf("ParsePort(443/TCP) = %v, %v", p, err)
	}
	if d := model.NormalizeDomain("APP.Example.com."); d != "app.example.com" || model.ValidateDomain(d) != nil {
		t.Fatalf("NormalizeDomain = %q", d)
	}
	if err := (api.DomainRequest{Domain: "APP.Example.com"}).Validate(); err != nil {
		t.Fatalf("an uppercase domain is refused: %v", err)
	}
}

// TestCLICompletionAndSuggestions: names are accepted wherever ids are,
// and one name names one VM of an account and one account; completion
// offers what the verb takes (resume: only resumable VMs; backup delete:
// on-demand backups, not files), and a mistyped subcommand gets a
// suggestion.
func TestCLICompletionAndSuggestions(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "complete", "--balance", "100")
	// By name: the account, then the VM.
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", "Complete", "--tier", "nano", "--name", "web-1")
	if vm.AccountID != a.ID {
		t.Fatalf("vm create --account Complete made a VM of %s, want %s", vm.AccountID, a.ID)
	}
	if got := okJSON[model.VM](t, d, "vm", "show", "web-1"); got.ID != vm.ID {
		t.Fatalf("vm show web-1 = %s, want %s", got.ID, vm.ID)
	}
	if out := d.ok(t, "vm", "list", "--account", "complete"); !strings.Contains(out, vm.ID) {
		t.Fatalf("vm list --account complete:\n%s", out)
	}
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"account", "create", "COMPLETE"}, exitConflict, "already exists (" + a.ID + ")"},
		{[]string{"vm", "create", "--account", a.ID, "--tier", "nano", "--name", "web-1"}, exitConflict, "already has a VM named web-1 (" + vm.ID + ")"},
		{[]string{"vm", "create", "--account", a.ID, "--tier", "nano", "--name", "vm-zzzzzz"}, exitUsage, "looks like a VM id"},
		{[]string{"vm", "show", "web-2"}, exitNotFound, "no VM is named web-2"},
		{[]string{"vm", "list", "--account", "nobody"}, exitNotFound, "no account is named nobody"},
	} {
		if r := d.sj(t, tt.args...); r.code != tt.code || !strings.Contains(r.stderr, tt.want) {
			t.Errorf("superjolt %s: exit %d, %q; want exit %d and %q", strings.Join(tt.args, " "), r.code, r.stderr, tt.code, tt.want)
		}
	}
	// The same VM name in another account: a name then names two VMs, and
	// the CLI asks for the id rather than pick one.
	b := okJSON[model.Account](t, d, "account", "create", "other", "--balance", "100")
	twin := okJSON[model.VM](t, d, "vm", "create", "--account", "other", "--tier", "nano", "--name", "web-1")
	if r := d.sj(t, "vm", "show", "web-1"); r.code != exitConflict || !strings.Contains(r.stderr, vm.ID) || !strings.Contains(r.stderr, twin.ID) || !strings.Contains(r.stderr, b.ID) {
		t.Errorf("vm show web-1 with two of them: exit %d, %q", r.code, r.stderr)
	}
	d.ok(t, "vm", "destroy", twin.ID, "--yes")
	bk := okJSON[model.Backup](t, d, "backup", "create", vm.ID)
	d.ok(t, "vm", "stop", vm.ID)

	complete := func(args ...string) string {
		return d.ok(t, append([]string{"__complete"}, append(args, "")...)...)
	}
	if out := complete("vm", "resume"); strings.Contains(out, vm.ID) {
		t.Errorf("vm resume completes the stopped %s, which cannot be resumed:\n%s", vm.ID, out)
	}
	if out := complete("vm", "start"); !strings.Contains(out, vm.ID) {
		t.Errorf("vm start does not complete the stopped %s:\n%s", vm.ID, out)
	}
	if out := complete("backup", "delete"); !strings.Contains(out, bk.ID) || !strings.HasSuffix(strings.TrimSpace(out), ":4") {
		t.Errorf("backup delete does not complete %s without files (directive 4):\n%s", bk.ID, out)
	}
	if r := d.sj(t, "backup", "lsit", vm.ID); r.code != exitUsage || !strings.Contains(r.stderr, "did you mean list") {
		t.Errorf("backup lsit: exit %d, %q; want a suggestion", r.code, r.stderr)
	}
}

// TestCLIClockAdvanceProgress: a long `debug clock advance` on a terminal
// says how far it has got as it goes, then where it ended (with one VM, a
// year takes some seconds here: a step per daily backup); and a VM whose
// disk may outgrow the pool is shown as overcommitted by vm show, pool
// and status.
func TestCLIClockAdvanceProgress(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "clock", "--balance", "1000")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano")
	d.ok(t, "vm", "stop", vm.ID)

	// Its 2 GiB disk may outgrow the 1 GiB test pool: overcommitted, and
	// said so where a person looks.
	if out := d.ok(t, "vm", "show", vm.ID); !strings.Contains(out, "Overcommitted:") || !strings.Contains(out, "disk on a 1.0 GiB pool") {
		t.Errorf("vm show of a VM whose disk may outgrow the pool:\n%s", out)
	}
	if out := d.ok(t, "pool"); !strings.Contains(out, "may grow to 2.0 GiB, more than the pool's 1.0 GiB") {
		t.Errorf("pool:\n%s", out)
	}
	if out := d.ok(t, "status"); !strings.Contains(out, "Disks:") || !strings.Contains(out, "overcommitted") {
		t.Errorf("status:\n%s", out)
	}

	term := newTmuxPane(t, 150, 40, "SUPERJOLT_SOCKET="+d.socket+" "+filepath.Join(d.bin, "superjolt")+" debug clock advance 366d")
	if got := term.waitExit(5 * time.Minute); got != "EXIT=0" {
		t.Fatalf("debug clock advance: %s\n%s", got, term.pane())
	}
	pane := term.pane()
	if !strings.Contains(pane, "advancing: the clock is at") || !strings.Contains(pane, "of 8784h0m0s done") || !strings.Contains(pane, "the clock is now") {
		t.Fatalf("the pane shows no progress:\n%s", pane)
	}
}
