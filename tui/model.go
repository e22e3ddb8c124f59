package tui

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/charmbracelet/bubbles/cursor"
	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui/keymap"
	"github.com/superjolt/superjolt/tui/styles"
)

// Options configure the console.
type Options struct {
	// Host names the box in the header (default: the daemon's socket).
	Host string
	// ReadOnly removes every action key: the console only watches.
	ReadOnly bool
	// Location is the zone times are shown in (nil: time.Local).
	Location *time.Location
	// NoClock leaves out the ticking clock (golden tests: a View must not
	// depend on when it was drawn). The daemon's own clock still applies.
	NoClock bool
}

// Model is the console: the data it holds, the views over it and what is
// open on top of them.
type Model struct {
	ctx    context.Context
	cancel context.CancelFunc
	client *api.Client
	opts   Options
	loc    *time.Location
	st     *styles.Styles
	keys   keymap.KeyMap
	help   help.Model

	d *data
	// inflight counts reads and actions whose answers Update has not
	// handled yet.
	inflight atomic.Int32
	// statusAt is when (on this machine's monotonic clock) the daemon's
	// status was read, to move its clock on between reads.
	statusAt time.Time

	// Connection: stream is the one event subscription; down is why
	// superjoltd cannot be reached (empty when it can); loaded says a
	// snapshot arrived at least once.
	stream *stream
	down   string
	retry  time.Duration
	loaded bool

	width, height int
	tabs          []view
	tab           int
	detail        *vmView // a VM's page, on top of the tabs (Esc leaves it)

	// What is open on top: the help screen, a dialog, the filter or jump
	// prompt.
	showHelp bool
	dialog   dialog
	prompt   *prompt

	// note is the message line: what an action did, or why it failed;
	// noteOp is the operation it started, whose state the line follows.
	note    string
	noteErr bool
	noteOp  string
}

// view is one page of the console.
type view interface {
	// title is the tab's label.
	title(m *Model) string
	// keys lists the view's own bindings for the footer and help.
	keys(m *Model) []key.Binding
	// update handles a key the console did not take; it returns a command
	// and whether it used the key.
	update(m *Model, msg tea.KeyMsg) (tea.Cmd, bool)
	// mouse handles the wheel.
	mouse(m *Model, msg tea.MouseMsg)
	// render draws the view in w×h.
	render(m *Model, w, h int) string
	// filter returns the view's filter; setFilter sets it.
	filter() string
	setFilter(string)
}

// prompt is the one-line input of `/` (filter) and `:` (jump).
type prompt struct {
	jump  bool
	input textinput.Model
}

// New returns the console over a client of superjoltd.
func New(client *api.Client, opts Options) *Model {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Model{ctx: ctx, cancel: cancel, client: client, opts: opts, loc: opts.Location,
		st: styles.Default(), keys: keymap.Default(), help: help.New(), d: newData(), retry: reconnectMin}
	if m.loc == nil {
		m.loc = time.Local
	}
	if opts.ReadOnly {
		m.keys.ReadOnly()
	}
	if m.opts.Host == "" {
		m.opts.Host = client.Socket()
	}
	m.help.Styles.ShortKey = m.st.HelpKey
	m.help.Styles.ShortDesc = m.st.HelpDesc
	m.help.Styles.FullKey = m.st.HelpKey
	m.help.Styles.FullDesc = m.st.HelpDesc
	m.tabs = []view{newVMsView(m), newAccountsView(m), newGraveView(m), newEventsView(m), newOpsView(m)}
	m.width, m.height = 80, 24
	return m
}

// Init reads everything once, then follows the events.
func (m *Model) Init() tea.Cmd {
	cmds := []tea.Cmd{m.loadSnapshot(), every(usageEvery, usageTickMsg{}), every(accountsEvery, accountsTickMsg{})}
	if !m.opts.NoClock {
		cmds = append(cmds, clockTick())
	}
	return tea.Batch(cmds...)
}

// now is the daemon's time: its last reading moved on by the time since,
// unless its clock is manual (then only an advance moves it).
func (m *Model) now() time.Time {
	st := m.d.status
	if st.Now.IsZero() {
		return time.Now()
	}
	if st.Clock == "manual" || m.opts.NoClock {
		return st.Now
	}
	return st.Now.Add(time.Since(m.statusAt))
}

func (m *Model) setStatus(st api.Status) {
	m.d.status, m.statusAt = st, time.Now()
	m.d.gen.status++
}

func (m *Model) say(format string, args ...any) {
	m.note, m.noteErr, m.noteOp = fmt.Sprintf(format, args...), false, ""
}

func (m *Model) fail(err error) {
	m.note, m.noteErr, m.noteOp = oneLine(err.Error()), true, ""
}

