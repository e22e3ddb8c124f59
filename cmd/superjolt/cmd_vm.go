package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// graveyardAge mirrors the appliance's rule, only to word the confirmation
// of `vm destroy`; the daemon decides.
const graveyardAge = time.Hour

func newVMCommand(o *globalOptions) *cobra.Command {
	return group("vm", "MicroVMs: create, list, stop, start, destroy, resume, exec, console",
		newVMCreateCommand(o),
		newVMListCommand(o),
		newVMShowCommand(o),
		newVMVerbCommand(o, "stop", "Stopping", "Shut a VM down; it keeps billing, its IP, ports and domains", (*api.Client).StopVM),
		newVMVerbCommand(o, "start", "Starting", "Boot a stopped VM", (*api.Client).StartVM),
		newVMVerbCommand(o, "resume", "Resuming", "Bring a VM back from the graveyard or the archive (the balance must cover an hour of its account's VMs)", (*api.Client).ResumeVM),
		newVMDestroyCommand(o),
		newVMExecCommand(o),
		newVMConsoleCommand(o), newVMLogCommand(o), newVMLogsCommand(o),
		newVMPortsCommand(o),
		newVMDomainsCommand(o),
	)
}

func newVMCreateCommand(o *globalOptions) *cobra.Command {
	var req api.CreateVMRequest
	var keyFiles []string
	var noWait *bool
	c := &cobra.Command{
		Use:   "create --account ID --tier NAME [--image NAME] [--name NAME] [--ssh-key FILE]... [--no-wait]",
		Short: "Create a VM and boot it; returns once its guest agent answered",
		Long: `Create a VM and boot it; returns once its guest agent answered.

--ssh-key FILE (repeatable; - reads stdin) takes OpenSSH public keys, one a
line, as in a .pub file. The VM gets its account's default keys (see
superjolt account set --ssh-key) and then these, in root's
/root/.ssh/authorized_keys, written into its disk before the first boot.
Only a create writes keys: a restore or a resume keeps what the disk holds.`,
		Example: `  superjolt vm create --account alice --tier small --name web-1
  superjolt vm create --account alice --tier small --ssh-key ~/.ssh/id_ed25519.pub`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if req.AccountID == "" || req.Tier == "" {
				return fmt.Errorf("%w: vm create needs --account ID and --tier NAME (`superjolt tier list` shows the tiers)", model.ErrInvalid)
			}
			if len(keyFiles) > 0 {
				keys, err := o.readSSHKeys(keyFiles)
				if err != nil {
					return err
				}
				req.SSHKeys = keys
			}
			if err := o.resolveAccount(cmd.Context(), &req.AccountID); err != nil {
				return err
			}
			if err := req.Validate(); err != nil {
				return err
			}
			ctx := cmd.Context()
			o.progress("Creating the VM and booting it; this returns once its guest agent answers (Ctrl-C stops waiting, not the creation)…")
			op, err := o.client.CreateVM(ctx, req)
			op, done, err := o.started(ctx, op, err, *noWait)
			if !done {
				return err
			}
			vm, err := o.client.VM(ctx, op.VMID)
			if err != nil {
				return err
			}
			return o.printVM(vm)
		},
	}
	noWait = addNoWait(c)
	c.Flags().StringVar(&req.AccountID, "account", "", "the account that pays for it: its id or its name")
	c.Flags().StringVar(&req.Tier, "tier", "", "its size: a tier name, as superjolt tier list shows them")
	c.Flags().StringVar(&req.Image, "image", "", "the image to start from (default: the built-in one)")
	c.Flags().StringVar(&req.Name, "name", "", "its name and hostname (default: chosen by the appliance)")
	c.Flags().BoolVar(&req.Overcommit, "overcommit", false, "create it even when its memory does not fit in what the host has left")
	c.Flags().StringArrayVar(&keyFiles, "ssh-key", nil, "a file of OpenSSH public keys for root's authorized_keys (a .pub file; - is stdin; repeatable)")
	return c
}

