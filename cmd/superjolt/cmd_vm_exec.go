package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newVMExecCommand(o *globalOptions) *cobra.Command {
	var timeout time.Duration
	var stdin, tty bool
	c := &cobra.Command{
		Use:   "exec ID [--timeout D] [-i] [-t] -- CMD [ARGS...]",
		Short: "Run a command in the guest; streams its output and exits with its status",
		Long: fmt.Sprintf(`Run a command in the guest through its agent. Its stdout and stderr are
printed as it writes them, and superjolt exits with the command's exit status
(128+N when signal N ended it). With -i (--stdin), superjolt's standard input
is sent to the command as it comes. With -t (--tty), the command runs on a
terminal in the guest, your terminal is passed through as it is (raw) and its
size follows yours: -it gives an interactive shell, which ends with exit or
Ctrl-D (Ctrl-C then goes to the shell). A terminal session has no time limit
unless --timeout gives one.

Ctrl-C interrupts the command in the guest (SIGINT to its process group, then
SIGKILL 2 s later if it is still running) and superjolt exits 130.

--timeout kills the command after that long: from 0 (the %s default) up
to %s.`, limitText(api.DefaultExecTimeout), limitText(model.MaxExecTimeout)),
		Example: `  superjolt vm exec vm-abc123 -- cat /etc/hostname
  superjolt vm exec web-1 --timeout 5m -- sh -c 'apt-get update'
  echo hello | superjolt vm exec vm-abc123 -i -- sh -c 'cat > /root/note'
  superjolt vm exec -it web-1 -- sh`,
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
			if timeout < 0 || timeout > model.MaxExecTimeout {
				return fmt.Errorf("%w: --timeout %s is out of range: 0 (the %s default) up to %s", model.ErrInvalid, timeout, limitText(api.DefaultExecTimeout), limitText(model.MaxExecTimeout))
			}
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			req := api.ExecRequest{Path: args[1], Args: args[2:], Timeout: api.Duration(timeout)}
			if err := req.Validate(); err != nil {
				return err
			}
			eio := api.ExecIO{Stdout: o.stdout, Stderr: o.stderr}
			if stdin {
				eio.Stdin = o.stdin
			}
			var outBuf, errBuf bytes.Buffer
			if o.json() {
				eio.Stdout, eio.Stderr = &outBuf, &errBuf
			}
			if tty {
				req.TTY, req.Term, req.Size = true, os.Getenv("TERM"), api.WindowSize{Rows: 24, Cols: 80}
				if t := openTerminal(o.stdin); t != nil {
					req.Size = t.size()
					sizes, stop := t.watchSize()
					defer stop()
					eio.Resize = sizes
					if stdin {
						if err := t.makeRaw(); err != nil {
							return fmt.Errorf("put the terminal in raw mode: %w", err)
						}
						defer t.restore()
					}
				}
			}
			res, err := o.client.ExecStream(cmd.Context(), id, req, eio)
			if err != nil {
				return err
			}
			if o.json() {
				res.Stdout, res.Stderr = outBuf.Bytes(), errBuf.Bytes()
				if err := o.printJSON(res); err != nil {
					return err
				}
			} else if res.TimedOut {
				fmt.Fprintf(o.stderr, "superjolt: %s\n", timeoutMessage(timeout))
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
	c.Flags().DurationVar(&timeout, "timeout", 0, fmt.Sprintf("kill the command after this long: 0 (the %s default) up to %s", limitText(api.DefaultExecTimeout), limitText(model.MaxExecTimeout)))
	c.Flags().BoolVarP(&stdin, "stdin", "i", false, "send superjolt's standard input to the command as it comes")
	c.Flags().BoolVarP(&tty, "tty", "t", false, "run the command on a terminal in the guest (with -i: an interactive shell)")
	return c
}

// timeoutMessage says which limit killed a command.
func timeoutMessage(given time.Duration) string {
	max := limitText(model.MaxExecTimeout)
	if given <= 0 {
		return fmt.Sprintf("killed after the %s default; use --timeout (up to %s)", limitText(api.DefaultExecTimeout), max)
	}
	return fmt.Sprintf("killed after --timeout %s; use a longer --timeout (up to %s)", limitText(given), max)
}

// limitText writes a limit the way a person would: "60 s", "10m", "1m30s".
// Up to a minute it counts seconds.
func limitText(d time.Duration) string {
	if d <= time.Minute && d%time.Second == 0 {
		return fmt.Sprintf("%d s", int(d/time.Second))
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
