package main

import (
	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/version"
)

func newStatusCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show superjoltd's version and clock, and this CLI's version",
		Args:  args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := o.client.Status(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(map[string]any{"daemon": st, "cli_version": version.String()})
			}
			return o.fields(
				"superjoltd", st.Version,
				"superjolt", version.String(),
				"Clock", st.Clock,
				"Now", o.fmtTime(st.Now),
			)
		},
	}
}
