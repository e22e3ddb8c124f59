package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
)

func newOpCommand(o *globalOptions) *cobra.Command {
	return group("op", "Long operations: backup, restore, destroy, reclaim", &cobra.Command{
		Use:   "show ID",
		Short: "Show an operation's progress and result",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(model.KindOperation, args[0]); err != nil {
				return err
			}
			op, err := o.client.Operation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(op)
			}
			errText := "-"
			if op.Error != "" {
				errText = op.Error + " (" + op.ErrorCode + ")"
			}
			return o.fields(
				"ID", op.ID,
				"Kind", string(op.Kind),
				"VM", dash(op.VMID),
				"Backup", dash(op.BackupID),
				"State", string(op.State),
				"Step", dash(op.Step),
				"Progress", fmt.Sprintf("%d%%", op.Progress),
				"Started", fmtTime(op.StartedAt),
				"Finished", fmtTime(op.FinishedAt),
				"Error", errText,
			)
		},
	})
}
