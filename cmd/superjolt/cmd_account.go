package main

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newAccountCommand(o *globalOptions) *cobra.Command {
	return group("account", "Accounts, their prepaid balance and entitlements",
		newAccountCreateCommand(o),
		newAccountListCommand(o),
		newAccountShowCommand(o),
		newAccountTopUpCommand(o),
		newAccountAdjustCommand(o),
		newAccountSetCommand(o),
		newAccountLedgerCommand(o),
		newAccountTokenCommand(o),
	)
}

func newAccountCreateCommand(o *globalOptions) *cobra.Command {
	var balance string
	var retention int
	c := &cobra.Command{
		Use:   "create NAME",
		Short: "Open an account",
		Example: `  superjolt account create alice --balance 25
  superjolt account create "Bob's shop" --balance 100 --retention 14`,
		Args: args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.CreateAccountRequest{Name: args[0], BackupRetention: retention}
			if balance != "" {
				m, err := model.ParseCredits(balance)
				if err != nil {
					return fmt.Errorf("--balance: %w", err)
				}
				req.Balance = m
			}
			if cmd.Flags().Changed("retention") && retention == 0 {
				return fmt.Errorf("%w: --retention 0: keep at least 1 scheduled backup", model.ErrInvalid)
			}
			if err := req.Validate(); err != nil {
				return err
			}
			a, err := o.client.CreateAccount(cmd.Context(), req)
			if err != nil {
				return err
			}
			return o.printAccount(a, nil)
		},
	}
	c.Flags().StringVar(&balance, "balance", "", "opening balance in credits (e.g. 25 or 2.5)")
	c.Flags().IntVar(&retention, "retention", 0, fmt.Sprintf("scheduled backups kept per VM (default %d)", model.DefaultBackupRetention))
	return c
}

func newAccountListCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the accounts",
		Args:    args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			as, err := o.client.Accounts(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(as)
			}
			rows := make([][]string, 0, len(as))
			for _, a := range as {
				rows = append(rows, []string{a.ID, a.Name, a.Balance.String(),
					strconv.Itoa(a.Entitlements.BackupRetention), strconv.Itoa(a.Entitlements.VMLimit), o.fmtTime(a.CreatedAt)})
			}
			return o.table([]string{"ID", "NAME", "BALANCE", "RETENTION", "VM LIMIT", "CREATED"}, rows)
		},
	}
}

func newAccountShowCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show an account and its latest ledger entries",
		Args:  args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			a, err := o.client.Account(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(a)
			}
			es, err := o.client.Ledger(cmd.Context(), a.ID, 10)
			if err != nil {
				return err
			}
			return o.printAccount(a, es)
		},
	}
}

func newAccountTopUpCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "topup ID CREDITS",
		Short:   "Add credits to an account's balance",
		Example: "  superjolt account topup ac-abc123 50",
		Args:    args("ID", "CREDITS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			m, err := model.ParseCredits(args[1])
			if err != nil {
				return err
			}
			a, err := o.client.TopUp(cmd.Context(), args[0], m)
			if err != nil {
				return err
			}
			return o.printAccount(a, nil)
		},
	}
}

func newAccountAdjustCommand(o *globalOptions) *cobra.Command {
	var reason string
	c := &cobra.Command{
		Use:   "adjust ID CREDITS --reason TEXT",
		Short: "Correct an account's balance with a ledger entry that says why",
		Long: `Correct an account's balance, up or down, with a ledger entry of kind
adjustment that keeps the reason. This is how a mistaken top-up is taken
back: history is never edited, the ledger shows both, and the balance stays
the sum of the ledger. CREDITS may be negative (not zero); an adjustment
cannot take the balance below zero. The reason is required, one line, at
most ` + strconv.Itoa(model.MaxReasonLen) + ` bytes.`,
		Example: `  superjolt account adjust ac-abc123 -50 --reason "top-up of 50 booked twice"
  superjolt account adjust ac-abc123 2.5 --reason "goodwill: outage on 2026-11-30"`,
		Args: args("ID", "CREDITS"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			m, err := model.ParseSignedCredits(args[1])
			if err != nil {
				return err
			}
			if err := (api.AdjustRequest{Amount: m, Reason: reason}).Validate(); err != nil {
				return err
			}
			a, err := o.client.Adjust(cmd.Context(), args[0], m, reason)
			if err != nil {
				return err
			}
			return o.printAccount(a, nil)
		},
	}
	c.Flags().StringVar(&reason, "reason", "", "why (required; kept in the ledger)")
	return c
}