// follow makes the message line say what an action's operation is doing
// now, until the next message.
func (m *Model) follow(what string, op model.Operation) {
	m.note, m.noteErr, m.noteOp = what, false, op.ID
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// current is the view on screen.
func (m *Model) current() view {
	if m.detail != nil {
		return m.detail
	}
	return m.tabs[m.tab]
}

// Update handles a message.
func (m *Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg.(type) {
	case snapshotMsg, fetchedMsg, usageMsg, accountsMsg, consoleMsg, actionMsg:
		defer m.inflight.Add(-1) // see io
	}
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		return m, nil
	case tea.KeyMsg:
		return m, m.key(msg)
	case tea.MouseMsg:
		if m.dialog == nil && !m.showHelp {
			m.current().mouse(m, msg)
		}
		return m, nil

	case snapshotMsg:
		if msg.err != nil {
			return m, m.unreachable(msg.err)
		}
		m.d.load(msg.snap)
		m.setStatus(msg.snap.status)
		m.setUsage(msg.usage)
		m.loaded, m.down, m.retry = true, "", reconnectMin
		return m, m.subscribe(m.d.seq)
	case eventsMsg:
		if msg.s != m.stream {
			return m, nil
		}
		for _, e := range msg.events {
			m.d.addEvent(e)
		}
		return m, tea.Batch(msg.s.next, m.fetch(want(msg.events)))
	case fetchedMsg:
		m.applyFetched(msg)
		return m, nil
	case streamDownMsg:
		if msg.s != m.stream || m.ctx.Err() != nil {
			return m, nil
		}
		m.stream = nil
		return m, m.unreachable(msg.err)
	case reconnectMsg:
		return m, m.loadSnapshot()

	case usageTickMsg:
		cmds := []tea.Cmd{every(usageEvery, usageTickMsg{})}
		if m.down == "" && m.loaded {
			cmds = append(cmds, m.readUsage())
			if m.detail != nil {
				cmds = append(cmds, m.readConsole(m.detail.id))
			}
		}
		return m, tea.Batch(cmds...)
	case consoleMsg:
		if m.detail != nil && m.detail.id == msg.id && msg.err == nil {
			m.detail.console = msg.lines
		}
		return m, nil
	case usageMsg:
		if msg.err == nil {
			m.setUsage(msg.usage)
		}
		return m, nil
	case accountsTickMsg:
		cmd := every(accountsEvery, accountsTickMsg{})
		if m.down == "" && m.loaded {
			return m, tea.Batch(cmd, m.readAccounts())
		}
		return m, cmd
	case accountsMsg:
		if msg.err == nil {
			for _, a := range msg.accounts {
				m.d.putAccount(a)
			}
			if msg.status != nil {
				m.setStatus(*msg.status)
			}
		}
		return m, nil
	case clockTickMsg:
		// Nothing to read: the redraw moves the clock and the countdowns.
		return m, clockTick()

	case actionMsg:
		return m, m.acted(msg)
	}
	if m.dialog != nil {
		var cmd tea.Cmd
		m.dialog, cmd = m.dialog.update(m, msg)
		return m, cmd
	}
	return m, nil
}

func (m *Model) setUsage(us []model.VMUsage) {
	m.d.usage = make(map[string]model.VMUsage, len(us))
	for _, u := range us {
		m.d.usage[u.VMID] = u
	}
	m.d.gen.usage++
}

// unreachable notes that superjoltd cannot be reached, keeps the data (drawn
// greyed) and tries again after a back-off.
func (m *Model) unreachable(err error) tea.Cmd {
	if m.ctx.Err() != nil {
		return nil
	}
	m.down = oneLine(err.Error())
	wait := m.retry
	m.retry = min(m.retry*2, reconnectMax)
	return every(wait, reconnectMsg{})
}

func (m *Model) applyFetched(f fetchedMsg) {
	if f.err != nil {
		return // the stream breaks too, and the snapshot after it repairs all
	}
	for _, vm := range f.vms {
		m.d.putVM(vm)
	}
	for _, id := range f.goneVMs {
		m.d.dropVM(id)
	}
	for _, b := range f.backups {
		m.d.putBackup(b)
	}
	for _, id := range f.goneBks {
		m.d.dropBackup(id)
	}
	for _, a := range f.accounts {
		m.d.putAccount(a)
	}
	for _, o := range f.ops {
		m.d.putOp(o)
	}
	if f.status != nil {
		m.setStatus(*f.status)
	}
	if m.detail != nil {
		if _, ok := m.d.vms[m.detail.id]; !ok {
			m.say("%s is gone (reclaimed)", m.detail.id)
			m.detail = nil
		}
	}
}

