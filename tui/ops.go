package tui

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/progress"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// opsView lists operations: those under way first, with their steps and
// progress, then the recent ones.
type opsView struct {
	list
	bar progress.Model
}

var opColumns = []table.Column{
	{Title: "OPERATION", Width: 13},
	{Title: "KIND", Width: 13},
	{Title: "VM", Width: 9},
	{Title: "STATE", Width: 9},
	{Title: "STEPS", Width: 16, Flex: 1},
	{Title: "PROGRESS", Width: 12, Drop: 1},
	{Title: "TIME", Width: 13, Drop: 2},
}

func newOpsView(m *Model) *opsView {
	v := &opsView{list: newList(m, opColumns)}
	v.bar = progress.New(progress.WithoutPercentage(), progress.WithWidth(10), progress.WithSolidFill("#58a6ff"))
	v.bar.Full, v.bar.Empty = '█', '░'
	v.tbl.Empty = "no operations yet"
	v.deps = func(m *Model) int { return sum(m.d.gen.ops, m.d.gen.events) }
	v.all = func(m *Model) []string {
		ids := make([]string, 0, len(m.d.ops))
		for id := range m.d.ops {
			ids = append(ids, id)
		}
		return ids
	}
	v.text = func(m *Model, id string) string {
		o := m.d.ops[id]
		return o.ID + " " + string(o.Kind) + " " + o.VMID + " " + string(o.State) + " " + o.Error
	}
	v.sortKey = func(m *Model, id string, col int) string {
		o := m.d.ops[id]
		switch col {
		case 1:
			return string(o.Kind)
		case 2:
			return o.VMID
		case 3:
			return string(o.State)
		}
		// Under way first, then the newest.
		run := "1"
		if o.State == model.OpRunning {
			run = "0"
		}
		return run + fmt.Sprintf("%020d", math.MaxInt64-o.StartedAt.UnixNano())
	}
	v.cells = func(m *Model, id string) []string {
		o := m.d.ops[id]
		state := string(o.State)
		switch o.State {
		case model.OpRunning:
			state = m.st.Busy.Render(state)
		case model.OpFailed:
			state = m.st.Error.Render(state)
		}
		steps := m.trail(o)
		if o.Error != "" {
			steps += " " + oneLine(o.Error)
		}
		return []string{o.ID, string(o.Kind), o.VMID, state, steps, v.bar.ViewAs(float64(o.Progress) / 100), m.opTime(o)}
	}
	return v
}

// opTime says how long an operation took or has been going; a backup says
// how long its guest was frozen.
func (m *Model) opTime(o model.Operation) string {
	end := o.FinishedAt
	if end.IsZero() {
		end = m.now()
	}
	took := span(end.Sub(o.StartedAt))
	if o.Kind != model.OpBackup {
		return took
	}
	var frozen, thawed time.Time
	for _, s := range m.d.steps[o.ID] {
		switch s.step {
		case "frozen":
			frozen = s.at
		case "thawed":
			thawed = s.at
		}
	}
	switch {
	case frozen.IsZero():
		return took
	case thawed.IsZero() && o.State == model.OpRunning:
		return "frozen " + fmtSecs(m.now().Sub(frozen))
	case !thawed.IsZero():
		return "frozen " + fmtSecs(thawed.Sub(frozen))
	}
	return took
}

func fmtSecs(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	return strings.TrimSuffix(fmt.Sprintf("%.1fs", d.Seconds()), ".0s")
}

func (v *opsView) title(m *Model) string {
	n := 0
	for _, o := range m.d.ops {
		if o.State == model.OpRunning {
			n++
		}
	}
	if n == 0 {
		return "Ops"
	}
	return fmt.Sprintf("Ops(%d)", n)
}

func (v *opsView) keys(m *Model) []key.Binding {
	return enabled(m.keys.Cancel, m.keys.Filter)
}

func (v *opsView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if v.nav(m, msg, len(opColumns)) {
		return nil, true
	}
	if key.Matches(msg, m.keys.Cancel) && v.selected() != "" {
		return m.cancelOp(v.selected()), true
	}
	return nil, false
}

func (v *opsView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

func (v *opsView) render(m *Model, w, h int) string { return v.draw(m, w, h) }
