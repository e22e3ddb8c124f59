package main

import (
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newPoolCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "pool",
		Short: "Show the storage pool: size, used, free, and what uses it",
		Long: `Show the storage pool that holds the images, the VMs' disks and the backups:
its size, what is used and free, and how much the images, VMs and backups use
("referenced" is all the data each can reach, "exclusive" what deleting it
would free, as 'btrfs filesystem du' reads them: a backup just taken holds
nothing alone until its VM rewrites what it holds). They come from the extent
map of every file in the pool: a pool of many large, much-rewritten disks
takes seconds (about 2 µs per extent).

When the pool is full (below its reserve), new VMs, backups and restores fail
with exit code 7 until space is freed: delete on-demand backups
('superjolt backup list VM', 'superjolt backup delete BACKUP') or destroy VMs.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := o.client.Pool(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(p)
			}
			if err := o.printPool(p); err != nil {
				return err
			}
			// What the live VMs' sparse disks may grow to, against the pool.
			if st, err := o.client.Status(cmd.Context()); err == nil {
				c := st.Capacity
				line := fmt.Sprintf("\nThe disks of %s may grow to %s", model.Count(c.LiveVMs, "live VM"), fmtGiB(int(c.DiskGiB)))
				if c.DisksOvercommitted() {
					line += fmt.Sprintf(", more than the pool's %s: overcommitted, which holds while the guests do not all fill their disks", fmtBytes(c.PoolBytes))
				}
				fmt.Fprintln(o.stdout, line+".")
			}
			return nil
		},
	}
}

// printPool writes the pool's figures, then what uses it, as a table.
func (o *globalOptions) printPool(p api.Pool) error {
	free := fmtBytes(p.FreeBytes)
	if p.Full {
		free += fmt.Sprintf(" (FULL: below the %s reserve; new VMs, backups and restores are refused)", fmtBytes(p.ReserveBytes))
	}
	if err := o.fields(
		"Pool", p.Pool,
		"Size", fmtBytes(p.SizeBytes),
		"Used", fmtBytes(p.UsedBytes)+" ("+percent(p.UsedBytes, p.SizeBytes)+")",
		"Free", free,
		"Metadata free", fmtBytes(p.MetadataFreeBytes),
	); err != nil {
		return err
	}
	fmt.Fprintln(o.stdout)
	row := func(kind string, u api.PoolUsage) []string {
		return []string{kind, strconv.Itoa(u.Count), fmtBytes(u.ReferencedBytes), fmtBytes(u.ExclusiveBytes)}
	}
	return o.table([]string{"KIND", "COUNT", "REFERENCED", "EXCLUSIVE"}, [][]string{
		row("images", p.Images), row("vms", p.VMs), row("backups", p.Backups),
	})
}

// percent prints part of whole as a percentage with one decimal.
func percent(part, whole int64) string {
	if whole <= 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(part)*100/float64(whole), 'f', 1, 64) + "%"
}
