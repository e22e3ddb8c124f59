// Package keymap is the operator console's one key map: every key the
// console answers is a key.Binding here, and the help screen and footer are
// generated from it, so that what `?` lists is what the keys do.
package keymap

import "github.com/charmbracelet/bubbles/key"

// KeyMap holds every binding of the console.
type KeyMap struct {
	// Moving around.
	Up, Down, PageUp, PageDown, Top, Bottom key.Binding
	NextTab, PrevTab, Jump, Back, Enter     key.Binding
	Filter, Sort, Reverse, Help, Quit       key.Binding
	View1, View2, View3, View4, View5       key.Binding

	// Actions (absent with --readonly).
	Create, StopStart, Destroy, Resume, Backup, Restore, DeleteBackup key.Binding
	TopUp, AddPort, RemovePort, AddDomain, RemoveDomain, Cancel       key.Binding

	// Pause stops the events view from following the stream.
	Pause key.Binding
}

// Default returns the console's bindings.
func Default() KeyMap {
	b := func(help string, desc string, keys ...string) key.Binding {
		return key.NewBinding(key.WithKeys(keys...), key.WithHelp(help, desc))
	}
	return KeyMap{
		Up:       b("↑/k", "up", "up", "k"),
		Down:     b("↓/j", "down", "down", "j"),
		PageUp:   b("pgup", "page up", "pgup", "ctrl+b"),
		PageDown: b("pgdn", "page down", "pgdown", "ctrl+f"),
		Top:      b("g", "top", "home", "g"),
		Bottom:   b("G", "bottom", "end", "G"),
		NextTab:  b("tab", "next view", "tab"),
		PrevTab:  b("shift+tab", "previous view", "shift+tab"),
		Jump:     b(":", "jump to a view", ":"),
		Back:     b("esc", "back", "esc"),
		Enter:    b("enter", "details", "enter"),
		Filter:   b("/", "filter", "/"),
		Sort:     b("o", "sort by next column", "o"),
		Reverse:  b("O", "reverse order", "O"),
		Help:     b("?", "help", "?"),
		Quit:     b("q", "quit", "q", "ctrl+c"),
		View1:    b("1", "VMs", "1"),
		View2:    b("2", "accounts", "2"),
		View3:    b("3", "graveyard & archive", "3"),
		View4:    b("4", "events", "4"),
		View5:    b("5", "operations", "5"),

		Create:       b("c", "create VM", "c"),
		StopStart:    b("s", "stop/start", "s"),
		Destroy:      b("d", "destroy", "d"),
		Resume:       b("u", "resume", "u"),
		Backup:       b("b", "back up now", "b"),
		Restore:      b("r", "restore", "r"),
		DeleteBackup: b("x", "delete backup", "x"),
		TopUp:        b("t", "top up", "t"),
		AddPort:      b("p", "add port", "p"),
		RemovePort:   b("P", "remove port", "P"),
		AddDomain:    b("n", "add domain", "n"),
		RemoveDomain: b("N", "remove domain", "N"),
		Cancel:       b("x", "cancel operation", "x"),

		Pause: b("space", "pause/follow", " "),
	}
}

// Actions returns the action bindings, which --readonly turns off.
func (k *KeyMap) Actions() []*key.Binding {
	return []*key.Binding{&k.Create, &k.StopStart, &k.Destroy, &k.Resume, &k.Backup, &k.Restore,
		&k.DeleteBackup, &k.TopUp, &k.AddPort, &k.RemovePort, &k.AddDomain, &k.RemoveDomain, &k.Cancel}
}

// ReadOnly turns every action binding off: they neither match nor show.
func (k *KeyMap) ReadOnly() {
	for _, b := range k.Actions() {
		b.SetEnabled(false)
	}
}

// Navigation lists the bindings every view shares, for the help screen.
func (k KeyMap) Navigation() []key.Binding {
	return []key.Binding{k.Up, k.Down, k.PageUp, k.PageDown, k.Top, k.Bottom, k.Enter, k.Back}
}

// Views lists the bindings that move between views.
func (k KeyMap) Views() []key.Binding {
	return []key.Binding{k.View1, k.View2, k.View3, k.View4, k.View5, k.NextTab, k.Jump}
}

// General lists filter, sort, help and quit.
func (k KeyMap) General() []key.Binding {
	return []key.Binding{k.Filter, k.Sort, k.Reverse, k.Help, k.Quit}
}
