package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
)

// followFormat lays out followed events in columns as wide as their usual
// contents, since a stream cannot be aligned after the fact.
const followFormat = "%-6s  %-19s  %-20s  %-13s  %s\n"

// defaultEventTail is how many of the newest events `superjolt events` shows.
const defaultEventTail = 50

func newEventsCommand(o *globalOptions) *cobra.Command {
	var follow bool
	var after uint64
	var limit, tail int
	c := &cobra.Command{
		Use:   "events [-n N] [--follow] | --after SEQ [--limit N] [--follow]",
		Short: "Show the latest events; --follow keeps printing them as they happen",
		Long: `Show events: VMs created, stopped, destroyed, backups taken, top-ups,
archival, reclaim. By default the newest 50 (--tail/-n N), oldest first;
with --follow, superjolt then keeps printing new ones as they happen until
interrupted. Scripts that keep their place use --after SEQ (the events after
that sequence number, oldest first, at most --limit). With -o json, a JSON
array, or one JSON object per line with --follow.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			fromStart := cmd.Flags().Changed("after")
			if fromStart && cmd.Flags().Changed("tail") {
				return fmt.Errorf("%w: give --tail N (the newest N) or --after SEQ (those after SEQ), not both", model.ErrInvalid)
			}
			if !fromStart && cmd.Flags().Changed("limit") {
				return fmt.Errorf("%w: --limit goes with --after SEQ; for the newest N events use --tail N", model.ErrInvalid)
			}
			if tail < 0 {
				return fmt.Errorf("%w: --tail %d: give 0 or more", model.ErrInvalid, tail)
			}
			var es []model.Event
			var err error
			switch {
			case fromStart && follow:
				// Only what comes after SEQ, streamed.
			case fromStart:
				es, err = o.client.Events(ctx, after, limit)
			case tail > 0:
				es, err = o.client.LastEvents(ctx, tail)
			case follow:
				// --tail 0 --follow: only new events; start after the newest.
				var last []model.Event
				if last, err = o.client.LastEvents(ctx, 1); len(last) > 0 {
					after = last[0].Seq
				}
			}
			if err != nil {
				return err
			}
			if len(es) > 0 {
				after = es[len(es)-1].Seq
			}
			if !follow {
				if o.json() {
					return o.printJSON(nonNilEvents(es))
				}
				rows := make([][]string, 0, len(es))
				for _, ev := range es {
					rows = append(rows, []string{fmt.Sprint(ev.Seq), o.fmtTime(ev.At), ev.Type, dash(ev.Object), o.localize(ev.Message)})
				}
				return o.table([]string{"SEQ", "AT", "TYPE", "OBJECT", "MESSAGE"}, rows)
			}
			if !o.json() {
				fmt.Fprintf(o.stdout, followFormat, "SEQ", "AT", "TYPE", "OBJECT", "MESSAGE")
			}
			show := func(ev model.Event) error {
				if o.json() {
					return o.printJSONLine(ev)
				}
				_, err := fmt.Fprintf(o.stdout, followFormat, fmt.Sprint(ev.Seq), o.fmtTime(ev.At), ev.Type, dash(ev.Object), o.localize(ev.Message))
				return err
			}
			for _, ev := range es {
				if err := show(ev); err != nil {
					return err
				}
			}
			return o.client.FollowEvents(ctx, after, show)
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing events as they happen")
	c.Flags().IntVarP(&tail, "tail", "n", defaultEventTail, "show the newest N events (0 with --follow: only new ones)")
	c.Flags().Uint64Var(&after, "after", 0, "show the events after this sequence number instead, oldest first (for scripts)")
	c.Flags().IntVar(&limit, "limit", 100, "with --after: at most this many events (without --follow)")
	return c
}

// nonNilEvents makes an empty list print as [] in JSON.
func nonNilEvents(es []model.Event) []model.Event {
	if es == nil {
		return []model.Event{}
	}
	return es
}
