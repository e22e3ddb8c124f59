package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// vmsView is the main view: every VM, live.
type vmsView struct{ list }

var vmColumns = []table.Column{
	{Title: "ID", Width: 9},
	{Title: "NAME", Width: 8, Flex: 2},
	{Title: "ACCOUNT", Width: 8, Flex: 1},
	{Title: "TIER", Width: 6, Drop: 3},
	{Title: "STATE", Width: 11},
	{Title: "IP", Width: 11, Drop: 2},
	{Title: "LAST BACKUP", Width: 16, Flex: 1},
	{Title: "NEXT", Width: 11, Drop: 4},
	{Title: "MEM", Width: 5, Right: true, Drop: 6},
	{Title: "CPU", Width: 4, Right: true, Drop: 5},
}

func newVMsView(m *Model) *vmsView {
	v := &vmsView{newList(m, vmColumns)}
	v.tbl.Empty = "no VMs yet: c creates one"
	v.deps = func(m *Model) int {
		g := m.d.gen
		switch {
		case v.filt != "":
			return sum(g.vms, g.accounts) // the filter reads names
		case v.col == 2:
			return sum(g.vms, g.accounts)
		case v.col == 6:
			return sum(g.vms, g.backups)
		case v.col == 8 || v.col == 9:
			return sum(g.vms, g.usage)
		}
		return g.vms
	}
	v.all = func(m *Model) []string {
		ids := make([]string, 0, len(m.d.vms))
		for id := range m.d.vms {
			ids = append(ids, id)
		}
		return ids
	}
	v.text = func(m *Model, id string) string {
		vm := m.d.vms[id]
		return strings.Join([]string{vm.ID, vm.Name, vm.AccountID, m.d.accountName(vm.AccountID), vm.Tier, string(vm.State), vm.IP.String()}, " ")
	}
	v.sortKey = vmSortKey
	v.cells = vmCells
	v.style = func(m *Model, id string) *lipgloss.Style { return nil }
	return v
}

func vmSortKey(m *Model, id string, col int) string {
	if col == 0 {
		return id
	}
	vm := m.d.vms[id]
	switch col {
	case 1:
		return vm.Name
	case 2:
		return m.d.accountName(vm.AccountID)
	case 3:
		return fmt.Sprintf("%012d", m.d.tiers[vm.Tier].RatePerHour)
	case 4:
		return string(vm.State)
	case 5:
		ip := vm.IP
		if !ip.IsValid() {
			ip = vm.LastIP
		}
		if ip.IsValid() {
			b := ip.As16()
			return string(b[:])
		}
		return "\xff"
	case 6:
		if b, ok := m.d.lastBackup(id); ok {
			return b.TakenAt.UTC().Format(timeKey)
		}
		return ""
	case 7:
		return vm.NextBackupAt.UTC().Format(timeKey)
	case 8:
		return fmt.Sprintf("%020d", m.d.usage[id].MemoryBytes)
	case 9:
		return fmt.Sprintf("%012.3f", m.d.usage[id].CPUPercent)
	}
	return id
}

const timeKey = "2006-01-02T15:04:05.000000000"

// vmCells draws a VM's row. A VM with an operation under way shows what
// is being done to it, and how far it got, instead of its backups.
func vmCells(m *Model, id string) []string {
	vm := m.d.vms[id]
	now := m.now()
	st := m.st
	state := st.StateStyle(vm.State).Render(string(vm.State))
	last, next := "-", in(now, vm.NextBackupAt)
	if b, ok := m.d.lastBackup(id); ok {
		last = ago(now, b.TakenAt) + " · " + string(b.Consistency)
	}
	if !vm.State.Live() {
		next = "gone " + in(now, vm.ReclaimAt)
	}
	if o, ok := m.d.running(id); ok {
		state = st.Busy.Render(doing(o.Kind))
		last, next = m.trail(o), ""
	}
	ip := "-"
	if vm.IP.IsValid() {
		ip = vm.IP.String()
	}
	memCol, cpu := "-", "-"
	if u, ok := m.d.usage[id]; ok {
		memCol, cpu = mem(u.MemoryBytes), fmt.Sprintf("%.0f%%", u.CPUPercent)
	}
	return []string{vm.ID, vm.Name, m.d.accountName(vm.AccountID), vm.Tier, state, ip, last, next, memCol, cpu}
}

// trail writes an operation's steps so far ("stop ✓ reflink ✓ boot …").
func (m *Model) trail(o model.Operation) string {
	var parts []string
	for _, s := range m.d.steps[o.ID] {
		if s.step == "recorded" || s.step == "" {
			continue
		}
		parts = append(parts, stepName(s.step)+" ✓")
	}
	if len(parts) == 0 && o.Step != "" && o.Step != "recorded" {
		parts = append(parts, stepName(o.Step)+" ✓")
	}
	if !o.State.Finished() {
		parts = append(parts, "…")
	}
	return strings.Join(parts, " ")
}

func (v *vmsView) title(m *Model) string { return "VMs" }

func (v *vmsView) keys(m *Model) []key.Binding {
	k := m.keys
	return enabled(k.Enter, k.Backup, k.Restore, k.StopStart, k.Destroy, k.Resume, k.Create, k.Filter)
}

// enabled drops the bindings --readonly turned off.
func enabled(bs ...key.Binding) []key.Binding {
	out := bs[:0]
	for _, b := range bs {
		if b.Enabled() {
			out = append(out, b)
		}
	}
	return out
}

func (v *vmsView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if v.nav(m, msg, len(vmColumns)) {
		return nil, true
	}
	id := v.selected()
	if key.Matches(msg, m.keys.Enter) && id != "" {
		return m.openVM(id), true
	}
	if key.Matches(msg, m.keys.Create) {
		return m.createForm(""), true
	}
	return m.vmAction(msg, id)
}

func (v *vmsView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

func (v *vmsView) render(m *Model, w, h int) string { return v.draw(m, w, h) }