func newVMListCommand(o *globalOptions) *cobra.Command {
	var account, state, name, image string
	var pg pageFlags
	c := &cobra.Command{
		Use:     "list [--account ID] [--state S] [--name PREFIX] [--image NAME] [--limit N [--cursor C]]",
		Aliases: []string{"ls"},
		Short:   "List VMs, oldest first",
		Long: `List VMs, oldest first. The filters are applied by superjoltd.

With --limit, one page of at most N VMs is listed; when more follow, the
cursor of the next page is printed (on stderr after the table; as
next_cursor with -o json, where the page is {"vms": [...], "next_cursor": "..."}).
Pass it with --cursor, the same filters and a limit, for the next page:
pages never repeat a VM nor skip one, even while VMs come and go.`,
		Args: args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			if account != "" {
				if err := o.resolveAccount(cmd.Context(), &account); err != nil {
					return err
				}
			}
			f := api.VMFilter{AccountID: account, State: model.VMState(state), NamePrefix: name, Image: image}
			if err := f.Validate(); err != nil {
				return err
			}
			p, paged, err := pg.page(cmd)
			if err != nil {
				return err
			}
			if !paged {
				vms, err := o.client.VMs(cmd.Context(), f)
				if err != nil {
					return err
				}
				if o.json() {
					return o.printJSON(vms)
				}
				return o.vmTable(vms)
			}
			vms, next, err := o.client.VMPage(cmd.Context(), f, p)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(struct {
					VMs        []model.VM `json:"vms"`
					NextCursor string     `json:"next_cursor"`
				}{vms, next})
			}
			if err := o.vmTable(vms); err != nil {
				return err
			}
			o.nextPage(next)
			return nil
		},
	}
	c.Flags().StringVar(&account, "account", "", "only this account's VMs (its id or its name)")
	c.Flags().StringVar(&state, "state", "", "only VMs in this state: creating, running, stopped, graveyard, archived")
	c.Flags().StringVar(&name, "name", "", "only VMs whose name starts with this")
	c.Flags().StringVar(&image, "image", "", "only VMs made from this image")
	pg.add(c, "VMs")
	return c
}

func (o *globalOptions) vmTable(vms []model.VM) error {
	rows := make([][]string, 0, len(vms))
	for _, vm := range vms {
		ip := "-"
		if vm.IP.IsValid() {
			ip = vm.IP.String()
		}
		note := ""
		if !vm.ReclaimAt.IsZero() {
			note = "reclaimed at " + o.fmtTime(vm.ReclaimAt)
		} else if vm.State == model.StateStopped {
			note = o.stopReason(vm)
		}
		rows = append(rows, []string{vm.ID, vm.Name, vm.AccountID, vm.Tier, string(vm.State), ip, o.fmtTime(vm.CreatedAt), note})
	}
	return o.table([]string{"ID", "NAME", "ACCOUNT", "TIER", "STATE", "IP", "CREATED", "NOTE"}, rows)
}

// stopReason says why a stopped VM is stopped, and when (for tables).
func (o *globalOptions) stopReason(vm model.VM) string {
	return vm.StopReason.Describe(o.fmtTime(vm.StoppedAt))
}

func newVMShowCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a VM",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveVM(cmd.Context(), &args[0]); err != nil {
				return err
			}
			vm, err := o.client.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			extra := append(o.overcommitted(cmd.Context(), vm), o.usage(cmd.Context(), vm)...)
			return o.printVM(vm, extra...)
		},
	}
}

// usage returns the "Usage" line of vm show for a running VM: the memory
// and CPU time its unit's cgroup (or its QEMU process) has used; nothing
// when it does not run or the daemon cannot say.
func (o *globalOptions) usage(ctx context.Context, vm model.VM) []string {
	if vm.State != model.StateRunning || o.json() {
		return nil
	}
	us, err := o.client.VMUsage(ctx)
	if err != nil {
		return nil
	}
	for _, u := range us {
		if u.VMID == vm.ID {
			return []string{"Usage", fmt.Sprintf("%s memory, %s CPU time (%.0f%% now), from its %s",
				fmtBytes(u.MemoryBytes), u.CPUTime.Round(10*time.Millisecond), u.CPUPercent, map[string]string{model.UsageFromCgroup: "cgroup", model.UsageFromProc: "QEMU process"}[u.Source])}
		}
	}
	return nil
}

// overcommitted returns the "Overcommitted" line of vm show when the VM's
// tier asks for more vCPUs than the host has or a disk larger than the
// pool; nothing when it does not, or the daemon cannot say.
func (o *globalOptions) overcommitted(ctx context.Context, vm model.VM) []string {
	if o.json() {
		return nil
	}
	st, err := o.client.Status(ctx)
	if err != nil {
		return nil
	}
	tiers, err := o.client.Tiers(ctx)
	if err != nil {
		return nil
	}
	var notes []string
	for _, t := range tiers {
		if t.Name != vm.Tier {
			continue
		}
		if c := st.Capacity; c.CPUs > 0 && t.VCPUs > c.CPUs {
			notes = append(notes, fmt.Sprintf("%s on a host of %s", model.Count(t.VCPUs, "vCPU"), model.Count(c.CPUs, "CPU")))
		}
		if c := st.Capacity; c.PoolBytes > 0 && int64(t.DiskGiB)<<30 > c.PoolBytes {
			notes = append(notes, fmt.Sprintf("a %s disk on a %s pool", fmtGiB(t.DiskGiB), fmtBytes(c.PoolBytes)))
		}
	}
	if len(notes) == 0 {
		return nil
	}
	return []string{"Overcommitted", strings.Join(notes, "; ")}
}

