package main

import (
	"context"
	"slices"
	"time"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// Shell completion of ids: asks the daemon, quietly gives nothing when it
// cannot be reached. The completion script itself comes from cobra
// (`superjolt completion bash|zsh|fish`).

func completionClient(o *globalOptions) (*api.Client, context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	return api.NewClient(o.socket), ctx, cancel
}

// completeVMs completes the first argument with the ids of the VMs in one
// of states (any state when none is given: the verb takes them all),
// described by name and state.
func completeVMs(o *globalOptions, states ...model.VMState) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return vmCompletions(o, states...), cobra.ShellCompDirectiveNoFileComp
	}
}

func vmCompletions(o *globalOptions, states ...model.VMState) []cobra.Completion {
	c, ctx, cancel := completionClient(o)
	defer cancel()
	defer c.Close()
	vms, err := c.VMs(ctx, api.VMFilter{})
	if err != nil {
		return nil
	}
	out := make([]cobra.Completion, 0, len(vms))
	for _, vm := range vms {
		if len(states) == 0 || slices.Contains(states, vm.State) {
			out = append(out, cobra.CompletionWithDesc(vm.ID, vm.Name+" ("+string(vm.State)+")"))
		}
	}
	return out
}

// completeFirst completes the first argument with what list asks the
// daemon for, and nothing after it.
func completeFirst(o *globalOptions, list func(context.Context, *api.Client) []cobra.Completion) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, ctx, cancel := completionClient(o)
		defer cancel()
		defer c.Close()
		return list(ctx, c), cobra.ShellCompDirectiveNoFileComp
	}
}

// completeBackups completes the first argument with backup ids of every
// VM: with onDemand, only those that can be deleted by hand.
func completeBackups(o *globalOptions, onDemand bool) cobra.CompletionFunc {
	return completeFirst(o, func(ctx context.Context, c *api.Client) []cobra.Completion {
		vms, err := c.VMs(ctx, api.VMFilter{})
		if err != nil {
			return nil
		}
		var out []cobra.Completion
		for _, vm := range vms {
			bs, err := c.Backups(ctx, vm.ID)
			if err != nil {
				continue
			}
			for _, b := range bs {
				if !onDemand || b.Kind == model.OnDemand {
					out = append(out, cobra.CompletionWithDesc(b.ID, vm.Name+" "+string(b.Kind)+" "+o.fmtTime(b.TakenAt)))
				}
			}
		}
		return out
	})
}

// completeOps completes the first argument with operation ids, newest
// first (only those under way with running).
func completeOps(o *globalOptions, running bool) cobra.CompletionFunc {
	return completeFirst(o, func(ctx context.Context, c *api.Client) []cobra.Completion {
		ops, err := c.Operations(ctx, api.OpFilter{Running: running, Limit: 50})
		if err != nil {
			return nil
		}
		out := make([]cobra.Completion, 0, len(ops))
		for _, op := range ops {
			out = append(out, cobra.CompletionWithDesc(op.ID, string(op.Kind)+" of "+op.VMID+" ("+string(op.State)+")"))
		}
		return out
	})
}

// completeAccounts completes the first argument with account ids.
func completeAccounts(o *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return accountCompletions(o), cobra.ShellCompDirectiveNoFileComp
	}
}

func accountCompletions(o *globalOptions) []cobra.Completion {
	c, ctx, cancel := completionClient(o)
	defer cancel()
	defer c.Close()
	as, err := c.Accounts(ctx)
	if err != nil {
		return nil
	}
	out := make([]cobra.Completion, 0, len(as))
	for _, a := range as {
		out = append(out, cobra.CompletionWithDesc(a.ID, a.Name))
	}
	return out
}

