package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newOpCommand(o *globalOptions) *cobra.Command {
	return group("op", "Long operations: list, follow, cancel",
		newOpListCommand(o),
		newOpShowCommand(o),
		newOpCancelCommand(o),
	)
}

func newOpListCommand(o *globalOptions) *cobra.Command {
	var f api.OpFilter
	c := &cobra.Command{
		Use:     "list [--vm ID] [--running] [--limit N]",
		Aliases: []string{"ls"},
		Short:   "List operations, newest first",
		Args:    args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.VMID != "" {
				if err := o.resolveVM(cmd.Context(), &f.VMID); err != nil {
					return err
				}
			}
			if f.Limit < 0 || f.Limit > model.MaxListLimit {
				return fmt.Errorf("%w: --limit %d: use a number from 1 to %d", model.ErrInvalid, f.Limit, model.MaxListLimit)
			}
			ops, err := o.client.Operations(cmd.Context(), f)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(ops)
			}
			rows := make([][]string, 0, len(ops))
			for _, op := range ops {
				rows = append(rows, []string{op.ID, string(op.Kind), dash(op.VMID), dash(op.BackupID), string(op.State),
					dash(op.Step), o.fmtTime(op.StartedAt), o.fmtTime(op.FinishedAt)})
			}
			return o.table([]string{"ID", "KIND", "VM", "BACKUP", "STATE", "STEP", "STARTED", "FINISHED"}, rows)
		},
	}
	c.Flags().StringVar(&f.VMID, "vm", "", "only this VM's operations")
	c.Flags().BoolVar(&f.Running, "running", false, "only operations under way")
	c.Flags().IntVar(&f.Limit, "limit", 50, "at most this many, newest first")
	return c
}

func newOpShowCommand(o *globalOptions) *cobra.Command {
	var follow bool
	c := &cobra.Command{
		Use:   "show ID [--follow]",
		Short: "Show an operation's progress and result; --follow waits for its end",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(model.KindOperation, args[0]); err != nil {
				return err
			}
			var op model.Operation
			var err error
			if follow {
				op, err = o.follow(cmd.Context(), args[0])
				if errors.As(err, new(*detachedError)) {
					return err
				}
			} else {
				op, err = o.client.Operation(cmd.Context(), args[0])
				if err != nil {
					return err
				}
			}
			if perr := o.printOp(op); perr != nil {
				return perr
			}
			// A failed operation makes `op show --follow` fail with its
			// category, so that scripts can wait on it.
			return err
		},
	}
	c.Flags().BoolVarP(&follow, "follow", "f", false, "wait for the operation to end, showing each step")
	return c
}

func newOpCancelCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel an operation where that is safe (a backup before its snapshot); otherwise say why not",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(model.KindOperation, args[0]); err != nil {
				return err
			}
			op, err := o.client.CancelOperation(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printOp(op)
			}
			fmt.Fprintf(o.stdout, "%s cancelled: %s of %s changed nothing\n", op.ID, op.Kind, dash(op.VMID))
			return nil
		},
	}
}

// printOp prints an operation.
func (o *globalOptions) printOp(op model.Operation) error {
	if o.json() {
		return o.printJSON(op)
	}
	errText := "-"
	if op.Error != "" {
		errText = message(op.Err()) + " (" + op.ErrorCode + ")"
	}
	return o.fields(
		"ID", op.ID,
		"Kind", string(op.Kind),
		"VM", dash(op.VMID),
		"Backup", dash(op.BackupID),
		"State", string(op.State),
		"Step", dash(op.Step),
		"Progress", fmt.Sprintf("%d%%", op.Progress),
		"Started", o.fmtTime(op.StartedAt),
		"Finished", o.fmtTime(op.FinishedAt),
		"Error", errText,
	)
}

// addNoWait gives a command that starts an operation its --no-wait flag.
func addNoWait(c *cobra.Command) *bool {
	var noWait bool
	c.Flags().BoolVar(&noWait, "no-wait", false, "print the operation as soon as superjoltd accepts it, instead of waiting for its end")
	return &noWait
}

// started handles an operation a command just started: with noWait it
// prints it and returns ok false; otherwise it follows it to its end (see
// follow) and returns it, ok true once it is done.
func (o *globalOptions) started(ctx context.Context, op model.Operation, err error, noWait bool) (final model.Operation, ok bool, _ error) {
	if err != nil {
		return op, false, err
	}
	if noWait {
		return op, false, o.printOp(op)
	}
	final, err = o.follow(ctx, op.ID)
	return final, err == nil, err
}

// follow waits for an operation to end, telling a person at a terminal each
// step as it is recorded. The operation belongs to superjoltd: when ctx
// ends first (Ctrl-C), follow says that it goes on and how to follow it,
// and the command exits 130; the operation is not cancelled.
func (o *globalOptions) follow(ctx context.Context, id string) (model.Operation, error) {
	last := ""
	op, err := o.client.FollowOperation(ctx, id, func(op model.Operation) {
		if op.Step != last && !op.State.Finished() {
			o.progress("  %s %s of %s: %s (%d%%)", op.ID, op.Kind, dash(op.VMID), op.Step, op.Progress)
			last = op.Step
		}
	})
	if err != nil && ctx.Err() != nil {
		return op, &detachedError{id: id}
	}
	return op, err
}

// detachedError is what a command whose operation goes on without it ends
// with: it is a cancellation (exit 130) that says how to follow the
// operation.
type detachedError struct{ id string }

func (e *detachedError) Error() string {
	return fmt.Sprintf("%s goes on; follow it with `superjolt op show %s --follow`", e.id, e.id)
}

func (e *detachedError) Unwrap() error { return context.Canceled }
