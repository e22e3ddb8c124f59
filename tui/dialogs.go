package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// A dialog is open on top of the views and takes every key: a form, a
// confirmation, a picker. update returns nil to close it.
type dialog interface {
	update(m *Model, msg tea.Msg) (dialog, tea.Cmd)
	view(m *Model, w int) string
	keys(m *Model) []key.Binding
}

// waiting is a dialog that stays open while its action runs, to show the
// daemon's error in place: sent says it sent one and waits for its
// answer; done takes the answer and returns whether the dialog closes.
type waiting interface {
	sent() bool
	done(err error) bool
}

var (
	keyTab     = key.NewBinding(key.WithKeys("tab", "down"), key.WithHelp("tab", "next field"))
	keyEnter   = key.NewBinding(key.WithKeys("enter"), key.WithHelp("enter", "choose"))
	keyEsc     = key.NewBinding(key.WithKeys("esc"), key.WithHelp("esc", "cancel"))
	keyBackTab = key.NewBinding(key.WithKeys("shift+tab", "up"), key.WithHelp("shift+tab", "previous"))
)

func newInput(placeholder string) textinput.Model {
	in := textinput.New()
	in.Prompt = ""
	in.Placeholder = placeholder
	in.Cursor.SetMode(cursor.CursorStatic)
	in.CharLimit = 256
	return in
}

// field is one input of a form. check says what is wrong with a value, or
// nil: nothing is sent while any field says something.
type field struct {
	label string
	hint  string
	input textinput.Model
	check func(string) error
	err   string
}

// form is a dialog of fields and [Cancel] [submit] buttons.
type form struct {
	title  string
	fields []*field
	submit string
	// send builds the action from the values, in field order.
	send  func(m *Model, values []string) tea.Cmd
	focus int // 0..len(fields)-1 a field, then Cancel, then submit
	busy  bool
	err   string
}

func (f *form) nFocus() int { return len(f.fields) + 2 }

func (f *form) setFocus(i int) tea.Cmd {
	f.focus = (i + f.nFocus()) % f.nFocus()
	var cmd tea.Cmd
	for j, fl := range f.fields {
		if j == f.focus {
			cmd = fl.input.Focus()
		} else {
			fl.input.Blur()
		}
	}
	return cmd
}

func (f *form) update(m *Model, msg tea.Msg) (dialog, tea.Cmd) {
	km, ok := msg.(tea.KeyMsg)
	if !ok || f.busy {
		if ok && km.Type == tea.KeyEsc {
			return nil, nil
		}
		return f, nil
	}
	switch km.String() {
	case "esc":
		return nil, nil
	case "tab", "down":
		return f, f.setFocus(f.focus + 1)
	case "shift+tab", "up":
		return f, f.setFocus(f.focus - 1)
	case "enter":
		switch {
		case f.focus < len(f.fields):
			return f, f.setFocus(f.focus + 1)
		case f.focus == len(f.fields):
			return nil, nil
		}
		return f, f.trySend(m)
	case "left", "right":
		if f.focus >= len(f.fields) {
			return f, f.setFocus(len(f.fields) + (f.focus-len(f.fields)+1)%2)
		}
	}
	if f.focus < len(f.fields) {
		fl := f.fields[f.focus]
		var cmd tea.Cmd
		fl.input, cmd = fl.input.Update(km)
		fl.err = ""
		return f, cmd
	}
	return f, nil
}

// trySend checks every field; it sends only when all are fine.
func (f *form) trySend(m *Model) tea.Cmd {
	first := -1
	values := make([]string, len(f.fields))
	for i, fl := range f.fields {
		values[i] = strings.TrimSpace(fl.input.Value())
		fl.err = ""
		if fl.check != nil {
			if err := fl.check(values[i]); err != nil {
				fl.err = oneLine(err.Error())
				if first < 0 {
					first = i
				}
			}
		}
	}
	if first >= 0 {
		return f.setFocus(first)
	}
	f.busy, f.err = true, ""
	return f.send(m, values)
}