// printVM prints a VM, with extra label/value lines after its own.
func (o *globalOptions) printVM(vm model.VM, extra ...string) error {
	if o.json() {
		return o.printJSON(vm)
	}
	ip := "-"
	if vm.IP.IsValid() {
		ip = vm.IP.String()
	} else if vm.LastIP.IsValid() {
		ip = "- (last " + vm.LastIP.String() + ")"
	}
	ports := make([]string, len(vm.Ports))
	for i, p := range vm.Ports {
		ports[i] = p.String()
	}
	kv := []string{
		"ID", vm.ID,
		"Name", vm.Name,
		"Account", vm.AccountID,
		"Tier", vm.Tier,
		"Image", vm.Image,
		"State", string(vm.State),
		"IP", ip,
		"Ports", dash(strings.Join(ports, ", ")),
		"Domains", dash(strings.Join(vm.DomainsShown(), ", ")),
		"Boot ID", dash(vm.BootID),
		"Created", o.fmtTime(vm.CreatedAt),
	}
	if ssh := sshLine(vm); ssh != "" {
		kv = append(kv, "SSH", ssh)
	}
	// Only the times that describe the VM now: a running VM has no
	// "Stopped", a resumed one no "Destroyed".
	if vm.State == model.StateStopped && !vm.StoppedAt.IsZero() {
		kv = append(kv, "Stopped", o.fmtTime(vm.StoppedAt)+" ("+vm.StopReason.Describe("")+")")
	}
	for _, t := range []struct {
		label string
		at    time.Time
		state model.VMState
	}{{"Destroyed", vm.DestroyedAt, model.StateGraveyard}, {"Archived", vm.ArchivedAt, model.StateArchived}} {
		if vm.State == t.state && !t.at.IsZero() {
			kv = append(kv, t.label, o.fmtTime(t.at))
		}
	}
	for _, t := range []struct {
		label string
		at    time.Time
	}{{"Reclaimed at", vm.ReclaimAt}, {"Next backup", vm.NextBackupAt}} {
		if !t.at.IsZero() {
			kv = append(kv, t.label, o.fmtTime(t.at))
		}
	}
	return o.fields(append(kv, extra...)...)
}

// sshLine says how to log in to a VM that was given SSH keys and has an
// address: from this host to its IP, and through a port forward to its
// port 22 when it has one. "" when there is none.
func sshLine(vm model.VM) string {
	if len(vm.SSHKeys) == 0 || !vm.IP.IsValid() {
		return ""
	}
	s := "ssh root@" + vm.IP.String()
	for _, p := range vm.Ports {
		if p.Proto == "tcp" && p.Guest() == 22 {
			s += fmt.Sprintf(" (from elsewhere: ssh -p %d root@THIS-HOST)", p.Number)
			break
		}
	}
	return s
}

// newVMVerbCommand makes the command for a verb on one VM, an operation
// the command follows to its end. call is a method expression, such as
// (*api.Client).StopVM: o.client is made only once the flags are parsed.
func newVMVerbCommand(o *globalOptions, verb, doing, short string, call func(*api.Client, context.Context, string) (model.Operation, error)) *cobra.Command {
	var noWait *bool
	c := &cobra.Command{
		Use:   verb + " ID [--no-wait]",
		Short: short,
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveVM(cmd.Context(), &args[0]); err != nil {
				return err
			}
			ctx := cmd.Context()
			o.progress("%s %s…", doing, args[0])
			op, err := call(o.client, ctx, args[0])
			if _, done, err := o.started(ctx, op, err, *noWait); !done {
				return err
			}
			vm, err := o.client.VM(ctx, args[0])
			if err != nil {
				return err
			}
			return o.printVM(vm)
		},
	}
	noWait = addNoWait(c)
	return c
}

