package tui

import (
	"fmt"
	"strconv"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/components/table"
)

// eventsView is the live event stream: it follows the newest event unless
// paused, and filters like every view.
type eventsView struct {
	list
	paused   bool
	pausedAt uint64 // the last event shown while paused
}

var eventColumns = []table.Column{
	{Title: "AT", Width: 12},
	{Title: "TYPE", Width: 20},
	{Title: "OBJECT", Width: 13, Drop: 1},
	{Title: "MESSAGE", Width: 20, Flex: 1},
}

func newEventsView(m *Model) *eventsView {
	v := &eventsView{list: newList(m, eventColumns)}
	v.tbl.Empty = "no events yet"
	v.deps = func(m *Model) int { return m.d.gen.events }
	byKey := func(m *Model) map[string]model.Event {
		out := make(map[string]model.Event, len(m.d.events))
		for _, e := range m.d.events {
			out[strconv.FormatUint(e.Seq, 10)] = e
		}
		return out
	}
	var index map[string]model.Event
	v.all = func(m *Model) []string {
		index = byKey(m)
		ids := make([]string, 0, len(m.d.events))
		for _, e := range m.d.events {
			if v.paused && e.Seq > v.pausedAt {
				break
			}
			ids = append(ids, strconv.FormatUint(e.Seq, 10))
		}
		return ids
	}
	v.text = func(m *Model, id string) string {
		e := index[id]
		return e.Type + " " + e.Object + " " + e.Message
	}
	v.sortKey = func(m *Model, id string, col int) string {
		e := index[id]
		switch col {
		case 1:
			return e.Type
		case 2:
			return e.Object
		case 3:
			return e.Message
		}
		return fmt.Sprintf("%020d", e.Seq)
	}
	v.cells = func(m *Model, id string) []string {
		e := index[id]
		return []string{stamp(m.now(), e.At, m.loc), e.Type, e.Object, e.Message}
	}
	return v
}

func (v *eventsView) title(*Model) string { return "Events" }

func (v *eventsView) keys(m *Model) []key.Binding {
	return []key.Binding{m.keys.Pause, m.keys.Filter, m.keys.Sort}
}

func (v *eventsView) update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool) {
	if key.Matches(msg, m.keys.Pause) {
		v.paused = !v.paused
		v.pausedAt = m.d.seq
		v.gen = -1
		return nil, true
	}
	return nil, v.nav(m, msg, len(eventColumns))
}

func (v *eventsView) mouse(m *Model, msg tea.MouseMsg) { v.list.mouse(msg) }

func (v *eventsView) render(m *Model, w, h int) string {
	following := !v.paused && v.col == 0 && !v.desc
	if following && v.gen != v.depGen(m) {
		v.refresh(m)
		v.tbl.SetCursor(len(v.ids) - 1)
	}
	out := v.draw(m, w, h-1)
	status := m.st.Dim.Render(" following the stream · space pauses")
	if v.paused {
		status = m.st.Warn.Render(fmt.Sprintf(" paused · %d newer events · space follows again", newer(m, v.pausedAt)))
	}
	return out + "\n" + status
}

func newer(m *Model, seq uint64) int {
	n := 0
	for _, e := range m.d.events {
		if e.Seq > seq {
			n++
		}
	}
	return n
}
