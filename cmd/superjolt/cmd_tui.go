package main

import (
	"fmt"
	"os"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/mattn/go-isatty"
	"github.com/muesli/termenv"
	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/tui"
)

func newTUICommand(o *globalOptions) *cobra.Command {
	var readOnly, mouse bool
	c := &cobra.Command{
		Use:   "tui",
		Short: "Open the operator console: VMs, accounts, graveyard, events and operations, live",
		Long: `Open the operator console, a terminal UI over superjoltd that follows its
event stream: every VM live, a VM's backups, ports, domains and events,
accounts with their runway, the graveyard and archive counting down, the
event stream and the operations under way. Every action of the CLI is a key
away (? lists them); destroy, restore and deleting a backup ask for the VM's
name. --readonly leaves the action keys out. NO_COLOR is respected.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !isatty.IsTerminal(os.Stdout.Fd()) || !isatty.IsTerminal(os.Stdin.Fd()) {
				return fmt.Errorf("%w: superjolt tui needs a terminal; `superjolt vm list` and `superjolt events --follow` show the same without one", model.ErrInvalid)
			}
			if os.Getenv("NO_COLOR") != "" {
				lipgloss.SetColorProfile(termenv.Ascii)
			}
			host, _ := os.Hostname()
			m := tui.New(o.client, tui.Options{Host: host, ReadOnly: readOnly, Location: o.zone()})
			opts := []tea.ProgramOption{tea.WithAltScreen(), tea.WithContext(cmd.Context())}
			if mouse {
				opts = append(opts, tea.WithMouseCellMotion())
			}
			_, err := tea.NewProgram(m, opts...).Run()
			m.Close()
			if err != nil && cmd.Context().Err() != nil {
				return nil // Ctrl-C from outside: a normal end
			}
			return err
		},
	}
	c.Flags().BoolVar(&readOnly, "readonly", false, "watch only: no action keys at all")
	c.Flags().BoolVar(&mouse, "mouse", false, "scroll with the mouse wheel (the terminal's own text selection then needs Shift)")
	return c
}