func newVMDestroyCommand(o *globalOptions) *cobra.Command {
	var yes bool
	var noWait *bool
	c := &cobra.Command{
		Use:   "destroy ID [--yes] [--no-wait]",
		Short: "Destroy a VM: graveyard for 24 h, or reclaimed at once if younger than an hour",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			id := args[0]
			if err := o.resolveVM(cmd.Context(), &id); err != nil {
				return err
			}
			ctx := cmd.Context()
			vm, err := o.client.VM(ctx, id)
			if err != nil {
				return err
			}
			st, err := o.client.Status(ctx)
			if err != nil {
				return err
			}
			consequence := fmt.Sprintf("%s (%s) goes to the graveyard: its process stops, its IP and memory are freed, and its disk and backups are kept until %s (bring it back with `superjolt vm resume %s`).",
				vm.ID, vm.Name, o.fmtTime(st.Now.Add(24*time.Hour)), vm.ID)
			if st.Now.Sub(vm.CreatedAt) < graveyardAge {
				consequence = fmt.Sprintf("%s (%s) is younger than an hour, so it is reclaimed at once: its disk and every backup are deleted for good.", vm.ID, vm.Name)
			}
			if err := o.confirm(ctx, yes, "destroy "+vm.ID, consequence); err != nil {
				return err
			}
			op, err := o.client.DestroyVM(ctx, id)
			if _, done, err := o.started(ctx, op, err, *noWait); !done {
				return err
			}
			res := api.DestroyResult{VM: vm}
			after, err := o.client.VM(ctx, id)
			switch {
			case errors.Is(err, model.ErrNotFound):
				res.Reclaimed = true
			case err != nil:
				return err
			default:
				res.VM = after
			}
			if o.json() {
				return o.printJSON(res)
			}
			if res.Reclaimed {
				fmt.Fprintf(o.stdout, "%s destroyed and reclaimed: nothing of it is left.\n", id)
				return nil
			}
			fmt.Fprintf(o.stdout, "%s is in the graveyard until %s; `superjolt vm resume %s` brings it back.\n", id, o.fmtTime(res.VM.ReclaimAt), id)
			return nil
		},
	}
	c.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	noWait = addNoWait(c)
	return c
}

func newVMPortsCommand(o *globalOptions) *cobra.Command {
	edit := func(verb, short, example string, call func(*api.Client, context.Context, string, model.Port) (model.VM, error)) *cobra.Command {
		return &cobra.Command{
			Use:     verb + " ID HOSTPORT[:GUESTPORT][/tcp|/udp]",
			Short:   short,
			Example: example,
			Args:    args("ID", "HOSTPORT[:GUESTPORT][/tcp|/udp]"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := o.resolveVM(cmd.Context(), &args[0]); err != nil {
					return err
				}
				p, err := api.ParsePort(args[1])
				if err != nil {
					return err
				}
				vm, err := call(o.client, cmd.Context(), args[0], p)
				if err != nil {
					return err
				}
				return o.printVM(vm)
			},
		}
	}
	return group("ports", "Port forwards: a host port to a port of the VM",
		edit("add", "Forward a host port to a VM (one VM per host port)",
			"  superjolt vm ports add web-1 8080:80/tcp   # host port 8080 to the VM's 80\n  superjolt vm ports add web-1 53/udp        # the same number on both sides",
			(*api.Client).AddPort),
		edit("rm", "Stop forwarding a host port to a VM", "  superjolt vm ports rm web-1 8080/tcp", (*api.Client).RemovePort),
	)
}

func newVMDomainsCommand(o *globalOptions) *cobra.Command {
	var port uint16
	edit := func(verb, short, example string, call func(*api.Client, context.Context, string, string) (model.VM, error)) *cobra.Command {
		return &cobra.Command{
			Use:     verb + " ID DOMAIN",
			Short:   short,
			Example: example,
			Args:    args("ID", "DOMAIN"),
			RunE: func(cmd *cobra.Command, args []string) error {
				if err := o.resolveVM(cmd.Context(), &args[0]); err != nil {
					return err
				}
				domain := model.NormalizeDomain(args[1])
				if err := model.ValidateDomain(domain); err != nil {
					return err
				}
				vm, err := call(o.client, cmd.Context(), args[0], domain)
				if err != nil {
					return err
				}
				return o.printVM(vm)
			},
		}
	}
	add := edit("add", "Attach a domain to a VM: superjoltd's proxy serves it over HTTP and HTTPS from the VM's port 80 (--port)",
		"  superjolt vm domains add web-1 app.example.com\n  superjolt vm domains add web-1 api.example.com --port 8080",
		func(c *api.Client, ctx context.Context, id, d string) (model.VM, error) {
			return c.AddDomain(ctx, id, d, port)
		})
	add.Flags().Uint16Var(&port, "port", model.DefaultDomainPort, "the VM's port the domain is proxied to (1-65535)")
	add.PreRunE = func(cmd *cobra.Command, args []string) error {
		if port == 0 {
			return fmt.Errorf("%w: --port 0 is not a port: give the VM's port the domain goes to, 1-65535", model.ErrInvalid)
		}
		return nil
	}
	return group("domains", "Domains attached to a VM, served by superjoltd's proxy",
		add,
		edit("rm", "Detach a domain from a VM", "  superjolt vm domains rm web-1 app.example.com", (*api.Client).RemoveDomain),
	)
}