// key handles a key press: open things first, then the console's own keys,
// then the view's.
func (m *Model) key(msg tea.KeyMsg) tea.Cmd {
	if msg.String() == "ctrl+c" {
		return m.quit()
	}
	if m.dialog != nil {
		var cmd tea.Cmd
		m.dialog, cmd = m.dialog.update(m, msg)
		return cmd
	}
	if m.prompt != nil {
		return m.promptKey(msg)
	}
	if m.showHelp {
		if key.Matches(msg, m.keys.Help, m.keys.Back) || key.Matches(msg, m.keys.Quit) {
			m.showHelp = false
		}
		return nil
	}
	k := m.keys
	switch {
	case key.Matches(msg, k.Quit):
		return m.quit()
	case key.Matches(msg, k.Help):
		m.showHelp = true
		return nil
	case key.Matches(msg, k.Back):
		switch {
		case m.detail != nil:
			m.detail = nil
		case m.current().filter() != "":
			m.current().setFilter("")
		}
		m.note, m.noteOp = "", ""
		return nil
	case key.Matches(msg, k.NextTab):
		m.detail, m.tab = nil, (m.tab+1)%len(m.tabs)
		return nil
	case key.Matches(msg, k.PrevTab):
		m.detail, m.tab = nil, (m.tab+len(m.tabs)-1)%len(m.tabs)
		return nil
	case key.Matches(msg, k.View1, k.View2, k.View3, k.View4, k.View5):
		m.detail, m.tab = nil, int(msg.Runes[0]-'1')
		return nil
	case key.Matches(msg, k.Filter):
		m.openPrompt(false)
		return textinput.Blink
	case key.Matches(msg, k.Jump):
		m.openPrompt(true)
		return textinput.Blink
	}
	cmd, _ := m.current().update(m, msg)
	return cmd
}

func (m *Model) quit() tea.Cmd {
	m.Close()
	return tea.Quit
}

// Close ends the console's subscription and requests under way.
func (m *Model) Close() {
	if m.stream != nil {
		m.stream.cancel()
	}
	m.cancel()
}

// jumps are the names `:` takes, each to a tab.
var jumps = []struct {
	names []string
	tab   int
}{
	{[]string{"vms", "vm"}, 0},
	{[]string{"accounts", "account", "acct"}, 1},
	{[]string{"graveyard", "archive", "grave"}, 2},
	{[]string{"events", "event", "ev"}, 3},
	{[]string{"ops", "operations", "op"}, 4},
}

func (m *Model) openPrompt(jump bool) {
	in := textinput.New()
	in.Prompt = "/"
	if jump {
		in.Prompt = ":"
		in.Placeholder = "vms accounts graveyard events ops"
	} else {
		in.SetValue(m.current().filter())
	}
	in.Cursor.SetMode(cursor.CursorStatic)
	in.Focus()
	m.prompt = &prompt{jump: jump, input: in}
}

func (m *Model) promptKey(msg tea.KeyMsg) tea.Cmd {
	p := m.prompt
	switch msg.Type {
	case tea.KeyEsc:
		if !p.jump {
			m.current().setFilter("")
		}
		m.prompt = nil
		return nil
	case tea.KeyEnter:
		m.prompt = nil
		if !p.jump {
			return nil
		}
		word := strings.ToLower(strings.TrimSpace(p.input.Value()))
		for _, j := range jumps {
			for _, n := range j.names {
				if word != "" && strings.HasPrefix(n, word) {
					m.detail, m.tab = nil, j.tab
					return nil
				}
			}
		}
		if vm, ok := m.findVM(word); ok {
			return m.openVM(vm.ID)
		}
		m.fail(fmt.Errorf("no view or VM %q: try vms, accounts, graveyard, events, ops, or a VM's id or name", word))
		return nil
	}
	var cmd tea.Cmd
	p.input, cmd = p.input.Update(msg)
	if !p.jump {
		m.current().setFilter(p.input.Value())
	}
	return cmd
}

// findVM finds a VM by id or name.
func (m *Model) findVM(s string) (model.VM, bool) {
	if vm, ok := m.d.vms[s]; ok {
		return vm, true
	}
	for _, vm := range m.d.vms {
		if vm.Name == s && s != "" {
			return vm, true
		}
	}
	return model.VM{}, false
}

// openVM opens a VM's page and reads its console's tail.
func (m *Model) openVM(id string) tea.Cmd {
	m.detail = newVMView(m, id)
	return m.readConsole(id)
}

