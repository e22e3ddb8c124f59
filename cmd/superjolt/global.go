package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/mattn/go-isatty"
	"github.com/mattn/go-runewidth"
	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/version"
)

// globalOptions are the flags every command takes.
type globalOptions struct {
	socket string
	// server, token and ca reach a remote superjoltd with an account
	// token (server "": the socket).
	server, token, ca string
	output            string
	// utc shows and reads times in UTC instead of the local zone; loc is
	// then UTC (nil: the local zone, see zone).
	utc bool
	loc *time.Location

	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	// interactive reports whether stdin is a terminal (confirmations).
	interactive bool
	// chatty reports whether stderr is a terminal (progress notes).
	chatty bool

	client *api.Client
}

// rootCommand is the CLI's command tree and what main needs to know after
// running it.
type rootCommand struct {
	cmd *cobra.Command
	// ran is set once a command's own code started (after cobra checked
	// flags and arguments).
	ran  bool
	opts *globalOptions
}

func newRootCommand() *rootCommand {
	opts := &globalOptions{
		stdin:       os.Stdin,
		stdout:      os.Stdout,
		stderr:      os.Stderr,
		interactive: isatty.IsTerminal(os.Stdin.Fd()),
		chatty:      isatty.IsTerminal(os.Stderr.Fd()),
	}
	r := &rootCommand{opts: opts}
	socket := os.Getenv("SUPERJOLT_SOCKET")
	if socket == "" {
		socket = api.DefaultSocket
	}
	r.cmd = &cobra.Command{
		Use:   "superjolt",
		Short: "Operate a superjolt appliance: accounts, VMs, backups, restore",
		Long: `superjolt drives superjoltd, the daemon of a single-box microVM appliance:
accounts with prepaid balances, VMs from tiers and images, daily and on-demand
backups, in-place restore, and a 24-hour graveyard for destroyed VMs.

Every command takes -o json for the API's own JSON (stable snake_case field
names, times in UTC) and prints a readable table otherwise.

Times are shown in your time zone (TZ, else the system's), each with its
zone's name, and read in it: ` + "`backup restore --from 2027-01-12`" + ` restores the
newest backup that ` + "`backup list`" + ` shows as taken on 2027-01-12, and
"yesterday" is the day before today there. --utc shows and reads UTC.

A VM or an account is named by its id or by its name: superjolt vm show
web-1, superjolt vm create --account alice. Money is in credits (2.5 means
2.5 credits); JSON carries integer micro-credits.

` + exitCodesHelpTxt,
		Version:       version.String(),
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			r.ran = true
			if opts.output != "text" && opts.output != "json" {
				return fmt.Errorf("%w: -o %q: use -o text or -o json", model.ErrInvalid, opts.output)
			}
			if opts.utc {
				opts.loc = time.UTC
			}
			if opts.server == "" {
				opts.client = api.NewClient(opts.socket)
				return nil
			}
			c, err := remoteClient(opts)
			if err != nil {
				return err
			}
			opts.client = c
			return nil
		},
		PersistentPostRun: func(*cobra.Command, []string) {
			if opts.client != nil {
				opts.client.Close()
			}
		},
	}
	r.cmd.SetOut(opts.stdout)
	r.cmd.SetErr(opts.stderr)
	r.cmd.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		// "-5" parses as a flag; say what it most likely was.
		var sh string
		if _, scanErr := fmt.Sscanf(err.Error(), "unknown shorthand flag: '%1s'", &sh); scanErr == nil && sh >= "0" && sh <= "9" {
			return fmt.Errorf("%w: %v: negative numbers are not accepted here (amounts must be positive)", model.ErrInvalid, err)
		}
		return fmt.Errorf("%w: %v", model.ErrInvalid, err)
	})
	f := r.cmd.PersistentFlags()
	f.StringVar(&opts.socket, "socket", socket, "superjoltd's API socket (env SUPERJOLT_SOCKET)")
	f.StringVar(&opts.server, "server", os.Getenv("SUPERJOLT_SERVER"), "a remote superjoltd, https://HOST:PORT, reached with an account token instead of the socket (env SUPERJOLT_SERVER)")
	f.StringVar(&opts.token, "token", "", "the account token for --server (env SUPERJOLT_TOKEN)")
	f.StringVar(&opts.ca, "ca", os.Getenv("SUPERJOLT_CA"), "the only CA trusted for --server: the operator's `superjolt ca` saved to a file (env SUPERJOLT_CA; default: the system's CAs)")
	f.StringVarP(&opts.output, "output", "o", "text", "output format: text or json")
	f.BoolVar(&opts.utc, "utc", false, "show and read times in UTC instead of your time zone")
	r.cmd.AddGroup(&cobra.Group{ID: "objects", Title: "Objects:"}, &cobra.Group{ID: "more", Title: "More:"})
	for _, c := range []*cobra.Command{
		newAccountCommand(opts), newTierCommand(opts), newImageCommand(opts),
		newVMCommand(opts), newBackupCommand(opts),
	} {
		c.GroupID = "objects"
		r.cmd.AddCommand(c)
	}
	for _, c := range []*cobra.Command{newTUICommand(opts), newMCPCommand(opts), newStatusCommand(opts), newCACommand(opts), newEventsCommand(opts), newOpCommand(opts), newPoolCommand(opts), newInstallCommand(opts), newDebugCommand(opts)} {
		c.GroupID = "more"
		r.cmd.AddCommand(c)
	}
	addCompletions(r.cmd, opts)
	return r
}

