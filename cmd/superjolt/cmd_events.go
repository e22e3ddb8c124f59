package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
)

// followFormat lays out followed events in columns as wide as their usual
// contents, since a stream cannot be aligned after the fact.
const followFormat = "%-6s  %-19s  %-20s  %-13s  %s\n"

func newEventsCommand(o *globalOptions) *cobra.Command {
	var follow bool
	var after uint64
	var limit int
	c := &cobra.Command{
		Use:   "events [--follow] [--after SEQ]",
		Short: "Show what happened; --follow keeps printing events as they happen",
		Long: `Show events: VMs created, stopped, destroyed, backups taken, charges,
archival, reclaim. With --follow, superjolt keeps printing them as they happen
until interrupted; with -o json, one JSON object per line.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			if follow {
				if !o.json() {
					fmt.Fprintf(o.stdout, followFormat, "SEQ", "AT", "TYPE", "OBJECT", "MESSAGE")
				}
				return o.client.FollowEvents(ctx, after, func(ev model.Event) error {
					if o.json() {
						return o.printJSONLine(ev)
					}
					_, err := fmt.Fprintf(o.stdout, followFormat, fmt.Sprint(ev.Seq), fmtTime(ev.At), ev.Type, dash(ev.Object), ev.Message)
					return err
				})
			}
			es, err := o.client.Events(ctx, after, limit)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(es)
			}
			rows := make([][]string, 0, len(es))
			for _, ev := range es {
				rows = append(rows, []string{fmt.Sprint(ev.Seq), fmtTime(ev.At), ev.Type, dash(ev.Object), ev.Message})
			}
			return o.table([]string{"SEQ", "AT", "TYPE", "OBJECT", "MESSAGE"}, rows)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they happen")
	c.Flags().Uint64Var(&after, "after", 0, "only events after this sequence number")
	c.Flags().IntVar(&limit, "limit", 100, "at most this many events (without --follow)")
	return c
}