func (f *form) sent() bool { return f.busy }

func (f *form) done(err error) bool {
	f.busy = false
	if err != nil {
		f.err = oneLine(err.Error())
		return false
	}
	return true
}

func (f *form) view(m *Model, w int) string {
	st := m.st
	inner := w - 4
	var b strings.Builder
	b.WriteString(st.DialogTitle.Render(f.title) + "\n")
	for i, fl := range f.fields {
		fl.input.Width = max(inner-18, 10)
		mark := "  "
		if i == f.focus {
			mark = "▸ "
		}
		label := fmt.Sprintf("%-12s", fl.label)
		b.WriteString("\n" + mark + st.Label.Render(label) + "  " + fl.input.View())
		if fl.err != "" {
			b.WriteString("\n" + wrap(st.FieldError, "  ✗ "+fl.err, inner))
		} else if fl.hint != "" {
			b.WriteString("\n" + wrap(st.Dim, "  "+fl.hint, inner))
		}
	}
	b.WriteString("\n\n" + buttons(m, f.focus-len(f.fields), "Cancel", f.submit, false))
	switch {
	case f.busy:
		b.WriteString("\n" + st.Dim.Render("sending…"))
	case f.err != "":
		b.WriteString("\n" + wrap(st.Error, f.err, inner))
	}
	return st.Dialog.Width(w - 2).Render(b.String())
}

func (f *form) keys(*Model) []key.Binding { return []key.Binding{keyTab, keyBackTab, keyEnter, keyEsc} }

// buttons draws [Cancel] [ok]; focus 0 is Cancel, 1 is ok, anything else
// neither.
func buttons(m *Model, focus int, cancel, ok string, danger bool) string {
	st := m.st
	// The focused button is marked with > < as well as drawn reversed,
	// for terminals without colour or attributes.
	c, o := st.Button.Render("  "+cancel+"  "), st.Button.Render("  "+ok+"  ")
	switch focus {
	case 0:
		c = st.ButtonFocused.Render("> " + cancel + " <")
	case 1:
		if danger {
			o = st.Danger.Render("> " + ok + " <")
		} else {
			o = st.ButtonFocused.Render("> " + ok + " <")
		}
	}
	return "[" + c + "]  [" + o + "]"
}

// wrap renders s in style, wrapped at w cells.
func wrap(style lipgloss.Style, s string, w int) string {
	return style.Render(ansi.Wordwrap(s, w, " "))
}

// confirm is the dialog of a destructive action: it says what will be lost
// and what can still be undone, starts on Cancel, and goes ahead only when
// the VM's name is typed in and the action's button pressed.
type confirm struct {
	title  string
	lines  []string
	expect string // what must be typed
	action string // the button
	input  textinput.Model
	focus  int // 0 Cancel, 1 the input, 2 the action
	send   func(m *Model) tea.Cmd
	busy   bool
	err    string
}

func newConfirm(title string, lines []string, expect, action string, send func(m *Model) tea.Cmd) *confirm {
	in := newInput("")
	return &confirm{title: title, lines: lines, expect: expect, action: action, input: in, send: send}
}

func (c *confirm) setFocus(i int) tea.Cmd {
	c.focus = (i + 3) % 3
	if c.focus == 1 {
		return c.input.Focus()
	}
	c.input.Blur()
	return nil
}