// completeVMThenBackup completes a VM id, then one of its backups.
func completeVMThenBackup(o *globalOptions) cobra.CompletionFunc {
	return func(cmd *cobra.Command, args []string, _ string) ([]cobra.Completion, cobra.ShellCompDirective) {
		switch len(args) {
		case 0:
			return vmCompletions(o), cobra.ShellCompDirectiveNoFileComp
		case 1:
			c, ctx, cancel := completionClient(o)
			defer cancel()
			defer c.Close()
			bs, err := c.Backups(ctx, args[0])
			if err != nil {
				return nil, cobra.ShellCompDirectiveNoFileComp
			}
			out := make([]cobra.Completion, 0, len(bs))
			for _, b := range bs {
				out = append(out, cobra.CompletionWithDesc(b.ID, string(b.Kind)+" "+o.fmtTime(b.TakenAt)))
			}
			return out, cobra.ShellCompDirectiveNoFileComp
		}
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeNames completes a flag from a fixed list.
func completeNames(names ...string) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return names, cobra.ShellCompDirectiveNoFileComp
	}
}

// completeTiers completes --tier from the daemon.
func completeTiers(o *globalOptions) cobra.CompletionFunc {
	return func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		c, ctx, cancel := completionClient(o)
		defer cancel()
		defer c.Close()
		ts, err := c.Tiers(ctx)
		if err != nil {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		out := make([]cobra.Completion, 0, len(ts))
		for _, t := range ts {
			out = append(out, cobra.CompletionWithDesc(t.Name, t.RatePerHour.String()+" credits/hour"))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	}
}

// addCompletions attaches id and flag completions to the command tree.
func addCompletions(root *cobra.Command, o *globalOptions) {
	args := map[string]cobra.CompletionFunc{
		"superjolt account show":         completeAccounts(o),
		"superjolt account topup":        completeAccounts(o),
		"superjolt account adjust":       completeAccounts(o),
		"superjolt account ledger":       completeAccounts(o),
		"superjolt account token create": completeAccounts(o),
		"superjolt account token list":   completeAccounts(o),
		"superjolt vm show":              completeVMs(o),
		"superjolt vm stop":              completeVMs(o, model.StateRunning),
		"superjolt vm start":             completeVMs(o, model.StateStopped),
		"superjolt vm resume":            completeVMs(o, model.StateGraveyard, model.StateArchived),
		"superjolt vm destroy":           completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt vm exec":              completeVMs(o, model.StateRunning),
		"superjolt vm console":           completeVMs(o, model.StateRunning),
		"superjolt vm log":               completeVMs(o),
		"superjolt vm ports add":         completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt vm ports rm":          completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt vm domains add":       completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt vm domains rm":        completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt backup create":        completeVMs(o, model.StateRunning, model.StateStopped),
		"superjolt backup list":          completeVMs(o),
		"superjolt backup restore":       completeVMThenBackup(o),
		"superjolt backup show":          completeBackups(o, false),
		"superjolt backup delete":        completeBackups(o, true),
		"superjolt op show":              completeOps(o, false),
		"superjolt op cancel":            completeOps(o, true),
		"superjolt debug clock advance":  completeNames("1h", "24h", "7d"),
	}
	accounts := func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
		return accountCompletions(o), cobra.ShellCompDirectiveNoFileComp
	}
	flags := map[string]map[string]cobra.CompletionFunc{
		"superjolt vm create":      {"account": accounts, "tier": completeTiers(o)},
		"superjolt vm list":        {"account": accounts, "state": completeNames("creating", "running", "stopped", "graveyard", "archived")},
		"superjolt backup list":    {"account": accounts, "kind": completeNames(string(model.Scheduled), string(model.OnDemand))},
		"superjolt backup restore": {"from": completeNames("latest", "yesterday")},
	}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if f, ok := args[c.CommandPath()]; ok {
			c.ValidArgsFunction = f
		}
		for name, f := range flags[c.CommandPath()] {
			_ = c.RegisterFlagCompletionFunc(name, f)
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	_ = root.RegisterFlagCompletionFunc("output", completeNames("text", "json"))
}
