package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/systemd"
)

func newInstallCommand(o *globalOptions) *cobra.Command {
	var opts systemd.InstallOptions
	var uninstall bool
	c := &cobra.Command{
		Use:   "install",
		Short: "Install superjoltd as a systemd service (or --uninstall it)",
		Long: `Install superjolt on this machine (root; PID 1 must be systemd): copy
superjoltd, superjolt and superjolt-agent from --from (by default the directory
of this superjolt binary, e.g. bin/ after 'make build') to --bin-dir, write
superjoltd.service and superjolt.slice, make the group superjolt (members may
use the API socket) and the directories /run/superjolt and /var/lib/superjolt,
then enable superjoltd and start it.

Installing over a running superjoltd is the upgrade: the binaries are replaced
atomically and the daemon restarted; the VMs keep running.

--uninstall stops every VM and superjoltd, disables it and removes the
binaries, units and configuration. It leaves the state (/var/lib/superjolt:
the VMs' disks, backups, accounts) and the group superjolt.

  make build && sudo bin/superjolt install
  sudo superjolt install --uninstall`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if os.Geteuid() != 0 {
				return fmt.Errorf("%w: superjolt install needs root: run sudo %s", model.ErrInvalid, cmd.CommandPath())
			}
			opts.Progress = func(step string) { fmt.Fprintln(o.stdout, step) }
			if uninstall {
				return systemd.Uninstall(cmd.Context(), opts)
			}
			if opts.From == "" {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("find this binary's directory (give --from): %w", err)
				}
				if exe, err = filepath.EvalSymlinks(exe); err != nil {
					return fmt.Errorf("find this binary's directory (give --from): %w", err)
				}
				opts.From = filepath.Dir(exe)
			}
			return systemd.Install(cmd.Context(), opts)
		},
	}
	f := c.Flags()
	f.StringVar(&opts.BinDir, "bin-dir", systemd.DefaultBinDir, "where the binaries go")
	f.StringVar(&opts.From, "from", "", "the directory holding superjoltd, superjolt and superjolt-agent (default: this binary's directory)")
	f.BoolVar(&opts.NoStart, "no-start", false, "enable superjoltd but do not start (or restart) it")
	f.BoolVar(&uninstall, "uninstall", false, "stop the VMs and superjoltd and remove what install put in place (the state is kept)")
	return c
}
