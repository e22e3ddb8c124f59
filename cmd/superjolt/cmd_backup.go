package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newBackupCommand(o *globalOptions) *cobra.Command {
	return group("backup", "Backups of VMs: on-demand and daily, and restore in place",
		newBackupCreateCommand(o),
		newBackupListCommand(o),
		newBackupShowCommand(o),
		newBackupDeleteCommand(o),
		newBackupRestoreCommand(o),
	)
}

func newBackupCreateCommand(o *globalOptions) *cobra.Command {
	var noWait *bool
	c := &cobra.Command{
		Use:   "create VM [--no-wait]",
		Short: "Take an on-demand backup (freeze, snapshot, thaw); kept until deleted",
		Args:  args("VM"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveVM(cmd.Context(), &args[0]); err != nil {
				return err
			}
			ctx := cmd.Context()
			o.progress("Backing up %s (freeze, snapshot, thaw)…", args[0])
			op, err := o.client.CreateBackup(ctx, args[0])
			op, done, err := o.started(ctx, op, err, *noWait)
			if !done {
				return err
			}
			b, err := o.client.Backup(ctx, op.BackupID)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(b)
			}
			return o.backupTable([]model.Backup{b})
		},
	}
	noWait = addNoWait(c)
	return c
}

func newBackupListCommand(o *globalOptions) *cobra.Command {
	var account, kind string
	var pg pageFlags
	c := &cobra.Command{
		Use:     "list [VM] [--account ID] [--kind K] [--limit N [--cursor C]]",
		Aliases: []string{"ls"},
		Short:   "List backups: a VM's, newest first, or every VM's (by VM, newest first)",
		Long: `List backups: a VM's, newest first, or with no VM every stored VM's
(by VM id, then newest first). The filters are applied by superjoltd.

SIZE is what deleting the backup would free: 0 when just taken (it shares
everything with its VM), growing as the guest rewrites what it holds. A
VM's list measures it afresh; the others show it as of the VM's last daily
backup.

With --limit, one page of at most N backups is listed; when more follow,
the cursor of the next page is printed (on stderr after the table; as
next_cursor with -o json, where the page is {"backups": [...], "next_cursor": "..."}).
Pass it with --cursor, the same filters and a limit, for the next page.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 1 {
				return fmt.Errorf("%w: %s takes at most one VM, got %d arguments", model.ErrInvalid, cmd.CommandPath(), len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			f := api.BackupFilter{Kind: model.BackupKind(kind)}
			if len(args) == 1 {
				f.VMID = args[0]
				if err := o.resolveVM(ctx, &f.VMID); err != nil {
					return err
				}
			}
			if account != "" {
				f.AccountID = account
				if err := o.resolveAccount(ctx, &f.AccountID); err != nil {
					return err
				}
			}
			if err := f.Validate(); err != nil {
				return err
			}
			p, paged, err := pg.page(cmd)
			if err != nil {
				return err
			}
			var bs []model.Backup
			var next string
			switch {
			case paged:
				bs, next, err = o.client.BackupPage(ctx, f, p)
			case f.VMID != "" && f.AccountID == "" && f.Kind == "":
				bs, err = o.client.Backups(ctx, f.VMID)
			default:
				bs, err = o.client.ListBackups(ctx, f)
			}
			if err != nil {
				return err
			}
			if o.json() {
				if paged {
					return o.printJSON(struct {
						Backups    []model.Backup `json:"backups"`
						NextCursor string         `json:"next_cursor"`
					}{bs, next})
				}
				return o.printJSON(bs)
			}
			if err := o.backupTable(bs); err != nil {
				return err
			}
			o.nextPage(next)
			return nil
		},
	}
	c.Flags().StringVar(&account, "account", "", "only this account's VMs' backups (its id or its name)")
	c.Flags().StringVar(&kind, "kind", "", "only backups of this kind: scheduled or on_demand")
	pg.add(c, "backups")
	return c
}

func newBackupShowCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show BK",
		Short: "Show one backup",
		Args:  args("BK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(model.KindBackup, args[0]); err != nil {
				return err
			}
			b, err := o.client.Backup(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(b)
			}
			return o.backupTable([]model.Backup{b})
		},
	}
}

func (o *globalOptions) backupTable(bs []model.Backup) error {
	rows := make([][]string, 0, len(bs))
	for _, b := range bs {
		rows = append(rows, []string{b.ID, b.VMID, string(b.Kind), o.fmtTime(b.TakenAt), fmtBytes(b.SizeBytes), string(b.Consistency)})
	}
	return o.table([]string{"ID", "VM", "KIND", "TAKEN AT", "SIZE", "CONSISTENCY"}, rows)
}

func newBackupDeleteCommand(o *globalOptions) *cobra.Command {
	var yes bool
	var noWait *bool
	c := &cobra.Command{
		Use:   "delete BK [--yes] [--no-wait]",
		Short: "Delete an on-demand backup (scheduled ones roll by retention and cannot be deleted)",
		Args:  args("BK"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := model.ValidateID(model.KindBackup, id); err != nil {
				return err
			}
			if err := o.confirm(cmd.Context(), yes, "delete backup "+id,
				fmt.Sprintf("Backup %s will be deleted for good: its VM can no longer be restored to it.", id)); err != nil {
				return err
			}
			op, err := o.client.DeleteBackup(cmd.Context(), id)
			if _, done, err := o.started(cmd.Context(), op, err, *noWait); !done {
				return err
			}
			if o.json() {
				return o.printJSON(map[string]any{"deleted": id})
			}
			fmt.Fprintf(o.stdout, "backup %s deleted\n", id)
			return nil
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	noWait = addNoWait(c)
	return c
}

func newBackupRestoreCommand(o *globalOptions) *cobra.Command {
	var yes bool
	var from string
	var noWait *bool
	c := &cobra.Command{
		Use:   "restore VM (BK | --from latest|yesterday|YYYY-MM-DD) [--yes]",
		Short: "Rewind a VM's disk to a backup in place; a running VM boots again, a stopped one stays stopped",
		Long: `Rewind a VM's disk to one of its backups, in place: the VM keeps its id, IP,
ports and domains; only the disk goes back. The command returns once the guest
booted again and its agent reported the new boot id. Anything written to the
VM since the backup was taken is lost.`,
		Example: `  superjolt backup restore vm-abc123 bk-0a1b2c3d4e
  superjolt backup restore vm-abc123 --from yesterday --yes`,
		Args: func(cmd *cobra.Command, args []string) error {
			switch {
			case len(args) == 2 && from == "", len(args) == 1 && from != "":
				return nil
			case len(args) == 2:
				return fmt.Errorf("%w: give a backup id or --from, not both", model.ErrInvalid)
			}
			return fmt.Errorf("%w: backup restore takes a VM id and a backup id, or a VM id and --from latest|yesterday|YYYY-MM-DD", model.ErrInvalid)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			vmID := args[0]
			if err := o.resolveVM(cmd.Context(), &vmID); err != nil {
				return err
			}
			sel := from
			if sel == "" {
				sel = args[1]
				if err := model.ValidateID(model.KindBackup, sel); err != nil {
					return err
				}
			} else if err := model.ValidateFrom(sel); err != nil {
				return err
			}
			// Resolved here, in the zone the operator reads `backup list`
			// in, from the same list, so that the two agree.
			bs, err := o.client.Backups(ctx, vmID)
			if err != nil {
				return err
			}
			st, err := o.client.Status(ctx)
			if err != nil {
				return err
			}
			bk, err := model.PickBackup(bs, sel, st.Now, o.zone())
			if err != nil && model.KindOf(sel) == model.KindBackup {
				return fmt.Errorf("%w: %s is not a backup of %s; `superjolt backup list %s` shows its backups", model.ErrNotFound, sel, vmID, vmID)
			}
			if err != nil {
				return fmt.Errorf("%s: %w; `superjolt backup list %s` shows its backups", vmID, err, vmID)
			}
			if err := o.confirm(ctx, yes, "restore "+vmID+" from "+bk.ID,
				fmt.Sprintf("Anything written to %s since %s (backup %s) will be lost.", vmID, o.fmtTime(bk.TakenAt), bk.ID)); err != nil {
				return err
			}
			o.progress("Restoring %s from %s; a running VM boots again and this returns once its agent reports the new boot (Ctrl-C stops waiting, not the restore)…", vmID, bk.ID)
			op, err := o.client.RestoreVM(ctx, vmID, bk.ID)
			if _, done, err := o.started(ctx, op, err, *noWait); !done {
				return err
			}
			vm, err := o.client.VM(ctx, vmID)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(vm)
			}
			if vm.State != model.StateRunning {
				fmt.Fprintf(o.stdout, "%s restored from %s (taken %s): its disk was rolled back; it is still %s (start it with `superjolt vm start %s`)\n", vmID, bk.ID, o.fmtTime(bk.TakenAt), vm.State, vmID)
				return nil
			}
			fmt.Fprintf(o.stdout, "%s restored from %s (taken %s): its disk was rolled back and it booted again with boot id %s\n", vmID, bk.ID, o.fmtTime(bk.TakenAt), vm.BootID)
			return nil
		},
	}
	c.Flags().StringVar(&from, "from", "", "latest, yesterday or a date YYYY-MM-DD: the newest backup taken that day in your time zone (--utc: UTC)")
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	noWait = addNoWait(c)
	return c
}
