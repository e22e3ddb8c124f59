package main

import (
	"strconv"

	"github.com/spf13/cobra"
)

func newTierCommand(o *globalOptions) *cobra.Command {
	return group("tier", "VM sizes and their prices", &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the tiers: vCPUs, memory, disk, rate per hour",
		Args:    args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ts, err := o.client.Tiers(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(ts)
			}
			rows := make([][]string, 0, len(ts))
			for _, t := range ts {
				rows = append(rows, []string{t.Name, strconv.Itoa(t.VCPUs), fmtMiB(t.MemoryMiB), fmtGiB(t.DiskGiB), t.RatePerHour.String()})
			}
			return o.table([]string{"NAME", "VCPUS", "MEMORY", "DISK", "CREDITS/HOUR"}, rows)
		},
	})
}
