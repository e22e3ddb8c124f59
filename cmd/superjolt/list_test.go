package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
)

// TestCLIListPages: `vm list` and `backup list` with filters and pages,
// in table and JSON form, against the real server and appliance on a
// socket (VM rows are put straight into the store: no VM runs).
func TestCLIListPages(t *testing.T) {
	pool := btrfstest.NewPool(t, 0)
	ctx := context.Background()
	st, err := store.Open(ctx, store.Options{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	app, err := appliance.New(ctx, appliance.Options{Store: st, Pool: pool, Clock: clock.NewManual(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)),
		RunDir: t.TempDir(), Subnet: netip.MustParsePrefix("10.79.0.0/24"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	alice, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: "alice", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	bob, err := app.CreateAccount(ctx, appliance.CreateAccountRequest{Name: "bob", Balance: model.Credit})
	if err != nil {
		t.Fatal(err)
	}
	err = st.Update(ctx, func(tx *store.Tx) error {
		for i := range 25 {
			id, err := tx.NewID(model.KindVM)
			if err != nil {
				return err
			}
			acct := []string{alice.ID, bob.ID}[i%2]
			at := time.Date(2026, 10, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(i%7) * time.Hour)
			err = tx.PutVM(model.VM{ID: id, AccountID: acct, Name: fmt.Sprintf("%s-%02d", []string{"web", "db"}[i%3/2], i), Tier: "nano",
				Image: appliance.DefaultImage, State: model.StateStopped, CreatedAt: at, StoppedAt: at, BilledUntil: at})
			if err != nil {
				return err
			}
			for j := range 2 {
				bk, err := tx.NewID(model.KindBackup)
				if err != nil {
					return err
				}
				kind := []model.BackupKind{model.Scheduled, model.OnDemand}[j]
				if err := tx.PutBackup(model.Backup{ID: bk, VMID: id, Kind: kind, TakenAt: at.Add(time.Duration(j) * time.Hour), Consistency: model.Offline}); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "sjlist")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "api.sock")
	sctx, cancel := context.WithCancel(ctx)
	ln, err := server.Listen(sctx, sock)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- server.New(app, server.Options{Logger: slog.New(slog.DiscardHandler)}).Serve(sctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	// run runs the CLI on the socket and returns its exit code, stdout,
	// stderr and the message main would print.
	run := func(args ...string) (int, string, string, string) {
		t.Helper()
		root := newRootCommand()
		var out, errb bytes.Buffer
		root.opts.stdout, root.opts.stderr = &out, &errb
		root.cmd.SetOut(&out)
		root.cmd.SetErr(&errb)
		root.cmd.SetArgs(append([]string{"--socket", sock}, args...))
		err := root.cmd.ExecuteContext(ctx)
		msg := ""
		if err != nil {
			msg = message(err)
		}
		return exitCode(ctx, err, root.ran), out.String(), errb.String(), msg
	}
	ids := func(out string, v any) []string {
		t.Helper()
		var items []struct {
			ID string `json:"id"`
		}
		switch v := v.(type) {
		case nil:
			if err := json.Unmarshal([]byte(out), &items); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
		case *string:
			var page map[string]json.RawMessage
			if err := json.Unmarshal([]byte(out), &page); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			var key string
			for k := range page {
				if k != "next_cursor" {
					key = k
				}
			}
			if err := json.Unmarshal(page[key], &items); err != nil {
				t.Fatalf("%v: %s", err, out)
			}
			if err := json.Unmarshal(page["next_cursor"], v); err != nil {
				t.Fatalf("next_cursor: %v: %s", err, out)
			}
		}
		var out2 []string
		for _, it := range items {
			out2 = append(out2, it.ID)
		}
		return out2
	}

	code, out, _, msg := run("vm", "list", "-o", "json")
	if code != 0 {
		t.Fatalf("vm list = %d %s", code, msg)
	}
	whole := ids(out, nil)
	if len(whole) != 25 {
		t.Fatalf("vm list has %d VMs, want 25", len(whole))
	}
	// JSON pages: {"vms": [...], "next_cursor": "..."}, followed to the end.
	var paged []string
	cursor := ""
	for range 10 {
		args := []string{"vm", "list", "--limit", "10", "-o", "json"}
		if cursor != "" {
			args = append(args, "--cursor", cursor)
		}
		code, out, _, msg := run(args...)
		if code != 0 {
			t.Fatalf("%v = %d %s", args, code, msg)
		}
		var next string
		paged = append(paged, ids(out, &next)...)
		if cursor = next; cursor == "" {
			break
		}
	}
	if !slices.Equal(paged, whole) {
		t.Errorf("vm list by pages of 10 = %v\nwant %v", paged, whole)
	}
	// Table pages: the table on stdout, the next cursor on stderr.
	code, out, errOut, msg := run("vm", "list", "--limit", "10")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 11 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(errOut, "--cursor ") {
		t.Fatalf("vm list --limit 10 = %d %s\nstdout:\n%s\nstderr: %s", code, msg, out, errOut)
	}
	next := strings.Fields(errOut[strings.Index(errOut, "--cursor ")+len("--cursor "):])[0]
	code, out, errOut, _ = run("vm", "list", "--limit", "10", "--cursor", next)
	if code != 0 || !strings.Contains(out, whole[10]) || strings.Contains(out, whole[9]) || errOut == "" {
		t.Errorf("second page = %d\n%s\nstderr %s; want VMs 11 to 20", code, out, errOut)
	}
	code, _, errOut, _ = run("vm", "list", "--limit", "10", "--cursor", paged[len(paged)-6])
	if code == 0 {
		t.Errorf("a VM id as cursor was taken")
	}
	code, out, errOut, _ = run("vm", "list", "--limit", "1000", "--state", "stopped")
	if code != 0 || errOut != "" {
		t.Errorf("last page = %d, stderr %q; want no next cursor", code, errOut)
	}

	// Filters.
	code, out, _, msg = run("vm", "list", "--account", "bob", "--name", "db-", "-o", "json")
	got := ids(out, nil)
	if code != 0 || len(got) == 0 {
		t.Fatalf("vm list --account bob --name db- = %d %s %s", code, msg, out)
	}
	code, out, _, _ = run("vm", "list", "-o", "json")
	var all []model.VM
	_ = json.Unmarshal([]byte(out), &all)
	for _, vm := range all {
		if want := vm.AccountID == bob.ID && strings.HasPrefix(vm.Name, "db-"); want != slices.Contains(got, vm.ID) {
			t.Errorf("vm list --account bob --name db-: %s (%s, %s) listed %v", vm.ID, vm.AccountID, vm.Name, !want)
		}
	}

	// Backups: every VM's, by kind, an account's a page at a time, one VM's.
	code, out, _, msg = run("backup", "list", "-o", "json")
	if got := ids(out, nil); code != 0 || len(got) != 50 {
		t.Errorf("backup list = %d %s: %d backups, want 50", code, msg, len(got))
	}
	code, out, _, msg = run("backup", "list", "--kind", "on_demand", "-o", "json")
	var bs []model.Backup
	if err := json.Unmarshal([]byte(out), &bs); code != 0 || err != nil || len(bs) != 25 {
		t.Errorf("backup list --kind on_demand = %d %s: %d backups, %v; want 25", code, msg, len(bs), err)
	}
	for _, b := range bs {
		if b.Kind != model.OnDemand {
			t.Errorf("backup list --kind on_demand lists %s of kind %s", b.ID, b.Kind)
		}
	}
	var acctPaged []string
	cursor = ""
	for range 20 {
		args := []string{"backup", "list", "--account", "alice", "--limit", "4", "-o", "json"}
		if cursor != "" {
			args = append(args, "--cursor", cursor)
		}
		code, out, _, msg := run(args...)
		if code != 0 {
			t.Fatalf("%v = %d %s", args, code, msg)
		}
		var next string
		acctPaged = append(acctPaged, ids(out, &next)...)
		if cursor = next; cursor == "" {
			break
		}
	}
	if len(acctPaged) != 26 {
		t.Errorf("alice's backups by pages of 4 = %d, want 26", len(acctPaged))
	}
	code, out, _, msg = run("backup", "list", whole[0])
	if code != 0 || strings.Count(out, "\n") != 3 {
		t.Errorf("backup list %s = %d %s\n%s; want its 2 backups", whole[0], code, msg, out)
	}

	// Bad values say what is allowed.
	for _, tc := range []struct {
		args []string
		says string
	}{
		{[]string{"vm", "list", "--limit", "0"}, "1 to 1000"},
		{[]string{"vm", "list", "--limit", "5000"}, "1 to 1000"},
		{[]string{"vm", "list", "--cursor", next}, "give --limit too"},
		{[]string{"vm", "list", "--limit", "5", "--cursor", "garbage!"}, "without a cursor"},
		{[]string{"vm", "list", "--name", "Web"}, "name prefix"},
		{[]string{"backup", "list", "--kind", "daily"}, "scheduled or on_demand"},
		{[]string{"backup", "list", "a", "b"}, "at most one VM"},
	} {
		if code, _, _, msg := run(tc.args...); code != exitUsage || !strings.Contains(msg, tc.says) {
			t.Errorf("%v = exit %d %q; want %d saying %q", tc.args, code, msg, exitUsage, tc.says)
		}
	}
}
