package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// vmView is one VM's page: what it is, its backups newest first (the
// cursor picks one to restore from or delete), ports, domains, its recent
// events and the tail of its console.
type vmView struct {
	id string
	list
	// console is the tail of its console log, as last read.
	console []string
}

var backupColumns = []table.Column{
	{Title: "BACKUP", Width: 13},
	{Title: "KIND", Width: 9},
	{Title: "TAKEN", Width: 12, Flex: 1},
	{Title: "AGE", Width: 8, Drop: 2},
	{Title: "SIZE", Width: 7, Right: true, Drop: 1},
	{Title: "CONSISTENCY", Width: 11},
}

func newVMView(m *Model, id string) *vmView {
	v := &vmView{id: id, list: newList(m, backupColumns)}
	v.tbl.Empty = "no backups yet: b backs it up now"
	v.deps = func(m *Model) int { return m.d.gen.backups }
	v.desc = true
	v.top = true
	v.col = 2
	v.all = func(m *Model) []string {
		bks := m.d.backups[v.id]
		ids := make([]string, len(bks))
		for i, b := range bks {
			ids[i] = b.ID
		}
		return ids
	}
	v.text = func(m *Model, id string) string {
		b := v.backup(m, id)
		return b.ID + " " + string(b.Kind) + " " + string(b.Consistency)
	}
	v.sortKey = func(m *Model, id string, col int) string {
		b := v.backup(m, id)
		switch col {
		case 1:
			return string(b.Kind)
		case 4:
			return fmt.Sprintf("%020d", b.SizeBytes)
		case 5:
			return string(b.Consistency)
		case 0:
			return b.ID
		}
		return b.TakenAt.UTC().Format(timeKey)
	}
	v.cells = func(m *Model, id string) []string {
		b := v.backup(m, id)
		now := m.now()
		return []string{b.ID, string(b.Kind), stamp(now, b.TakenAt, m.loc), ago(now, b.TakenAt), fmtBytes(b.SizeBytes), string(b.Consistency)}
	}
	return v
}

func (v *vmView) backup(m *Model, id string) model.Backup {
	for _, b := range m.d.backups[v.id] {
		if b.ID == id {
			return b
		}
	}
	return model.Backup{ID: id}
}

func (v *vmView) title(m *Model) string {
	vm := m.d.vms[v.id]
	if vm.Name != "" {
		return vm.Name
	}
	return v.id
}

func (v *vmView) keys(m *Model) []key.Binding {
	k := m.keys
	return enabled(k.Back, k.Backup, k.Restore, k.DeleteBackup, k.StopStart, k.Destroy, k.Resume,
		k.AddPort, k.RemovePort, k.AddDomain, k.RemoveDomain, k.TopUp)
}

func (v *vmView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if v.nav(m, msg, len(backupColumns)) {
		return nil, true
	}
	switch {
	case key.Matches(msg, m.keys.DeleteBackup):
		return m.deleteBackup(v.id, v.selected()), true
	case key.Matches(msg, m.keys.Restore):
		return m.restorePicker(v.id, v.selected()), true
	}
	return m.vmAction(msg, v.id)
}

