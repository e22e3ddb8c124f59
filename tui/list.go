package tui

import (
	"slices"
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"

	"github.com/superjolt/superjolt/tui/components/table"
)

// list is what the table views share: the rows' ids in the order shown,
// rebuilt only when the data, the filter or the order changed; a filter
// over each row's text; sorting by any column; a cursor that stays on its
// object when rows move.
type list struct {
	tbl  table.Model
	filt string
	col  int  // sort column
	desc bool // reverse order
	gen  int  // deps(m) when ids were built (-1: rebuild)
	ids  []string

	// top keeps the cursor on the first row when it was there, instead of
	// on its object: a list of backups newest first shows a new backup
	// under the cursor, so that r restores the newest.
	top bool

	// deps sums the change counters (data.gen) of what the order and the
	// filter depend on; nil: everything.
	deps func(m *Model) int

	// all lists the candidate ids; text is what the filter searches in a
	// row; sortKey is a row's key in column col (strings compare; times
	// as RFC 3339, numbers zero-padded); cells and style draw a row.
	all     func(m *Model) []string
	text    func(m *Model, id string) string
	sortKey func(m *Model, id string, col int) string
	cells   func(m *Model, id string) []string
	style   func(m *Model, id string) *lipgloss.Style
}

func newList(m *Model, cols []table.Column) list {
	return list{tbl: table.New(m.st, m.keys, cols...), gen: -1}
}

func (l *list) filter() string { return l.filt }

func (l *list) setFilter(s string) {
	if s != l.filt {
		l.filt, l.gen = s, -1
	}
}

// selected returns the id under the cursor.
func (l *list) selected() string {
	if i := l.tbl.Cursor(); i >= 0 && i < len(l.ids) {
		return l.ids[i]
	}
	return ""
}

// refresh rebuilds the order if anything changed, keeping the cursor on
// the object it was on.
func (l *list) refresh(m *Model) {
	gen := l.depGen(m)
	if l.gen == gen {
		return
	}
	keep := l.selected()
	if l.top && l.tbl.Cursor() <= 0 {
		keep = ""
	}
	ids := l.all(m)
	if f := strings.ToLower(l.filt); f != "" {
		ids = slices.DeleteFunc(ids, func(id string) bool {
			return !strings.Contains(strings.ToLower(l.text(m, id)), f)
		})
	}
	type keyed struct{ key, id string }
	rows := make([]keyed, len(ids))
	for i, id := range ids {
		rows[i] = keyed{l.sortKey(m, id, l.col), id}
	}
	slices.SortFunc(rows, func(a, b keyed) int {
		c := strings.Compare(a.key, b.key)
		if c == 0 {
			c = strings.Compare(a.id, b.id)
		}
		if l.desc {
			c = -c
		}
		return c
	})
	for i, r := range rows {
		ids[i] = r.id
	}
	l.ids, l.gen = ids, gen
	l.tbl.SetRows(len(ids), func(i int) ([]string, *lipgloss.Style) {
		id := l.ids[i]
		var st *lipgloss.Style
		if l.style != nil {
			st = l.style(m, id)
		}
		return l.cells(m, id), st
	})
	if keep != "" {
		if i := slices.Index(ids, keep); i >= 0 {
			l.tbl.SetCursor(i)
		}
	}
}

// depGen is the list's dependencies' counter now.
func (l *list) depGen(m *Model) int {
	if l.deps != nil {
		return l.deps(m)
	}
	g := m.d.gen
	return sum(g.vms, g.backups, g.accounts, g.ops, g.usage, g.events, g.status)
}

// nav handles the keys every list takes: moving and sorting.
func (l *list) nav(m *Model, msg tea.KeyMsg, ncols int) bool {
	switch {
	case key.Matches(msg, m.keys.Sort):
		l.col, l.gen = (l.col+1)%ncols, -1
		return true
	case key.Matches(msg, m.keys.Reverse):
		l.desc, l.gen = !l.desc, -1
		return true
	case key.Matches(msg, m.keys.Up, m.keys.Down, m.keys.PageUp, m.keys.PageDown, m.keys.Top, m.keys.Bottom):
		l.tbl, _ = l.tbl.Update(msg)
		return true
	}
	return false
}

func (l *list) mouse(msg tea.MouseMsg) { l.tbl, _ = l.tbl.Update(msg) }

// draw draws the list's table in w×h.
func (l *list) draw(m *Model, w, h int) string {
	l.refresh(m)
	l.tbl.SetSize(w, h)
	l.tbl.Stale = m.down != ""
	l.tbl.SortCol, l.tbl.Desc = l.col, l.desc
	return l.tbl.View()
}
