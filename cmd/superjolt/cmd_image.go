package main

import (
	"github.com/spf13/cobra"
)

func newImageCommand(o *globalOptions) *cobra.Command {
	return group("image", "Images VMs are made from", &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the images; the built-in one is there from the first start",
		Args:    args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			is, err := o.client.Images(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(is)
			}
			rows := make([][]string, 0, len(is))
			for _, i := range is {
				builtin := "no"
				if i.Builtin {
					builtin = "yes"
				}
				rows = append(rows, []string{i.Name, builtin, fmtBytes(i.SizeBytes), o.fmtTime(i.CreatedAt)})
			}
			return o.table([]string{"NAME", "BUILTIN", "SIZE", "CREATED"}, rows)
		},
	})
}
