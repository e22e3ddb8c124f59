package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
)

func newDebugCommand(o *globalOptions) *cobra.Command {
	advance := &cobra.Command{
		Use:   "advance DURATION",
		Short: "Move the daemon's manual clock forward (superjoltd --clock=manual only)",
		Long: `Move the daemon's clock forward by DURATION (90m, 24h, 7d, 1d12h) and run
everything that fell due on the way (billing, daily backups, reclaim), in
order. Refused unless superjoltd was started with --clock=manual.`,
		Example: "  superjolt debug clock advance 24h\n  superjolt debug clock advance 7d",
		Args:    args("DURATION"),
		RunE: func(cmd *cobra.Command, args []string) error {
			d, err := api.ParseDuration(args[0])
			if err != nil {
				return err
			}
			if err := (api.AdvanceClockRequest{By: api.Duration(d)}).Validate(); err != nil {
				return err
			}
			stop := o.clockProgress(cmd.Context(), d)
			now, err := o.client.AdvanceClock(cmd.Context(), d)
			stop()
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(api.ClockResult{Now: now})
			}
			fmt.Fprintf(o.stdout, "the clock is now %s\n", o.fmtTime(now))
			return nil
		},
	}
	show := &cobra.Command{
		Use:   "show",
		Short: "Show the daemon's clock and whether it is manual",
		Args:  args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := o.client.Status(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(st)
			}
			return o.fields("Now", o.fmtTime(st.Now), "Clock", st.Clock)
		},
	}
	return group("debug", "Tools for tests and demos", group("clock", "The daemon's clock", advance, show))
}

// clockProgress tells a person at a terminal, every second, how far an
// advance of the manual clock by d has got (the daemon moves it step by
// step, running what falls due on the way); it returns the function that
// stops it. Scripts and -o json see nothing of it.
func (o *globalOptions) clockProgress(ctx context.Context, d time.Duration) func() {
	if !o.chatty || o.json() {
		return func() {}
	}
	st, err := o.client.Status(ctx)
	if err != nil {
		return func() {}
	}
	start := st.Now
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(time.Second) // a person's pace, not the appliance's clock
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if st, err := o.client.Status(ctx); err == nil {
				o.progress("  advancing: the clock is at %s, %s of %s done", o.fmtTime(st.Now), st.Now.Sub(start).Round(time.Minute), d)
			}
		}
	}()
	return func() { cancel(); <-done }
}
