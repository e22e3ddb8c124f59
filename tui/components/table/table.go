// Package table is the console's table: fixed and flexible columns that
// give way on narrow terminals, a cursor, and rows built only when they are
// visible, so that a view over 10,000 VMs draws as fast as one over ten.
package table

import (
	"strings"

	"github.com/charmbracelet/bubbles/key"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/superjolt/superjolt/tui/keymap"
	"github.com/superjolt/superjolt/tui/styles"
)

// Column is one column.
type Column struct {
	Title string
	// Width is the column's width; Flex columns share what is left after
	// the fixed ones, in proportion to Flex, and never get less than Width.
	Width int
	Flex  int
	// Drop orders which columns give way when the terminal is too narrow:
	// the highest Drop goes first; 0 never goes.
	Drop int
	// Right aligns the column's cells to the right (numbers).
	Right bool
}

// Row returns the cells of row i and the style of the row (nil: plain).
// Cells may carry their own styles; a row's style applies to the rest.
type Row func(i int) (cells []string, style *lipgloss.Style)

// Model is a table's state. The zero value is not usable: use New.
type Model struct {
	cols   []Column
	n      int
	row    Row
	cursor int
	offset int
	width  int
	height int // rows, the header excluded
	st     *styles.Styles
	keys   keymap.KeyMap
	// Stale draws every row faint (data kept while superjoltd is away).
	Stale bool
	// Empty is what the table says when it has no rows.
	Empty string
	// SortCol is the column the rows are sorted by (marked ↑, or ↓ when
	// Desc); -1 marks none.
	SortCol int
	Desc    bool
}

// New returns a table of columns.
func New(st *styles.Styles, keys keymap.KeyMap, cols ...Column) Model {
	return Model{cols: cols, st: st, keys: keys, width: 80, height: 10, SortCol: -1}
}

// SetSize sets the table's width and its height in lines, header included.
func (m *Model) SetSize(width, height int) {
	m.width, m.height = width, max(height-1, 1)
	m.clamp()
}

// SetRows sets the number of rows and how to build one.
func (m *Model) SetRows(n int, row Row) {
	m.n, m.row = n, row
	m.clamp()
}

// Len returns the number of rows.
func (m Model) Len() int { return m.n }

// Cursor returns the cursor's row, or -1 when the table is empty.
func (m Model) Cursor() int {
	if m.n == 0 {
		return -1
	}
	return m.cursor
}

// SetCursor moves the cursor to row i.
func (m *Model) SetCursor(i int) {
	m.cursor = i
	m.clamp()
}

func (m *Model) clamp() {
	m.cursor = min(max(m.cursor, 0), max(m.n-1, 0))
	if m.cursor < m.offset {
		m.offset = m.cursor
	}
	if m.cursor >= m.offset+m.height {
		m.offset = m.cursor - m.height + 1
	}
	m.offset = min(max(m.offset, 0), max(m.n-m.height, 0))
}

// Update moves the cursor on the navigation keys and the mouse wheel.
func (m Model) Update(msg tea.Msg) (Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.KeyMsg:
		switch {
		case key.Matches(msg, m.keys.Up):
			m.cursor--
		case key.Matches(msg, m.keys.Down):
			m.cursor++
		case key.Matches(msg, m.keys.PageUp):
			m.cursor -= m.height
		case key.Matches(msg, m.keys.PageDown):
			m.cursor += m.height
		case key.Matches(msg, m.keys.Top):
			m.cursor = 0
		case key.Matches(msg, m.keys.Bottom):
			m.cursor = m.n - 1
		}
	case tea.MouseMsg:
		switch msg.Button {
		case tea.MouseButtonWheelUp:
			m.cursor -= 3
		case tea.MouseButtonWheelDown:
			m.cursor += 3
		}
	}
	m.clamp()
	return m, nil
}

// widths returns each column's width, 0 for a column dropped.
func (m Model) widths() []int {
	w := make([]int, len(m.cols))
	shown := make([]bool, len(m.cols))
	for i := range m.cols {
		shown[i] = true
	}
	need := func() int {
		t := 1
		for i, c := range m.cols {
			if shown[i] {
				t += c.Width + 1
			}
		}
		return t
	}
	for need() > m.width {
		drop, at := 0, -1
		for i, c := range m.cols {
			if shown[i] && c.Drop > drop {
				drop, at = c.Drop, i
			}
		}
		if at < 0 {
			break
		}
		shown[at] = false
	}
	spare := max(m.width-need(), 0)
	flex := 0
	for i, c := range m.cols {
		if shown[i] {
			flex += c.Flex
		}
	}
	for i, c := range m.cols {
		if !shown[i] {
			continue
		}
		w[i] = c.Width
		if flex > 0 && c.Flex > 0 {
			add := spare * c.Flex / flex
			w[i] += add
		}
	}
	return w
}

// View draws the header and the visible rows, padded to the table's height.
func (m Model) View() string {
	w := m.widths()
	var b strings.Builder
	hdr := make([]string, len(m.cols))
	for i, c := range m.cols {
		hdr[i] = c.Title
		if i == m.SortCol {
			hdr[i] += map[bool]string{false: "↑", true: "↓"}[m.Desc]
		}
	}
	b.WriteString(m.st.TableHeader.Render(m.line(w, hdr)))
	lines := 1
	if m.n == 0 && m.Empty != "" {
		b.WriteString("\n" + m.st.Dim.Render(ansi.Truncate(" "+m.Empty, m.width, "…")))
		lines++
	}
	end := min(m.offset+m.height, m.n)
	for i := m.offset; i < end; i++ {
		cells, st := m.row(i)
		line := m.line(w, cells)
		switch {
		case i == m.cursor:
			// The cursor is marked in the margin too, for terminals
			// without colour or attributes.
			line = m.st.Selected.Render(">" + ansi.Strip(line)[1:])
		case m.Stale:
			line = m.st.Stale.Render(ansi.Strip(line))
		case st != nil:
			line = st.Render(line)
		}
		b.WriteString("\n" + line)
		lines++
	}
	for ; lines < m.height+1; lines++ {
		b.WriteString("\n")
	}
	return b.String()
}

// line lays cells out in columns of widths w, padded to the table's width.
func (m Model) line(w []int, cells []string) string {
	var b strings.Builder
	b.WriteByte(' ')
	used := 1
	for i, c := range m.cols {
		if w[i] == 0 {
			continue
		}
		cell := ""
		if i < len(cells) {
			cell = cells[i]
		}
		cell = ansi.Truncate(cell, w[i], "…")
		pad := strings.Repeat(" ", w[i]-ansi.StringWidth(cell))
		if c.Right && ansi.StringWidth(cell) < w[i] {
			b.WriteString(pad + cell)
		} else {
			b.WriteString(cell + pad)
		}
		b.WriteByte(' ')
		used += w[i] + 1
	}
	if used < m.width {
		b.WriteString(strings.Repeat(" ", m.width-used))
	}
	return ansi.Truncate(b.String(), m.width, "")
}
