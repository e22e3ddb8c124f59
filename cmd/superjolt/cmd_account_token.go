package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newAccountTokenCommand(o *globalOptions) *cobra.Command {
	c := group("token", "Account tokens: what an account's people and assistants use to reach the appliance",
		newAccountTokenCreateCommand(o),
		newAccountTokenListCommand(o),
		newAccountTokenRevokeCommand(o),
	)
	c.Long = `Account tokens let an account's people and their assistants act on the
account's own VMs, and nothing else, over the network. A token's secret is
printed once, when it is made: superjoltd keeps only its SHA-256 hash, so a
lost secret cannot be shown again; revoke the token and make another.`
	return c
}

func newAccountTokenCreateCommand(o *globalOptions) *cobra.Command {
	var name, expires string
	var readOnly bool
	c := &cobra.Command{
		Use:   "create ACCOUNT [--name NAME] [--read-only] [--expires 30d]",
		Short: "Make a token for an account and print its secret, once",
		Long: `Make a token for an account and print its secret. The secret is shown this
once: superjoltd keeps only its hash. --name says whose or what the token is
(events name it; unique among the account's live tokens; default: the
token's id). --read-only tokens may read and never change anything.
--expires takes a duration like 12h, 30d or 1d12h (default: never).`,
		Example: `  superjolt account token create alice --name laptop --expires 90d
  superjolt account token create ac-abc123 --name assistant --read-only -o json`,
		Args: args("ACCOUNT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req := api.CreateTokenRequest{Name: name, ReadOnly: readOnly}
			if expires != "" {
				d, err := api.ParseDuration(expires)
				if err != nil {
					return fmt.Errorf("%w: --expires %q: give a lifetime like 12h, 30d or 1d12h", model.ErrInvalid, expires)
				}
				req.ExpiresIn = api.Duration(d)
			}
			if err := req.Validate(); err != nil {
				return err
			}
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			ct, err := o.client.CreateToken(cmd.Context(), args[0], req)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(ct)
			}
			t := ct.Token
			fmt.Fprintf(o.stdout, "token %s %q of %s: %s, %s\n", t.ID, t.Name, t.AccountID, tokenScope(t), o.tokenExpiry(t))
			fmt.Fprintln(o.stdout, ct.Secret)
			fmt.Fprintln(o.stdout, "This secret cannot be shown again: store it now (superjoltd keeps only its hash).")
			return nil
		},
	}
	c.Flags().StringVar(&name, "name", "", "whose or what the token is, named in events (default: its id)")
	c.Flags().BoolVar(&readOnly, "read-only", false, "the token may read and never change anything")
	c.Flags().StringVar(&expires, "expires", "", "lifetime, like 12h, 30d or 1d12h (default: never expires)")
	return c
}

func newAccountTokenListCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list ACCOUNT",
		Aliases: []string{"ls"},
		Short:   "List an account's tokens, revoked and expired ones included, newest first",
		Args:    args("ACCOUNT"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.resolveAccount(cmd.Context(), &args[0]); err != nil {
				return err
			}
			ts, err := o.client.Tokens(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(ts)
			}
			rows := make([][]string, 0, len(ts))
			for _, t := range ts {
				rows = append(rows, []string{t.Name, t.ID, tokenScope(t), o.fmtTime(t.CreatedAt),
					o.fmtTime(t.LastUsedAt), o.fmtTime(t.ExpiresAt), o.fmtTime(t.RevokedAt)})
			}
			return o.table([]string{"NAME", "ID", "SCOPE", "CREATED", "LAST USED", "EXPIRES", "REVOKED"}, rows)
		},
	}
}

func newAccountTokenRevokeCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "revoke TOKEN-ID",
		Short:   "Revoke a token: it never authenticates again",
		Long:    "Revoke a token: it never authenticates again. Revoking a revoked token changes nothing.",
		Example: "  superjolt account token revoke tk-0123456789",
		Args:    args("TOKEN-ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := model.ValidateID(model.KindToken, args[0]); err != nil {
				return err
			}
			t, err := o.client.RevokeToken(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(t)
			}
			fmt.Fprintf(o.stdout, "token %s %q of %s revoked %s; it no longer authenticates\n", t.ID, t.Name, t.AccountID, o.fmtTime(t.RevokedAt))
			return nil
		},
	}
}

// tokenScope is what a token may do, as the CLI shows it.
func tokenScope(t model.Token) string {
	if t.ReadOnly {
		return "read-only"
	}
	return "full"
}

func (o *globalOptions) tokenExpiry(t model.Token) string {
	if t.ExpiresAt.IsZero() {
		return "does not expire"
	}
	return "expires " + o.fmtTime(t.ExpiresAt)
}
