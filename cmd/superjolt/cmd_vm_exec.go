package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newVMExecCommand(o *globalOptions) *cobra.Command {
	var timeout time.Duration
	var stdin bool
	c := &cobra.Command{
		Use:   "exec ID [--timeout D] [--stdin] -- CMD [ARGS...]",
		Short: "Run a command in the guest; prints its output and exits with its status",
		Long: `Run a command in the guest through its agent. Its stdout and stderr are
printed as they were (up to 1 MiB each), and superjolt exits with the
command's exit status (128+N when signal N ended it). With --stdin, superjolt's
standard input is sent to the command.`,
		Example: `  superjolt vm exec vm-abc123 -- cat /etc/hostname
  echo hello | superjolt vm exec vm-abc123 --stdin -- sh -c 'cat > /root/note'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return fmt.Errorf("%w: vm exec takes a VM id and a command after --, like: superjolt vm exec vm-abc123 -- cat /etc/hostname", model.ErrInvalid)
			}
			if dash := cmd.ArgsLenAtDash(); dash != -1 && dash != 1 {
				return fmt.Errorf("%w: put the command after --: superjolt vm exec ID -- CMD [ARGS...]", model.ErrInvalid)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			req := api.ExecRequest{Path: args[1], Args: args[2:], Timeout: api.Duration(timeout)}
			if stdin {
				b, err := io.ReadAll(io.LimitReader(o.stdin, api.MaxRequestBytes/2+1))
				if err != nil {
					return fmt.Errorf("read stdin: %w", err)
				}
				if len(b) > api.MaxRequestBytes/2 {
					return fmt.Errorf("%w: --stdin: more than %d bytes of input", model.ErrInvalid, api.MaxRequestBytes/2)
				}
				req.Stdin = b
			}
			if err := req.Validate(); err != nil {
				return err
			}
			res, err := o.client.Exec(cmd.Context(), id, req)
			if err != nil {
				return err
			}
			if o.json() {
				if err := o.printJSON(res); err != nil {
					return err
				}
			} else {
				_, _ = o.stdout.Write(res.Stdout)
				_, _ = o.stderr.Write(res.Stderr)
				if res.Truncated {
					fmt.Fprintln(o.stderr, "superjolt: the output was longer than the agent keeps and was cut")
				}
				if res.TimedOut {
					fmt.Fprintf(o.stderr, "superjolt: the command ran out of time and was killed\n")
				}
			}
			switch {
			case res.Signal > 0:
				return exitStatus(128 + res.Signal)
			case res.ExitCode != 0:
				return exitStatus(res.ExitCode & 0xff)
			}
			return nil
		},
	}
	c.Flags().DurationVar(&timeout, "timeout", 0, "kill the command after this long (default: the agent's, 60s)")
	c.Flags().BoolVarP(&stdin, "stdin", "i", false, "send superjolt's standard input to the command")
	return c
}
