package main

import (
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// waitPane waits up to limit until ok accepts what the pane shows, and
// returns that; what names the wait in the failure.
func (term *tmuxPane) waitPane(limit time.Duration, what string, ok func(pane string) bool) string {
	term.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		pane := term.pane()
		if ok(pane) {
			return pane
		}
		if time.Now().After(deadline) {
			term.t.Fatalf("after %s, still no %s; the pane:\n%s", limit, what, pane)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tryPane is waitPane that does not fail: it returns the last pane and
// whether ok accepted it within limit.
func (term *tmuxPane) tryPane(limit time.Duration, ok func(pane string) bool) (string, bool) {
	term.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		pane := term.pane()
		if ok(pane) {
			return pane, true
		}
		if time.Now().After(deadline) {
			return pane, false
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// paneLines returns the pane's lines, trimmed.
func paneLines(pane string) []string {
	var out []string
	for _, l := range strings.Split(pane, "\n") {
		out = append(out, strings.TrimSpace(l))
	}
	return out
}

// rowOf returns the fields of the table row of id (">" of the cursor
// left out), or nil when the pane has none.
func rowOf(pane, id string) []string {
	for _, l := range paneLines(pane) {
		l = strings.TrimPrefix(l, ">")
		if f := strings.Fields(l); len(f) > 0 && f[0] == id {
			return f
		}
	}
	return nil
}

// hasLine says whether a line of the pane contains s.
func hasLine(pane, s string) bool {
	return slices.ContainsFunc(paneLines(pane), func(l string) bool { return strings.Contains(l, s) })
}

var (
	bootRe      = regexp.MustCompile(`\bBOOT\s+(\S+)`)
	pageStateRe = regexp.MustCompile(`\bSTATE\s+(\S+)`)
	backupRowRe = regexp.MustCompile(`^>?(bk-[a-z0-9]+)\s+(on_demand|scheduled)\s.*\s(frozen|crash|offline)$`)
	reclaimRe   = regexp.MustCompile(`(?:23h 5\dm \d\ds|24h 00m 00s)$`)
)

// vmPage reads a VM's page: its BOOT, its STATE and its backups rows
// (id -> "kind consistency").
func vmPage(pane string) (boot, state string, backups map[string]string) {
	backups = map[string]string{}
	for _, l := range paneLines(pane) {
		if m := bootRe.FindStringSubmatch(l); m != nil {
			boot = m[1]
		}
		if m := pageStateRe.FindStringSubmatch(l); m != nil && strings.HasPrefix(l, "ID ") {
			state = m[1]
		}
		if m := backupRowRe.FindStringSubmatch(l); m != nil {
			backups[m[1]] = m[2] + " " + m[3]
		}
	}
	return boot, state, backups
}

// TestTUIEndToEnd drives `superjolt tui` in a real terminal (tmux,
// 120×40) against a real superjoltd (manual clock) with a real guest, and
// reads every step off the screen: the VM running, b (back up now) adding
// a frozen on-demand backup to the VM's page, r restoring from it with the
// typed confirmation (restoring…, then running on a new boot id), d
// destroying it into the graveyard with ~24 h left, u resuming it, a
// second destroy reclaimed by a clock advance made outside the console
// without a key press, and superjoltd's stop and start shown as
// UNREACHABLE and then recovered by themselves. q then quits with 0.
func TestTUIEndToEnd(t *testing.T) {
	needVMs(t)
	begin := time.Now()
	stage := begin
	step := func(what string) {
		t.Logf("%-58s %6.1fs (total %6.1fs)", what, time.Since(stage).Seconds(), time.Since(begin).Seconds())
		stage = time.Now()
	}
	const (
		boot    = 5 * time.Minute // a guest's boot under TCG, with room
		quick   = time.Minute     // what needs no boot
		vmName  = "tui-1"
		typeBox = "Type " + vmName + " to confirm:"
	)

	// 1. An account and a VM, made with the CLI before the console starts;
	// the clock then moves past the VM's first hour, so that a destroy
	// sends it to the graveyard rather than reclaiming it at once.
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "tui", "--balance", "1000")
	vm := okJSON[model.VM](t, d, "vm", "create", "--account", a.ID, "--tier", "nano", "--name", vmName)
	// A backup from before, so that the VM's page has a row when b adds
	// one (and the page's cursor is on it, not on the new one).
	first := okJSON[model.Backup](t, d, "backup", "create", vm.ID)
	d.ok(t, "debug", "clock", "advance", "2h")
	vm = okJSON[model.VM](t, d, "vm", "show", vm.ID)
	if vm.State != model.StateRunning || vm.BootID == "" {
		t.Fatalf("after vm create: %s, boot id %q; want running with a boot id", vm.State, vm.BootID)
	}
	step("account and VM created (CLI), clock +2h")

	term := newTmuxPane(t, 120, 40, "TZ=UTC TERM=xterm-256color "+filepath.Join(d.bin, "superjolt")+" tui --socket "+d.socket)
	pane := term.waitPane(quick, "VM "+vm.ID+" running in the VMs view", func(p string) bool {
		r := rowOf(p, vm.ID)
		return len(r) > 4 && r[1] == vmName && r[4] == "running"
	})
	if !hasLine(pane, "[VMs]") {
		t.Fatalf("the console does not open on the VMs view:\n%s", pane)
	}
	step("1. VMs view shows the VM running")

	// 2. b: back up now; the VM's page then has one row more, on_demand
	// and frozen.
	term.keys("Enter")
	pane = term.waitPane(quick, "VM page of "+vm.ID+" with its boot id", func(p string) bool {
		b, st, _ := vmPage(p)
		return hasLine(p, "["+vmName+"]") && b != "" && b != "-" && st == "running"
	})
	oldBoot, _, before := vmPage(pane)
	if _, ok := before[first.ID]; !ok {
		t.Fatalf("the VM page does not list the backup %s made before:\n%s", first.ID, pane)
	}
	if oldBoot != vm.BootID {
		t.Fatalf("the VM page shows BOOT %s; vm show -o json says %s:\n%s", oldBoot, vm.BootID, pane)
	}
	t.Logf("the VM page before b (%d backup rows):\n%s", len(before), pane)
	term.keys("Escape")
	term.waitPane(quick, "the VMs view again", func(p string) bool { return hasLine(p, "[VMs]") })
	term.keys("b")
	term.waitPane(quick, "a note that the backup was asked for", func(p string) bool { return hasLine(p, "backup of "+vm.ID) })
	term.keys("Enter")
	var newBk string
	pane = term.waitPane(boot, "a new backup row on the VM page", func(p string) bool {
		_, _, after := vmPage(p)
		if len(after) != len(before)+1 {
			return false
		}
		for id := range after {
			if _, ok := before[id]; !ok {
				newBk = id
			}
		}
		return newBk != ""
	})
	_, _, after := vmPage(pane)
	if got := after[newBk]; got != "on_demand frozen" {
		t.Fatalf("the new backup %s shows %q; want on_demand frozen:\n%s", newBk, got, pane)
	}
	step("2. b: new on_demand frozen backup " + newBk + " on the VM page")
	t.Logf("the VM page after b:\n%s", pane)

	// 3. r: restore from it. The picker, then the confirmation that starts
	// on Cancel: Tab to the box, the name, Enter to the button, Enter.
	term.waitPane(quick, "no operation under way on the VM page", func(p string) bool { return !hasLine(p, "backing up…") })
	term.keys("r")
	pane = term.waitPane(quick, "the restore picker", func(p string) bool { return hasLine(p, "Restore "+vm.ID+" from…") })
	// The picker starts on the backup under the page's cursor; move to
	// the new one.
	for i := 0; ; i++ {
		cur, want := pickerLine(pane, ""), pickerLine(pane, newBk)
		if cur < 0 || want < 0 {
			t.Fatalf("the restore picker shows no cursor (>) or no %s:\n%s", newBk, pane)
		}
		if cur == want {
			break
		}
		if i > 20 {
			t.Fatalf("the picker's cursor does not reach %s:\n%s", newBk, pane)
		}
		k := "Down"
		if want < cur {
			k = "Up"
		}
		term.keys(k)
		pane = term.waitPane(quick, "the picker's cursor moved by "+k, func(p string) bool { return pickerLine(p, "") != cur })
	}
	term.keys("Enter")
	pane = term.waitPane(quick, "the restore confirmation", func(p string) bool {
		return hasLine(p, "Restore "+vm.ID+"?") && hasLine(p, typeBox) && hasLine(p, "> Cancel <")
	})
	if !hasLine(pane, "goes back to "+newBk) {
		t.Fatalf("the confirmation does not name %s:\n%s", newBk, pane)
	}
	confirm := func(button string) {
		t.Helper()
		term.keys("Tab")
		term.waitPane(quick, "focus on the name box", func(p string) bool { return hasLine(p, "▸ "+typeBox) })
		term.keys("-l", vmName)
		term.waitPane(quick, "the name typed in the box", func(p string) bool { return hasLine(p, typeBox+" ["+vmName) })
		term.keys("Enter")
		term.waitPane(quick, "focus on "+button, func(p string) bool { return hasLine(p, "> "+button+" <") })
		term.keys("Enter")
	}
	confirm("Restore")
	restoreAt := time.Now()
	sawRestoring, seen := false, ""
	var busy []string // the busy lines shown, in order
	pane = term.waitPane(boot, "the VM running again on a new boot id", func(p string) bool {
		if hasLine(p, "restoring…") {
			if !sawRestoring {
				seen = p
			}
			sawRestoring = true
			for _, l := range paneLines(p) {
				if strings.HasPrefix(l, "restoring…") && !slices.Contains(busy, l) {
					busy = append(busy, l)
				}
			}
		}
		b, st, _ := vmPage(p)
		return !hasLine(p, "restoring…") && !hasLine(p, "sending…") && st == "running" && b != "" && b != "-" && b != oldBoot
	})
	took := time.Since(restoreAt)
	newBoot, _, _ := vmPage(pane)
	if !hasLine(seen+pane, "restore of "+vm.ID+" from "+newBk) {
		t.Errorf("no note that the restore from %s was asked for:\n%s", newBk, pane)
	}
	switch {
	case sawRestoring:
		t.Logf("restoring… shown (busy lines seen: %q); the first pane with it:\n%s", busy, seen)
	case took > 3*time.Second:
		t.Errorf("the restore took %s, yet the console never showed restoring…", took.Round(time.Millisecond))
	default:
		t.Logf("the restore took only %s: too quick to see restoring…", took.Round(time.Millisecond))
	}
	if got := okJSON[model.VM](t, d, "vm", "show", vm.ID).BootID; got != newBoot {
		t.Errorf("the VM page shows BOOT %s after the restore; vm show -o json says %s", newBoot, got)
	}
	step("3. r: restored (" + took.Round(time.Second).String() + "), BOOT " + oldBoot + " -> " + newBoot)

	// 4. d: destroy it; it is in the graveyard with 24 h to go.
	term.keys("d")
	pane = term.waitPane(quick, "the destroy confirmation", func(p string) bool {
		return hasLine(p, "Destroy "+vm.ID+"?") && hasLine(p, typeBox) && hasLine(p, "> Cancel <")
	})
	if !hasLine(pane, "stops and goes to the graveyard") {
		t.Fatalf("the destroy confirmation of a VM over an hour old does not say it goes to the graveyard:\n%s", pane)
	}
	confirm("Destroy")
	term.waitPane(quick, "the confirmation closed", func(p string) bool { return !hasLine(p, typeBox) })
	term.keys("3")
	graveRow := func(p string) bool {
		r := rowOf(p, vm.ID)
		return hasLine(p, "[Graveyard(1)]") && len(r) > 4 && r[1] == vmName && r[3] == "graveyard"
	}
	pane = term.waitPane(boot, vm.ID+" in the graveyard view", graveRow)
	row := strings.Join(rowOf(pane, vm.ID), " ")
	if !reclaimRe.MatchString(strings.TrimSuffix(row, " "+lastField(row))) {
		t.Errorf("the graveyard row %q does not show ~24 h left in RECLAIMED IN:\n%s", row, pane)
	}
	step("4. d: in the graveyard: " + row)

	// 5. u: resume it from the graveyard view; it runs again.
	term.keys("u")
	term.waitPane(quick, "a note that the resume was asked for", func(p string) bool { return hasLine(p, "resume of "+vm.ID) })
	pane = term.waitPane(boot, vm.ID+" gone from the graveyard view", func(p string) bool { return rowOf(p, vm.ID) == nil })
	if !hasLine(pane, "the graveyard and the archive are empty") {
		t.Errorf("the graveyard view after the resume:\n%s", pane)
	}
	term.keys("1")
	// The daemon's word first (a boot under TCG), then the console's: it
	// must show running soon after superjoltd does.
	deadline := time.Now().Add(boot)
	for okJSON[model.VM](t, d, "vm", "show", vm.ID).State != model.StateRunning {
		if time.Now().After(deadline) {
			t.Fatalf("superjoltd does not say %s is running %s after the resume", vm.ID, boot)
		}
		time.Sleep(200 * time.Millisecond)
	}
	running := func(p string) bool { r := rowOf(p, vm.ID); return len(r) > 4 && r[4] == "running" }
	if pane, ok := term.tryPane(30*time.Second, running); !ok {
		t.Errorf("superjoltd says %s is running after the resume, but 30 s later the VMs view still shows %q:\n%s",
			vm.ID, rowOf(pane, vm.ID)[4], pane)
		step("5. u: resumed; the VMs view does NOT show running")
	} else {
		step("5. u: resumed, running")
	}

	// 6. Destroy it again; a clock advance of 25 h (the CLI, outside the
	// console) reclaims it and it leaves the graveyard view by itself.
	term.keys("d")
	term.waitPane(quick, "the destroy confirmation", func(p string) bool {
		return hasLine(p, "Destroy "+vm.ID+"?") && hasLine(p, "> Cancel <")
	})
	confirm("Destroy")
	term.waitPane(quick, "the confirmation closed", func(p string) bool { return !hasLine(p, typeBox) })
	term.keys("3")
	term.waitPane(boot, vm.ID+" in the graveyard view again", graveRow)
	d.ok(t, "debug", "clock", "advance", "25h")
	pane = term.waitPane(quick, vm.ID+" gone from the graveyard view without a key", func(p string) bool {
		return rowOf(p, vm.ID) == nil && hasLine(p, "the graveyard and the archive are empty")
	})
	if r := d.sj(t, "vm", "show", vm.ID); r.code != exitNotFound {
		t.Errorf("vm show after the reclaim: exit %d, %s", r.code, r.stderr)
	}
	step("6. destroyed again, clock +25h: reclaimed, gone by itself")

	// 7. superjoltd stops: UNREACHABLE; it starts again: the console
	// recovers by itself.
	d.stop(t)
	pane = term.waitPane(quick, "UNREACHABLE", func(p string) bool {
		return strings.Contains(strings.Split(p, "\n")[0], "UNREACHABLE") && hasLine(p, "superjoltd is unreachable")
	})
	t.Logf("superjoltd stopped:\n%s", pane)
	step("7a. superjoltd stopped: UNREACHABLE")
	d.start(t)
	pane = term.waitPane(quick, "the console reconnected", func(p string) bool {
		return !strings.Contains(p, "UNREACHABLE") && !hasLine(p, "superjoltd is unreachable")
	})
	if !hasLine(pane, "[Graveyard]") {
		t.Errorf("after reconnecting the console is not on the graveyard view:\n%s", pane)
	}
	step("7b. superjoltd started: recovered")

	term.keys("q")
	if got := term.waitExit(30 * time.Second); got != "EXIT=0" {
		t.Fatalf("superjolt tui after q: %s\n%s", got, term.pane())
	}
	step("q: exit 0")
}

// pickerLine returns the index of the picker's line of backup id, or,
// for "", of the line under its cursor; -1 when there is none.
func pickerLine(pane, id string) int {
	for i, l := range paneLines(pane) {
		l = strings.TrimSpace(strings.Trim(l, "│"))
		if id == "" && strings.HasPrefix(l, "> ") || id != "" && strings.HasPrefix(strings.TrimPrefix(l, "> "), id+" ") {
			return i
		}
	}
	return -1
}

// lastField returns the last space-separated field of s.
func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}
