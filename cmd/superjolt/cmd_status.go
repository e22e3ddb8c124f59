package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
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
			c := st.Capacity
			accel := c.Accel
			if accel == "tcg" {
				accel += " (software emulation: no usable KVM; guests run slower)"
			}
			memory := fmt.Sprintf("%s held by %s of %s (%s kept for the host): %s free",
				fmtMiB(int(c.ReservedMiB)), model.Count(c.LiveVMs, "live VM"), fmtMiB(int(c.MemoryMiB)), fmtMiB(int(c.ReserveMiB)), fmtMiB(int(max(c.FreeMiB(), 0))))
			if c.FreeMiB() < 0 {
				memory += fmt.Sprintf(", overcommitted by %s", fmtMiB(int(-c.FreeMiB())))
			}
			cpus := model.Count(c.VCPUs, "vCPU") + " of live VMs on " + model.Count(c.CPUs, "host CPU")
			if c.VCPUs > c.CPUs {
				cpus += " (overcommitted: they share)"
			}
			disks := fmt.Sprintf("live VMs' disks may grow to %s", fmtGiB(int(c.DiskGiB)))
			if c.PoolBytes > 0 {
				disks += " on a " + fmtBytes(c.PoolBytes) + " pool"
			}
			if c.DisksOvercommitted() {
				disks += " (overcommitted: they take only what their guests write; `superjolt pool` shows what is used)"
			}
			return o.fields(
				"superjoltd", st.Version,
				"superjolt", version.String(),
				"Guests", accel,
				"Memory", memory,
				"CPUs", cpus,
				"Disks", disks,
				"Clock", st.Clock,
				"Now", o.fmtTime(st.Now),
			)
		},
	}
}