// View draws the console.
func (m *Model) View() string {
	w, h := m.width, m.height
	if w < 20 || h < 6 {
		return "superjolt: the terminal is too small"
	}
	header := m.header(w)
	tabs := m.tabBar(w)
	footer := m.footer(w)
	noteLine := m.noteLine(w)
	bodyH := h - 4
	var body string
	switch {
	case m.showHelp:
		body = m.helpView(w, bodyH)
	case m.dialog != nil:
		body = lipgloss.Place(w, bodyH, lipgloss.Center, lipgloss.Center, m.dialog.view(m, min(w-2, 76)))
	case !m.loaded:
		msg := "reading superjoltd…"
		if m.down != "" {
			msg = "superjoltd is unreachable: " + m.down + "\nretrying by itself"
		}
		body = lipgloss.Place(w, bodyH, lipgloss.Center, lipgloss.Center, m.st.Dim.Render(msg))
	default:
		body = m.current().render(m, w, bodyH)
	}
	return fit(header+"\n"+tabs+"\n"+fit(body, w, bodyH)+"\n"+noteLine+"\n"+footer, w, h)
}

// fit pads or cuts s to exactly h lines of at most w cells.
func fit(s string, w, h int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	for i, l := range lines {
		if ansi.StringWidth(l) > w {
			lines[i] = ansi.Truncate(l, w, "")
		}
	}
	return strings.Join(lines, "\n")
}

func (m *Model) header(w int) string {
	d := m.d
	left := " superjolt · " + m.opts.Host
	if m.loaded {
		left += fmt.Sprintf(" · %s", model.Count(len(d.vms), "VM"))
		if c := d.status.Capacity; c.PoolBytes > 0 {
			left += fmt.Sprintf(" · pool %d%% of %s", c.PoolUsedBytes*100/c.PoolBytes, fmtBytes(c.PoolBytes))
		}
		if a := d.status.Capacity.Accel; a != "" {
			left += " · " + strings.ToUpper(a)
		}
	}
	right := "? help "
	if m.loaded {
		right = clockTime(m.now(), m.loc) + "  " + right
	}
	if m.down != "" {
		right = "UNREACHABLE, reconnecting…  " + right
	}
	return m.st.Header.Render(spread(left, right, w))
}

// spread puts left and right on one line of width w.
func spread(left, right string, w int) string {
	gap := w - ansi.StringWidth(left) - ansi.StringWidth(right)
	if gap < 1 {
		return ansi.Truncate(left, max(w-ansi.StringWidth(right)-1, 0), "…") + " " + right
	}
	return left + strings.Repeat(" ", gap) + right
}

func (m *Model) tabBar(w int) string {
	var parts []string
	for i, t := range m.tabs {
		label := t.title(m)
		if i == m.tab && m.detail == nil {
			parts = append(parts, m.st.TabActive.Render("["+label+"]"))
		} else {
			parts = append(parts, m.st.Tab.Render(" "+label+" "))
		}
	}
	left := " " + strings.Join(parts, "")
	if m.detail != nil {
		left += m.st.TabActive.Render("[" + m.detail.title(m) + "]")
	}
	right := ""
	switch {
	case m.prompt != nil:
		right = m.prompt.input.View()
	case m.current().filter() != "":
		right = "/" + m.current().filter()
	default:
		right = m.st.Dim.Render("/ filter")
	}
	return spread(left, right+" ", w)
}

func (m *Model) noteLine(w int) string {
	switch {
	case m.down != "" && m.loaded:
		return m.st.Error.Render(ansi.Truncate(" superjoltd is unreachable ("+m.down+"); showing the last data greyed", w, "…"))
	case m.noteOp != "":
		o := m.d.ops[m.noteOp]
		line := fmt.Sprintf(" %s: %s (%s)", m.note, o.State, o.ID)
		switch o.State {
		case model.OpRunning:
			if t := m.trail(o); t != "…" {
				line = fmt.Sprintf(" %s: %s (%s)", m.note, t, o.ID)
			}
		case model.OpFailed:
			return m.st.Error.Render(ansi.Truncate(line+": "+oneLine(o.Error), w, "…"))
		}
		return m.st.OK.Render(ansi.Truncate(line, w, "…"))
	case m.note != "" && m.noteErr:
		return m.st.Error.Render(ansi.Truncate(" "+m.note, w, "…"))
	case m.note != "":
		return m.st.OK.Render(ansi.Truncate(" "+m.note, w, "…"))
	}
	return ""
}

// footer lists the current view's keys, then the console's.
func (m *Model) footer(w int) string {
	if m.dialog != nil {
		return " " + m.help.ShortHelpView(m.dialog.keys(m))
	}
	bs := slices.Clone(m.current().keys(m))
	bs = append(bs, m.keys.Jump, m.keys.Help, m.keys.Quit)
	m.help.Width = w
	return " " + m.help.ShortHelpView(bs)
}

func (m *Model) helpView(w, h int) string {
	k := m.keys
	groups := [][]key.Binding{m.current().keys(m), k.Navigation(), k.Views(), k.General()}
	m.help.Width = w
	title := m.st.DialogTitle.Render(" Keys of " + m.current().title(m))
	if m.opts.ReadOnly {
		title += m.st.Dim.Render(" (read-only: no actions)")
	}
	return title + "\n\n" + m.help.FullHelpView(groups)
}