func (v *vmView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

// render lays the page out: the facts at the top, the backups table, then
// recent events and the console's tail in what is left.
func (v *vmView) render(m *Model, w, h int) string {
	vm, ok := m.d.vms[v.id]
	if !ok {
		return m.st.Dim.Render(" " + v.id + " is gone")
	}
	st := m.st
	facts := v.facts(m, vm)
	var top []string
	for i := 0; i < len(facts); i += 2 {
		line := " " + st.Label.Render(fmt.Sprintf("%-8s", facts[i][0])) + " " + fmt.Sprintf("%-26s", facts[i][1])
		if i+1 < len(facts) {
			line += " " + st.Label.Render(fmt.Sprintf("%-8s", facts[i+1][0])) + " " + facts[i+1][1]
		}
		top = append(top, ansi.Truncate(line, w, "…"))
	}
	if o, ok := m.d.running(v.id); ok {
		top = append(top, " "+st.Busy.Render(doing(o.Kind))+" "+m.trail(o))
	}
	// The backups table gets what the events and the console leave,
	// which get room only on a tall terminal.
	rest := h - len(top)
	evH, conH := 0, 0
	if rest >= 14 {
		evH = min(6, rest/4)
	}
	if rest >= 24 {
		conH = min(10, rest/4)
	}
	bkH := max(rest-evH-conH, 3)
	out := strings.Join(top, "\n") + "\n" + v.draw(m, w, bkH)
	if evH > 0 {
		out += "\n" + st.TableHeader.Render(ansi.Truncate(" RECENT EVENTS", w, "")) + "\n" + v.events(m, w, evH-1)
	}
	if conH > 0 {
		out += "\n" + st.TableHeader.Render(ansi.Truncate(" CONSOLE (superjolt vm console "+v.id+" attaches)", w, "")) + "\n" + v.consoleTail(m, w, conH-1)
	}
	return out
}

// facts are the VM's labelled properties, two to a line.
func (v *vmView) facts(m *Model, vm model.VM) [][2]string {
	now := m.now()
	ip := "-"
	switch {
	case vm.IP.IsValid():
		ip = vm.IP.String()
	case vm.LastIP.IsValid():
		ip = vm.LastIP.String() + " (kept)"
	}
	state := m.st.StateStyle(vm.State).Render(string(vm.State))
	switch {
	case !vm.State.Live():
		state += " · reclaimed in " + countdown(vm.ReclaimAt.Sub(now))
	case vm.State == model.StateStopped && vm.StopReason != "":
		state += " · " + string(vm.StopReason)
	}
	ports := make([]string, len(vm.Ports))
	for i, p := range vm.Ports {
		ports[i] = p.String()
	}
	orNone := func(xs []string) string {
		if len(xs) == 0 {
			return "-"
		}
		return strings.Join(xs, ", ")
	}
	boot := vm.BootID
	if boot == "" {
		boot = "-"
	}
	usage := "-"
	if u, ok := m.d.usage[vm.ID]; ok && vm.State == model.StateRunning {
		// What its QEMU (or its unit's cgroup) has used: memory now, CPU
		// time since it started, and how busy it is.
		usage = fmt.Sprintf("%s · %s CPU (%.0f%%)", mem(u.MemoryBytes), u.CPUTime.Round(100*time.Millisecond), u.CPUPercent)
	}
	return [][2]string{
		{"ID", vm.ID}, {"STATE", state},
		{"ACCOUNT", m.d.accountName(vm.AccountID)}, {"TIER", vm.Tier},
		{"IP", ip}, {"BOOT", boot},
		{"PORTS", orNone(ports)}, {"DOMAINS", orNone(vm.DomainsShown())},
		{"CREATED", ago(now, vm.CreatedAt)}, {"NEXT", in(now, vm.NextBackupAt)},
		{"USAGE", usage},
	}
}

// consoleTail draws the last h lines of the VM's console log, without the
// guest's escape sequences and control characters.
func (v *vmView) consoleTail(m *Model, w, h int) string {
	lines := v.console[max(len(v.console)-h, 0):]
	if len(lines) == 0 {
		return m.st.Dim.Render(" (nothing on its console yet)")
	}
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = m.st.Dim.Render(ansi.Truncate(" "+l, w, "…"))
	}
	return strings.Join(out, "\n")
}

// events draws the VM's last events, newest last.
func (v *vmView) events(m *Model, w, h int) string {
	var mine []model.Event
	for i := len(m.d.events) - 1; i >= 0 && len(mine) < h; i-- {
		e := m.d.events[i]
		if e.Object == v.id || strings.Contains(e.Message, v.id) {
			mine = append(mine, e)
		}
	}
	var lines []string
	for i := len(mine) - 1; i >= 0; i-- {
		e := mine[i]
		lines = append(lines, ansi.Truncate(" "+stamp(m.now(), e.At, m.loc)+" "+e.Message, w, "…"))
	}
	if len(lines) == 0 {
		lines = append(lines, m.st.Dim.Render(" none since the console started"))
	}
	return lipgloss.JoinVertical(lipgloss.Left, lines...)
}