func (c *confirm) update(m *Model, msg tea.Msg) (dialog, tea.Cmd) {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return c, nil
	}
	if km.Type == tea.KeyEsc {
		return nil, nil
	}
	if c.busy {
		return c, nil
	}
	switch km.String() {
	case "tab", "down":
		return c, c.setFocus(c.focus + 1)
	case "shift+tab", "up":
		return c, c.setFocus(c.focus - 1)
	case "enter":
		switch c.focus {
		case 0:
			return nil, nil
		case 1:
			if c.input.Value() != c.expect {
				c.err = fmt.Sprintf("type %s exactly to go ahead, or Esc to cancel", c.expect)
				return c, nil
			}
			return c, c.setFocus(2)
		}
		if c.input.Value() != c.expect {
			c.err = fmt.Sprintf("type %s in the box first (Tab moves there)", c.expect)
			return c, c.setFocus(1)
		}
		c.busy, c.err = true, ""
		return c, c.send(m)
	}
	if c.focus == 1 {
		var cmd tea.Cmd
		c.input, cmd = c.input.Update(km)
		c.err = ""
		return c, cmd
	}
	return c, nil
}

func (c *confirm) sent() bool { return c.busy }

func (c *confirm) done(err error) bool {
	c.busy = false
	if err != nil {
		c.err = oneLine(err.Error())
		return false
	}
	return true
}

func (c *confirm) view(m *Model, w int) string {
	st := m.st
	inner := w - 4
	var b strings.Builder
	b.WriteString(st.DialogTitle.Render(c.title) + "\n")
	for _, l := range c.lines {
		b.WriteString("\n" + ansi.Wordwrap(l, inner, " "))
	}
	c.input.Width = max(inner-30, 12)
	mark := "  "
	if c.focus == 1 {
		mark = "▸ "
	}
	b.WriteString("\n\n" + mark + st.Label.Render("Type "+c.expect+" to confirm: ") + "[" + c.input.View() + "]")
	focus := -1
	switch c.focus {
	case 0:
		focus = 0
	case 2:
		focus = 1
	}
	b.WriteString("\n\n" + buttons(m, focus, "Cancel", c.action, true))
	switch {
	case c.busy:
		b.WriteString("\n" + st.Dim.Render("sending…"))
	case c.err != "":
		b.WriteString("\n" + wrap(st.Error, c.err, inner))
	}
	return st.Dialog.Width(w - 2).Render(b.String())
}

func (c *confirm) keys(*Model) []key.Binding { return []key.Binding{keyTab, keyEnter, keyEsc} }

// choice is one line of a picker.
type choice struct {
	label string
	pick  func(m *Model) (dialog, tea.Cmd)
}

// picker is a dialog that lists choices.
type picker struct {
	title   string
	choices []choice
	cursor  int
	note    string
}

func (p *picker) update(m *Model, msg tea.Msg) (dialog, tea.Cmd) {
	km, ok := msg.(tea.KeyMsg)
	if !ok {
		return p, nil
	}
	switch km.String() {
	case "esc":
		return nil, nil
	case "up", "k", "shift+tab":
		p.cursor = max(p.cursor-1, 0)
	case "down", "j", "tab":
		p.cursor = min(p.cursor+1, len(p.choices)-1)
	case "enter":
		if len(p.choices) == 0 {
			return nil, nil
		}
		return p.choices[p.cursor].pick(m)
	}
	return p, nil
}

func (p *picker) view(m *Model, w int) string {
	st := m.st
	inner := w - 4
	var b strings.Builder
	b.WriteString(st.DialogTitle.Render(p.title) + "\n")
	if p.note != "" {
		b.WriteString(wrap(st.Dim, p.note, inner) + "\n")
	}
	// Only the lines around the cursor: a VM may have many backups.
	const show = 10
	from := min(max(p.cursor-show/2, 0), max(len(p.choices)-show, 0))
	for i := from; i < min(from+show, len(p.choices)); i++ {
		line := ansi.Truncate("  "+p.choices[i].label, inner, "…")
		if i == p.cursor {
			line = st.Selected.Render(ansi.Truncate("> "+p.choices[i].label, inner, "…"))
		}
		b.WriteString("\n" + line)
	}
	return st.Dialog.Width(w - 2).Render(b.String())
}

func (p *picker) keys(*Model) []key.Binding { return []key.Binding{keyTab, keyEnter, keyEsc} }
