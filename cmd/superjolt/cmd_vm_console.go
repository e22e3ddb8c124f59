package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"sync"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
)

// detachKey is Ctrl-] (GS, 0x1d), the detach key of virsh console and telnet.
const (
	detachKey     = 0x1d
	detachKeyName = "Ctrl-]"
)

func newVMConsoleCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "console ID",
		Short: "Attach your terminal to a VM's serial console; detach with " + detachKeyName,
		Long: `Attach your terminal to the serial console of a running VM (its first
UART, ttyS0), like virsh console. Your terminal is passed through as it is
(raw): every key goes to the guest, Ctrl-C included. ` + detachKeyName + ` detaches and
puts your terminal back as it was; the VM goes on running.

The built-in guest keeps a root shell on its serial console (started again
when it exits), so this is a way in when the agent or the network is not;
the guest kernel's messages show there too. What the console prints is also
kept in the VM's console log, attached or not.

One client at a time: while one is attached, another is refused and told
which one it is.`,
		Example: `  superjolt vm console web-1`,
		Args:    args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			in := &detachReader{r: o.stdin, ready: make(chan struct{})}
			var ready sync.Once
			t := openTerminal(o.stdin)
			restore := func() {}
			defer func() { restore() }()
			err := o.client.Console(cmd.Context(), id, api.ConsoleIO{
				Client: consoleClientName(),
				In:     in,
				Out:    o.stdout,
				Attached: func() {
					fmt.Fprintf(o.stderr, "Connected to %s serial console; detach with %s\n", args[0], detachKeyName)
					if t != nil {
						if err := t.makeRaw(); err == nil {
							var once sync.Once
							restore = func() { once.Do(t.restore) }
						}
					}
					ready.Do(func() { close(in.ready) })
				},
			})
			restore()
			if err != nil {
				return err
			}
			if in.detached() {
				fmt.Fprintf(o.stderr, "\nDetached from %s serial console.\n", args[0])
			} else {
				fmt.Fprintf(o.stderr, "\nThe serial console of %s closed: the VM stopped or is restarting.\n", args[0])
			}
			return nil
		},
	}
}

// detachReader passes input through until the detach key, then ends (EOF).
// It reads nothing before ready is closed, so that no key is read before
// the terminal is raw.
type detachReader struct {
	r     io.Reader
	ready chan struct{}
	mu    sync.Mutex
	gone  bool
}

func (d *detachReader) Read(p []byte) (int, error) {
	<-d.ready
	if d.detached() {
		return 0, io.EOF
	}
	n, err := d.r.Read(p)
	if i := bytes.IndexByte(p[:n], detachKey); i >= 0 {
		d.mu.Lock()
		d.gone = true
		d.mu.Unlock()
		if i == 0 {
			return 0, io.EOF
		}
		return i, nil
	}
	if err == io.EOF {
		d.mu.Lock()
		d.gone = true
		d.mu.Unlock()
	}
	return n, err
}

func (d *detachReader) detached() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gone
}

// consoleClientName describes this client to a second one that is refused:
// its user, pid and terminal.
func consoleClientName() string {
	name := strconv.Itoa(os.Getuid())
	if u, err := user.LookupId(name); err == nil {
		name = u.Username
	}
	s := name + ", pid " + strconv.Itoa(os.Getpid())
	if tty, err := os.Readlink("/proc/self/fd/0"); err == nil && len(tty) > 5 && tty[:5] == "/dev/" {
		s += " on " + tty
	}
	return s
}

func newVMLogCommand(o *globalOptions) *cobra.Command {
	var lines int
	c := &cobra.Command{
		Use:   "log ID",
		Short: "Print the last lines a VM wrote on its serial console (running or not)",
		Long: `Print the tail of a VM's serial console log: what the guest wrote on its
first UART (boot messages, the shell of vm console), kept while the VM
exists, running or not. Escape sequences are left out.`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			got, err := o.client.ConsoleLog(cmd.Context(), id, lines)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(api.ConsoleLog{Lines: got})
			}
			for _, l := range got {
				fmt.Fprintln(o.stdout, l)
			}
			return nil
		},
	}
	c.Flags().IntVarP(&lines, "lines", "n", 50, "how many lines, from the end")
	return c
}

func newVMLogsCommand(o *globalOptions) *cobra.Command {
	var (
		lines  int
		follow bool
	)
	c := &cobra.Command{
		Use:   "logs ID [-n N] [-f]",
		Short: "Print a VM's log: QEMU's output and its guest's console (its systemd journal)",
		Long: `Print a VM's log: what its QEMU said and what its guest wrote on its serial
console. Under systemd it is the journal of the VM's unit
(journalctl -u superjolt-vm-ID.service), with timestamps; otherwise QEMU's
log and the console log from the VM's run directory. With -f, go on
printing what comes until interrupted.`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			return o.client.VMLogs(cmd.Context(), id, lines, follow, o.stdout)
		},
	}
	c.Flags().IntVarP(&lines, "lines", "n", 100, "how many lines, from the end")
	c.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing what comes")
	return c
}