// negativeAmounts lets `superjolt account adjust ID -5 --reason TEXT` mean
// minus five credits: pflag would read "-5" as a flag. For that command
// alone, a word that reads as a negative number and is not the value of a
// flag moves after a "--", where words are arguments; the ID stays first.
func negativeAmounts(args []string) []string {
	at := -1
	for i := 0; i+1 < len(args) && args[i] != "--"; i++ {
		if args[i] == "account" && args[i+1] == "adjust" {
			at = i + 2
			break
		}
	}
	if at < 0 {
		return args
	}
	out := append([]string(nil), args[:at]...)
	var moved []string
	for i := at; i < len(args); i++ {
		w := args[i]
		if w == "--" {
			out = append(out, args[i:]...)
			break
		}
		prev := args[i-1]
		takesValue := prev == "--reason" || prev == "--socket" || prev == "-o" || prev == "--output"
		if len(w) > 1 && w[0] == '-' && (w[1] >= '0' && w[1] <= '9' || w[1] == '.') && !takesValue {
			moved = append(moved, w)
			continue
		}
		out = append(out, w)
	}
	if len(moved) == 0 {
		return args
	}
	if !slices.Contains(out[at:], "--") {
		out = append(out, "--")
	}
	return append(out, moved...)
}

func newAccountSetCommand(o *globalOptions) *cobra.Command {
	var keyFiles []string
	var noKeys bool
	c := &cobra.Command{
		Use:   "set ID (--ssh-key FILE... | --no-ssh-keys)",
		Short: "Change an account's settings: its default SSH keys",
		Long: `Change an account's settings.

--ssh-key FILE (repeatable; - reads stdin) sets the account's default SSH
keys, OpenSSH public keys one a line as in a .pub file, replacing the ones
it had; --no-ssh-keys clears them. Every VM the account creates from then
on gets these keys, then those given to vm create --ssh-key, in root's
authorized_keys. VMs that exist keep the keys they were created with.`,
		Example: `  superjolt account set alice --ssh-key ~/.ssh/id_ed25519.pub
  superjolt account set alice --no-ssh-keys`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(keyFiles) == 0 && !noKeys {
				return fmt.Errorf("%w: account set needs --ssh-key FILE or --no-ssh-keys", model.ErrInvalid)
			}
			if len(keyFiles) > 0 && noKeys {
				return fmt.Errorf("%w: give --ssh-key FILE or --no-ssh-keys, not both", model.ErrInvalid)
			}
			var keys []string
			if !noKeys {
				var err error
				if keys, err = o.readSSHKeys(keyFiles); err != nil {
					return err
				}
			}
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			a, err := o.client.SetSSHKeys(cmd.Context(), args[0], keys)
			if err != nil {
				return err
			}
			return o.printAccount(a, nil)
		},
	}
	c.Flags().StringArrayVar(&keyFiles, "ssh-key", nil, "a file of OpenSSH public keys every new VM of the account gets (a .pub file; - is stdin; repeatable)")
	c.Flags().BoolVar(&noKeys, "no-ssh-keys", false, "clear the account's default SSH keys")
	return c
}

