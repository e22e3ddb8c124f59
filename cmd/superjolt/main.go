package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRootCommand()
	root.cmd.SetArgs(negativeAmounts(os.Args[1:]))
	err := root.cmd.ExecuteContext(ctx)
	stop()
	code := exitCode(ctx, err, root.ran)
	if err != nil {
		var st exitStatus
		switch {
		case errors.As(err, &st):
		case root.opts.json():
			// Scripts that asked for JSON get the error as JSON too, in the
			// API's shape, on stderr; stdout stays empty.
			root.opts.printError(err)
		default:
			fmt.Fprintf(os.Stderr, "superjolt: %s\n", root.opts.localize(message(err)))
			if code == exitUsage && !root.ran {
				c, _, ferr := root.cmd.Find(os.Args[1:])
				if ferr != nil {
					c = root.cmd
				}
				fmt.Fprintf(os.Stderr, "Run '%s --help' for usage.\n", commandPath(c))
			}
		}
	}
	os.Exit(code)
}