// group returns a command that only holds subcommands; run with an unknown
// subcommand it fails as a usage error instead of printing help.
func group(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				msg := fmt.Sprintf("unknown command %q for %q", args[0], cmd.CommandPath())
				cmd.SuggestionsMinimumDistance = 2 // cobra's own default, which SuggestionsFor does not apply
				if sugg := cmd.SuggestionsFor(args[0]); len(sugg) > 0 {
					msg += "; did you mean " + strings.Join(sugg, " or ") + "?"
				}
				return fmt.Errorf("%w: %s", model.ErrInvalid, msg)
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return cmd.Help()
		},
	}
	c.AddCommand(subs...)
	return c
}

// args returns a cobra.PositionalArgs requiring exactly the named arguments.
func args(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return fmt.Errorf("%w: %s takes %d argument(s) (%s), got %d", model.ErrInvalid,
				cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// progress tells a person at a terminal what a slow command is waiting
// for; scripts and -o json see nothing of it.
func (o *globalOptions) progress(format string, args ...any) {
	if o.chatty && !o.json() {
		fmt.Fprintf(o.stderr, format+"\n", args...)
	}
}

// json reports whether -o json was asked for.
func (o *globalOptions) json() bool { return o.output == "json" }

// printJSON writes v as indented JSON.
func (o *globalOptions) printJSON(v any) error {
	enc := json.NewEncoder(o.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printJSONLine writes v as one line of JSON (streams).
func (o *globalOptions) printJSONLine(v any) error {
	return json.NewEncoder(o.stdout).Encode(v)
}

// table writes rows under headers, aligned, without trailing blanks.
// Columns are as wide as their widest cell as a terminal shows it: East
// Asian wide characters and emoji take two cells (tabwriter counts them
// as one and misaligns every column after them).
func (o *globalOptions) table(headers []string, rows [][]string) error {
	widths := make([]int, len(headers))
	all := append([][]string{headers}, rows...)
	for _, r := range all {
		for i, cell := range r {
			if i < len(widths) {
				widths[i] = max(widths[i], runewidth.StringWidth(cell))
			}
		}
	}
	var b strings.Builder
	for _, r := range all {
		b.Reset()
		for i, cell := range r {
			b.WriteString(cell)
			if i < len(r)-1 {
				b.WriteString(strings.Repeat(" ", widths[i]-runewidth.StringWidth(cell)+2))
			}
		}
		if _, err := io.WriteString(o.stdout, strings.TrimRight(b.String(), " ")+"\n"); err != nil {
			return err
		}
	}
	return nil
}

// fields writes label: value lines, aligned.
func (o *globalOptions) fields(kv ...string) error {
	tw := tabwriter.NewWriter(o.stdout, 0, 4, 2, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	return tw.Flush()
}

// errNotConfirmed is the answer to a confirmation that was not "yes".
var errNotConfirmed = errors.New("not confirmed; nothing was changed")

// confirm asks the operator to confirm a destructive action. With --yes it
// returns at once; off a terminal without --yes it refuses as invalid usage.
func (o *globalOptions) confirm(ctx context.Context, yes bool, what, consequence string) error {
	if yes {
		return nil
	}
	if !o.interactive {
		return fmt.Errorf("%w: refusing to %s without confirmation: stdin is not a terminal; pass --yes. %s", model.ErrInvalid, what, consequence)
	}
	fmt.Fprintf(o.stderr, "%s\nReally %s? Type yes to continue: ", consequence, what)
	line := make(chan string, 1)
	go func() {
		s, _ := bufio.NewReader(o.stdin).ReadString('\n')
		line <- strings.TrimSpace(s)
	}()
	select {
	case <-ctx.Done():
		fmt.Fprintln(o.stderr)
		return ctx.Err()
	case s := <-line:
		if s != "yes" {
			return errNotConfirmed
		}
	}
	return nil
}

// Formatting for tables.

func (o *globalOptions) fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.In(o.zone()).Format("2006-01-02 15:04:05 MST")
}

// zone is where times are shown and read: the local zone unless --utc.
func (o *globalOptions) zone() *time.Location {
	if o.loc == nil {
		return time.Local
	}
	return o.loc
}

// rfc3339 matches the UTC times superjoltd writes into its messages.
var rfc3339 = regexp.MustCompile(`\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

// localize rewrites the times in a message of superjoltd (RFC 3339, UTC)
// the way the CLI shows times, so that a message and a table agree.
func (o *globalOptions) localize(msg string) string {
	return rfc3339.ReplaceAllStringFunc(msg, func(s string) string {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return s
		}
		return o.fmtTime(t)
	})
}
func fmtBytes(n int64) string {
	if n < 0 {
		return "-"
	}
	return humanize.IBytes(uint64(n))
}

func fmtMiB(mib int) string { return humanize.IBytes(uint64(mib) << 20) }

func fmtGiB(gib int) string { return humanize.IBytes(uint64(gib) << 30) }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// remoteClient returns a client of the remote superjoltd --server names.
func remoteClient(opts *globalOptions) (*api.Client, error) {
	if opts.token == "" {
		// Not the flag's default: --help would print it.
		opts.token = os.Getenv("SUPERJOLT_TOKEN")
	}
	if opts.token == "" {
		return nil, fmt.Errorf("%w: --server needs an account token: give --token or SUPERJOLT_TOKEN (the operator makes one with `superjolt account token create`)", model.ErrInvalid)
	}
	var caPEM []byte
	if opts.ca != "" {
		b, err := os.ReadFile(opts.ca)
		if err != nil {
			return nil, fmt.Errorf("%w: --ca: %v: save the operator's `superjolt ca` to a file and give its path", model.ErrInvalid, err)
		}
		caPEM = b
	}
	return api.NewRemoteClient(api.RemoteOptions{Server: opts.server, Token: opts.token, CAPEM: caPEM})
}
