// Package styles holds every lipgloss style of the operator console in one
// Styles value, so that views never build a style while drawing and a
// colourless terminal (NO_COLOR, or the ASCII profile of the tests) gets the
// same layout with attributes only.
package styles

import (
	"github.com/charmbracelet/lipgloss"

	"github.com/superjolt/superjolt/appliance/model"
)

// Styles are the console's styles.
type Styles struct {
	Header    lipgloss.Style // the top line
	HeaderDim lipgloss.Style
	Tab       lipgloss.Style
	TabActive lipgloss.Style

	TableHeader lipgloss.Style
	Cell        lipgloss.Style
	Selected    lipgloss.Style // the cursor's row
	Stale       lipgloss.Style // data kept from before superjoltd became unreachable

	Dim   lipgloss.Style
	OK    lipgloss.Style
	Warn  lipgloss.Style
	Error lipgloss.Style
	Bold  lipgloss.Style

	// State colours a VM's state; Busy marks a VM with an operation under way.
	State map[model.VMState]lipgloss.Style
	Busy  lipgloss.Style

	Dialog        lipgloss.Style
	DialogTitle   lipgloss.Style
	Button        lipgloss.Style
	ButtonFocused lipgloss.Style
	Danger        lipgloss.Style // the focused button of a destructive action
	Label         lipgloss.Style
	FieldError    lipgloss.Style

	HelpKey  lipgloss.Style
	HelpDesc lipgloss.Style
	Footer   lipgloss.Style
}

// Default returns the console's styles. Colours are adaptive (light and
// dark terminals); under the ASCII profile only bold, faint and reverse
// remain, which is enough to tell the cursor, warnings and stale data.
func Default() *Styles {
	green := lipgloss.AdaptiveColor{Light: "#1a7f37", Dark: "#3fb950"}
	yellow := lipgloss.AdaptiveColor{Light: "#9a6700", Dark: "#d29922"}
	red := lipgloss.AdaptiveColor{Light: "#cf222e", Dark: "#f85149"}
	blue := lipgloss.AdaptiveColor{Light: "#0969da", Dark: "#58a6ff"}
	grey := lipgloss.AdaptiveColor{Light: "#6e7781", Dark: "#8b949e"}
	purple := lipgloss.AdaptiveColor{Light: "#8250df", Dark: "#bc8cff"}

	s := &Styles{}
	s.Header = lipgloss.NewStyle().Bold(true)
	s.HeaderDim = lipgloss.NewStyle().Foreground(grey)
	s.Tab = lipgloss.NewStyle().Foreground(grey)
	s.TabActive = lipgloss.NewStyle().Bold(true).Reverse(true)

	s.TableHeader = lipgloss.NewStyle().Bold(true)
	s.Cell = lipgloss.NewStyle()
	s.Selected = lipgloss.NewStyle().Reverse(true)
	s.Stale = lipgloss.NewStyle().Faint(true)

	s.Dim = lipgloss.NewStyle().Foreground(grey)
	s.OK = lipgloss.NewStyle().Foreground(green)
	s.Warn = lipgloss.NewStyle().Foreground(yellow).Bold(true)
	s.Error = lipgloss.NewStyle().Foreground(red).Bold(true)
	s.Bold = lipgloss.NewStyle().Bold(true)

	s.State = map[model.VMState]lipgloss.Style{
		model.StateCreating:  lipgloss.NewStyle().Foreground(blue),
		model.StateRunning:   lipgloss.NewStyle().Foreground(green),
		model.StateStopped:   lipgloss.NewStyle().Foreground(grey),
		model.StateGraveyard: lipgloss.NewStyle().Foreground(red),
		model.StateArchived:  lipgloss.NewStyle().Foreground(purple),
	}
	s.Busy = lipgloss.NewStyle().Foreground(blue).Bold(true)

	s.Dialog = lipgloss.NewStyle().Border(lipgloss.NormalBorder()).Padding(0, 1)
	s.DialogTitle = lipgloss.NewStyle().Bold(true)
	s.Button = lipgloss.NewStyle().Padding(0, 1)
	s.ButtonFocused = lipgloss.NewStyle().Padding(0, 1).Reverse(true).Bold(true)
	s.Danger = lipgloss.NewStyle().Padding(0, 1).Reverse(true).Bold(true).Foreground(red)
	s.Label = lipgloss.NewStyle().Bold(true)
	s.FieldError = lipgloss.NewStyle().Foreground(red)

	s.HelpKey = lipgloss.NewStyle().Bold(true)
	s.HelpDesc = lipgloss.NewStyle().Foreground(grey)
	s.Footer = lipgloss.NewStyle()
	return s
}

// StateStyle returns the style of a VM state (plain for an unknown one).
func (s *Styles) StateStyle(st model.VMState) lipgloss.Style {
	if x, ok := s.State[st]; ok {
		return x
	}
	return s.Cell
}
