package tui

import (
	"fmt"
	"time"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// accountsView lists the accounts with what they burn and how long their
// balance lasts at that rate.
type accountsView struct{ list }

var accountColumns = []table.Column{
	{Title: "ID", Width: 9},
	{Title: "NAME", Width: 8, Flex: 1},
	{Title: "BALANCE", Width: 12, Right: true},
	{Title: "BURN/H", Width: 9, Right: true},
	{Title: "RUNWAY", Width: 20, Flex: 1},
	{Title: "KEEPS", Width: 5, Right: true, Drop: 2},
	{Title: "VMS", Width: 4, Right: true, Drop: 1},
}

// runwayWarn is the runway under which an account is drawn as a warning.
const runwayWarn = 24 * time.Hour

func newAccountsView(m *Model) *accountsView {
	v := &accountsView{newList(m, accountColumns)}
	v.tbl.Empty = "no accounts yet: superjolt account create NAME --balance CREDITS"
	v.deps = func(m *Model) int { return sum(m.d.gen.accounts, m.d.gen.vms) }
	v.all = func(m *Model) []string {
		ids := make([]string, 0, len(m.d.accounts))
		for id := range m.d.accounts {
			ids = append(ids, id)
		}
		return ids
	}
	v.text = func(m *Model, id string) string { a := m.d.accounts[id]; return a.ID + " " + a.Name }
	v.sortKey = func(m *Model, id string, col int) string {
		a, t := m.d.accounts[id], m.d.totalsOf(id)
		switch col {
		case 1:
			return a.Name
		case 2:
			return fmt.Sprintf("%020d", a.Balance)
		case 3:
			return fmt.Sprintf("%020d", t.burn)
		case 4:
			if r, ok := runway(a, t.burn); ok {
				return fmt.Sprintf("%020d", r)
			}
			return "~"
		case 5:
			return fmt.Sprintf("%06d", a.Entitlements.BackupRetention)
		case 6:
			return fmt.Sprintf("%06d", t.vms)
		}
		return id
	}
	v.cells = func(m *Model, id string) []string {
		a, t := m.d.accounts[id], m.d.totalsOf(id)
		run := "no billing VMs"
		if r, ok := runway(a, t.burn); ok {
			run = "archives in " + span(r)
			if a.Balance == 0 {
				run = "out of credits"
			}
		}
		return []string{a.ID, a.Name, a.Balance.String(), t.burn.String(), run,
			fmt.Sprint(a.Entitlements.BackupRetention), fmt.Sprint(t.vms)}
	}
	v.style = func(m *Model, id string) *lipgloss.Style {
		if r, ok := runway(m.d.accounts[id], m.d.totalsOf(id).burn); ok && r < runwayWarn {
			return &m.st.Warn
		}
		return nil
	}
	return v
}

// runway is how long a balance lasts at burn per hour; false when nothing
// burns.
func runway(a model.Account, burn model.Micro) (time.Duration, bool) {
	if burn <= 0 {
		return 0, false
	}
	return time.Duration(float64(a.Balance) / float64(burn) * float64(time.Hour)), true
}

func (v *accountsView) title(*Model) string { return "Accounts" }

func (v *accountsView) keys(m *Model) []key.Binding {
	k := m.keys
	enter := key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "its VMs"))
	return enabled(enter, k.TopUp, k.Filter)
}

func (v *accountsView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if v.nav(m, msg, len(accountColumns)) {
		return nil, true
	}
	id := v.selected()
	switch {
	case id == "":
		return nil, false
	case key.Matches(msg, m.keys.Enter):
		m.tab = 0
		m.tabs[0].setFilter(id)
		return nil, true
	case key.Matches(msg, m.keys.TopUp):
		return m.topUpForm(id), true
	}
	return nil, false
}

func (v *accountsView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

func (v *accountsView) render(m *Model, w, h int) string { return v.draw(m, w, h) }