func newAccountLedgerCommand(o *globalOptions) *cobra.Command {
	var limit int
	var totals bool
	c := &cobra.Command{
		Use:   "ledger ID [--limit N] [--totals]",
		Short: "Show an account's charges, top-ups and adjustments, newest first",
		Long: `Show an account's newest ledger entries, then what its whole ledger adds
up to: top-ups, adjustments, charges and what was forgiven, over the whole
life of the account. Charges older than the daemon's history window are
folded into one entry per VM and day with the same sums, so the totals do
not change when they are. --totals shows the totals alone.`,
		Args: args("ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			var es []model.LedgerEntry
			if !totals {
				var err error
				if es, err = o.client.Ledger(cmd.Context(), args[0], limit); err != nil {
					return err
				}
				if o.json() {
					return o.printJSON(es)
				}
			}
			t, err := o.client.LedgerTotals(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if totals {
				if o.json() {
					return o.printJSON(t)
				}
				return o.ledgerTotals(t)
			}
			if err := o.ledgerTable(es); err != nil {
				return err
			}
			fmt.Fprintln(o.stdout)
			return o.ledgerTotals(t)
		},
	}
	c.Flags().IntVar(&limit, "limit", 50, "how many entries")
	c.Flags().BoolVar(&totals, "totals", false, "show only what the whole ledger adds up to")
	return c
}

// ledgerTotals prints what an account's whole ledger adds up to.
func (o *globalOptions) ledgerTotals(t model.LedgerTotals) error {
	return o.fields(
		"Whole life", fmt.Sprintf("%d entries (%d charges)", t.Entries, t.Charges),
		"Topped up", t.ToppedUp.String(),
		"Adjusted", t.Adjusted.String(),
		"Charged", t.Charged.String(),
		"Forgiven", t.Forgiven.String()+" (not charged: the balance ran out)",
		"Sum", t.Sum.String()+" credits, the balance",
	)
}

func (o *globalOptions) printAccount(a model.Account, ledger []model.LedgerEntry) error {
	if o.json() {
		return o.printJSON(a)
	}
	kv := []string{
		"ID", a.ID,
		"Name", a.Name,
		"Balance", a.Balance.String() + " credits",
		"Backup retention", strconv.Itoa(a.Entitlements.BackupRetention) + " scheduled backups per VM",
		"VM limit", strconv.Itoa(a.Entitlements.VMLimit),
		"Created", o.fmtTime(a.CreatedAt),
	}
	if len(a.SSHKeys) > 0 {
		labels := make([]string, len(a.SSHKeys))
		for i, k := range a.SSHKeys {
			labels[i] = model.SSHKeyLabel(k)
		}
		kv = append(kv, "SSH keys", strings.Join(labels, ", "))
	}
	if err := o.fields(kv...); err != nil {
		return err
	}
	if len(ledger) == 0 {
		return nil
	}
	fmt.Fprintln(o.stdout, "\nLatest ledger entries:")
	return o.ledgerTable(ledger)
}

func (o *globalOptions) ledgerTable(es []model.LedgerEntry) error {
	rows := make([][]string, 0, len(es))
	for _, e := range es {
		period := "-"
		if !e.PeriodStart.IsZero() {
			period = o.fmtTime(e.PeriodStart) + " .. " + e.PeriodEnd.In(o.zone()).Format("15:04:05")
		}
		note := e.Reason
		if e.Forgiven > 0 {
			note = "forgiven " + e.Forgiven.String() + ": the balance ran out"
		}
		if e.Charges > 0 {
			// An old day's charges of one VM, folded by the history
			// pass: the sums are exact.
			folded := "charges ×" + strconv.Itoa(e.Charges) + " (one day, folded)"
			if note != "" {
				folded += "; " + note
			}
			note = folded
		}
		rows = append(rows, []string{o.fmtTime(e.At), string(e.Kind), e.Amount.String(), e.BalanceAfter.String(), dash(e.VMID), period, dash(note)})
	}
	return o.table([]string{"AT", "KIND", "AMOUNT", "BALANCE", "VM", "PERIOD", "NOTE"}, rows)
}
