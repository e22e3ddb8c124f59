package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// graveView lists the VMs in the graveyard or the archive with the time
// left before they are reclaimed, counting down.
type graveView struct{ list }

var graveColumns = []table.Column{
	{Title: "ID", Width: 9},
	{Title: "NAME", Width: 8, Flex: 1},
	{Title: "ACCOUNT", Width: 8, Flex: 1},
	{Title: "STATE", Width: 9},
	{Title: "SINCE", Width: 12, Drop: 1},
	{Title: "RECLAIMED IN", Width: 13},
	{Title: "BACKUPS", Width: 7, Right: true, Drop: 2},
}

func newGraveView(m *Model) *graveView {
	v := &graveView{newList(m, graveColumns)}
	v.tbl.Empty = "the graveyard and the archive are empty"
	v.deps = func(m *Model) int { return sum(m.d.gen.vms, m.d.gen.backups, m.d.gen.accounts) }
	v.col = 5
	v.all = func(m *Model) []string {
		var ids []string
		for id, vm := range m.d.vms {
			if !vm.State.Live() {
				ids = append(ids, id)
			}
		}
		return ids
	}
	v.text = func(m *Model, id string) string {
		vm := m.d.vms[id]
		return strings.Join([]string{vm.ID, vm.Name, vm.AccountID, m.d.accountName(vm.AccountID), string(vm.State)}, " ")
	}
	v.sortKey = func(m *Model, id string, col int) string {
		vm := m.d.vms[id]
		switch col {
		case 1:
			return vm.Name
		case 2:
			return m.d.accountName(vm.AccountID)
		case 3:
			return string(vm.State)
		case 4:
			return retiredAt(vm).UTC().Format(timeKey)
		case 5:
			return vm.ReclaimAt.UTC().Format(timeKey)
		case 6:
			return fmt.Sprintf("%06d", len(m.d.backups[id]))
		}
		return id
	}
	v.cells = func(m *Model, id string) []string {
		vm := m.d.vms[id]
		now := m.now()
		return []string{vm.ID, vm.Name, m.d.accountName(vm.AccountID), m.st.StateStyle(vm.State).Render(string(vm.State)),
			ago(now, retiredAt(vm)), countdown(vm.ReclaimAt.Sub(now)), fmt.Sprint(len(m.d.backups[id]))}
	}
	return v
}

func retiredAt(vm model.VM) time.Time {
	if vm.State == model.StateArchived {
		return vm.ArchivedAt
	}
	return vm.DestroyedAt
}

func (v *graveView) title(m *Model) string {
	if m.d.retired == 0 {
		return "Graveyard"
	}
	return fmt.Sprintf("Graveyard(%d)", m.d.retired)
}

func (v *graveView) keys(m *Model) []key.Binding {
	k := m.keys
	return enabled(k.Enter, k.Resume, k.Filter)
}

func (v *graveView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if v.nav(m, msg, len(graveColumns)) {
		return nil, true
	}
	id := v.selected()
	switch {
	case id == "":
		return nil, false
	case key.Matches(msg, m.keys.Enter):
		return m.openVM(id), true
	case key.Matches(msg, m.keys.Resume):
		return m.resume(id), true
	}
	return nil, false
}

func (v *graveView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

func (v *graveView) render(m *Model, w, h int) string { return v.draw(m, w, h) }
