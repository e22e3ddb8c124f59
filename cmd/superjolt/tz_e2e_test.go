package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// sjTZ runs the CLI against d in time zone tz (the TZ variable) and
// returns its stdout, failing the test unless it exits 0.
func (d *daemon) sjTZ(t *testing.T, tz string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(d.bin, "superjolt"), args...)
	cmd.Env = append(os.Environ(), "SUPERJOLT_SOCKET="+d.socket, "TZ="+tz)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("TZ=%s superjolt %s: %v\nstdout: %s\nstderr: %s", tz, strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// TestCLITimeZones: one rule for time, whatever the operator's zone. For
// UTC, America/Los_Angeles, Asia/Kolkata and Pacific/Chatham, with
// backups taken around midnight in each, the backup that `backup restore
// --from DATE` and `--from yesterday` restore is the one `backup list`
// shows, in that zone, as the newest taken on that date; every time the
// CLI prints names its zone. (Days across a DST change are covered by
// model's TestPickBackup, the one function both use.)
func TestCLITimeZones(t *testing.T) {
	needVMs(t)
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "tz", "--balance", "1000")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano")
	d.ok(t, "vm", "stop", vm.ID) // restores of a stopped VM need no boot: quick

	// Backups at fixed UTC times of day over two days: each zone sees some
	// of them on either side of its midnight.
	st := okJSON[api.Status](t, d, "debug", "clock", "show")
	day := st.Now.UTC().Truncate(24 * time.Hour).Add(24 * time.Hour)
	for _, at := range []time.Duration{2*time.Hour + 21*time.Minute, 11 * time.Hour, 19 * time.Hour, 23*time.Hour + 30*time.Minute,
		24*time.Hour + 1*time.Hour, 24*time.Hour + 10*time.Hour + 50*time.Minute} {
		now := okJSON[api.Status](t, d, "debug", "clock", "show").Now
		if by := day.Add(at).Sub(now); by > 0 {
			okJSON[api.ClockResult](t, d, "debug", "clock", "advance", by.String())
		}
		okJSON[model.Backup](t, d, "backup", "create", vm.ID)
	}
	okJSON[api.ClockResult](t, d, "debug", "clock", "advance", "2h")

	for _, tz := range []string{"UTC", "America/Los_Angeles", "Asia/Kolkata", "Pacific/Chatham"} {
		t.Run(tz, func(t *testing.T) {
			loc, err := time.LoadLocation(tz)
			if err != nil {
				t.Skipf("time zone %s is not on this machine: %v", tz, err)
			}
			abbr, _ := st.Now.In(loc).Zone()
			// What the operator reads: ID and the date of TAKEN AT.
			listed := map[string]string{} // date -> newest id listed that day
			var order []string
			for i, line := range strings.Split(strings.TrimSpace(d.sjTZ(t, tz, "backup", "list", vm.ID)), "\n") {
				f := strings.Fields(line)
				if i == 0 {
					continue // header
				}
				// ID VM KIND DATE TIME ZONE SIZE… : every time names its zone.
				if len(f) < 6 || f[5] != abbr {
					t.Fatalf("backup list row %q does not show its time in %s (%s)", line, tz, abbr)
				}
				if _, ok := listed[f[3]]; !ok { // newest first: the first of a date is its newest
					listed[f[3]] = f[0]
					order = append(order, f[3])
				}
			}
			if len(order) < 2 {
				t.Fatalf("the backups fall on %v in %s; want at least two dates", order, tz)
			}
			restores := func() map[string]string { // op id -> backup id
				var ops []model.Operation
				if err := json.Unmarshal([]byte(d.sjTZ(t, tz, "op", "list", "--vm", vm.ID, "--limit", "10000", "-o", "json")), &ops); err != nil {
					t.Fatal(err)
				}
				out := map[string]string{}
				for _, o := range ops {
					if o.Kind == model.OpRestore {
						out[o.ID] = o.BackupID
					}
				}
				return out
			}
			restored := func(from string) string {
				before := restores()
				d.sjTZ(t, tz, "backup", "restore", vm.ID, "--from", from, "--yes")
				for id, bk := range restores() {
					if _, ok := before[id]; !ok {
						return bk
					}
				}
				t.Fatalf("no new restore in op list after --from %s", from)
				return ""
			}
			for _, date := range order {
				if got := restored(date); got != listed[date] {
					t.Errorf("--from %s restored %s; backup list shows %s as the newest taken that day in %s", date, got, listed[date], tz)
				}
			}
			now := okJSON[api.Status](t, d, "debug", "clock", "show").Now.In(loc)
			yesterday := time.Date(now.Year(), now.Month(), now.Day()-1, 12, 0, 0, 0, loc).Format(time.DateOnly)
			if want, ok := listed[yesterday]; ok {
				if got := restored("yesterday"); got != want {
					t.Errorf("--from yesterday (%s in %s) restored %s, want %s", yesterday, tz, got, want)
				}
			}
			// The clock and an operation's times name the zone too.
			if out := d.sjTZ(t, tz, "debug", "clock", "show"); !strings.Contains(out, " "+abbr) {
				t.Errorf("debug clock show in %s does not name %s:\n%s", tz, abbr, out)
			}
		})
	}
}
