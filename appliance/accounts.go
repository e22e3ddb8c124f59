package appliance

import (
	"context"
	"sort"
	"strings"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// MaxBalance bounds an account's balance, so that sums of money stay far
// from overflowing an int64.
const MaxBalance = 1000 * model.MaxAmount

// CreateAccountRequest is what CreateAccount needs.
type CreateAccountRequest struct {
	Name string `json:"name"`
	// Balance is the opening balance in micro-credits (0 or more).
	Balance model.Micro `json:"balance"`
	// BackupRetention is how many scheduled backups each VM keeps; 0 means
	// model.DefaultBackupRetention.
	BackupRetention int `json:"backup_retention"`
}

// CreateAccount opens an account. A positive opening balance is booked as a
// top-up.
func (a *Appliance) CreateAccount(ctx context.Context, req CreateAccountRequest) (model.Account, error) {
	if err := model.ValidateAccountName(req.Name); err != nil {
		return model.Account{}, err
	}
	if req.Balance != 0 {
		if err := model.ValidateAmount(req.Balance); err != nil {
			return model.Account{}, err
		}
	}
	ent := model.DefaultEntitlements()
	if req.BackupRetention != 0 {
		ent.BackupRetention = req.BackupRetention
	}
	if err := ent.Validate(); err != nil {
		return model.Account{}, err
	}
	var acct model.Account
	err := a.update(ctx, func(tx *store.Tx) error {
		// Names are what people type (`--account alice`): one account per
		// name, whatever its case.
		accts, err := tx.Accounts()
		if err != nil {
			return err
		}
		for _, o := range accts {
			if strings.EqualFold(o.Name, req.Name) {
				return conflictf("an account named %q already exists (%s); give this one another name", o.Name, o.ID)
			}
		}
		id, err := tx.NewID(model.KindAccount)
		if err != nil {
			return err
		}
		now := a.clock.Now()
		acct = model.Account{ID: id, Name: req.Name, Balance: req.Balance, Entitlements: ent, CreatedAt: now}
		if err := tx.PutAccount(acct); err != nil {
			return err
		}
		if req.Balance > 0 {
			if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: id, At: now, Amount: req.Balance, Kind: model.TopUp, BalanceAfter: req.Balance}); err != nil {
				return err
			}
		}
		return event(tx, now, "account.created", id, id, "account %s (%s) opened with %s credits, keeping %d scheduled backups per VM", id, req.Name, req.Balance, ent.BackupRetention)
	})
	if err != nil {
		return model.Account{}, categorised(err, "create the account")
	}
	a.log.Info("account created", "account", acct.ID)
	return acct, nil
}

// Accounts lists the accounts by id.
func (a *Appliance) Accounts(ctx context.Context) ([]model.Account, error) {
	var out []model.Account
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.Accounts()
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, categorised(err, "list accounts")
}

// Account returns one account.
func (a *Appliance) Account(ctx context.Context, id string) (model.Account, error) {
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return model.Account{}, err
	}
	var acct model.Account
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		acct, err = getAccount(tx, id)
		return err
	})
	return acct, categorised(err, "read the account")
}

func getAccount(tx *store.Tx, id string) (model.Account, error) {
	acct, err := tx.Account(id)
	return acct, notFoundIs(err, "account %s does not exist; `superjolt account list` shows the accounts", id)
}

// TopUp adds amount (micro-credits, positive, at most model.MaxAmount) to
// an account's balance. It does not resume archived VMs: that is
// ResumeVM's job, once the balance is positive.
func (a *Appliance) TopUp(ctx context.Context, id string, amount model.Micro) (model.Account, error) {
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return model.Account{}, err
	}
	if err := model.ValidateAmount(amount); err != nil {
		return model.Account{}, err
	}
	var acct model.Account
	err := a.update(ctx, func(tx *store.Tx) error {
		var err error
		if acct, err = getAccount(tx, id); err != nil {
			return err
		}
		if acct.Balance > MaxBalance-amount {
			return invalidf("a top-up of %s would take %s past the largest balance allowed, %s", amount, id, MaxBalance)
		}
		acct.Balance += amount
		now := a.clock.Now()
		if err := tx.PutAccount(acct); err != nil {
			return err
		}
		if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: id, At: now, Amount: amount, Kind: model.TopUp, BalanceAfter: acct.Balance}); err != nil {
			return err
		}
		return event(tx, now, "account.topup", id, id, "%s topped up by %s; balance %s", id, amount, acct.Balance)
	})
	if err != nil {
		return model.Account{}, categorised(err, "top up")
	}
	a.log.Info("account topped up", "account", id, "amount", int64(amount), "balance", int64(acct.Balance))
	return acct, nil
}

// Adjust corrects an account's balance by amount (micro-credits, positive
// or negative, not zero, at most model.MaxAmount either way) with an
// operator's reason (model.ValidateAdjustment): a ledger entry of kind
// adjustment that carries the reason, and an account.adjusted event. It is
// how a mistaken top-up is taken back: the ledger keeps both, history is
// never edited. It cannot take the balance below zero (there is no debt,
// see billing.go) nor past MaxBalance. Like a top-up, it resumes nothing;
// a balance taken to zero archives the account's VMs at the next billing
// pass.
func (a *Appliance) Adjust(ctx context.Context, id string, amount model.Micro, reason string) (model.Account, error) {
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return model.Account{}, err
	}
	if err := model.ValidateAdjustment(amount, reason); err != nil {
		return model.Account{}, err
	}
	var acct model.Account
	err := a.update(ctx, func(tx *store.Tx) error {
		var err error
		if acct, err = getAccount(tx, id); err != nil {
			return err
		}
		switch {
		case amount < 0 && acct.Balance+amount < 0:
			return fundsf("%s has %s credits: an adjustment can take back at most that much (there is no debt)", id, max(acct.Balance, 0))
		case amount > 0 && acct.Balance > MaxBalance-amount:
			return invalidf("an adjustment of %s would take %s past the largest balance allowed, %s", amount, id, MaxBalance)
		}
		acct.Balance += amount
		now := a.clock.Now()
		if err := tx.PutAccount(acct); err != nil {
			return err
		}
		if _, err := tx.AppendLedger(model.LedgerEntry{AccountID: id, At: now, Amount: amount, Kind: model.Adjustment,
			BalanceAfter: acct.Balance, Reason: reason}); err != nil {
			return err
		}
		return event(tx, now, "account.adjusted", id, id, "%s adjusted by %s (%q); balance %s", id, amount, reason, acct.Balance)
	})
	if err != nil {
		return model.Account{}, categorised(err, "adjust the balance")
	}
	a.log.Info("account adjusted", "account", id, "amount", int64(amount), "balance", int64(acct.Balance), "reason", reason)
	return acct, nil
}

// SetAccountSSHKeys replaces an account's default SSH keys (which keys a
// VM gets is said once, at model.MaxSSHKeys); no keys clears them. VMs that exist keep the keys their disks were made with.
func (a *Appliance) SetAccountSSHKeys(ctx context.Context, id string, keys []string) (model.Account, error) {
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return model.Account{}, err
	}
	keys, err := model.NormalizeSSHKeys(keys)
	if err != nil {
		return model.Account{}, err
	}
	var acct model.Account
	err = a.update(ctx, func(tx *store.Tx) error {
		var err error
		if acct, err = getAccount(tx, id); err != nil {
			return err
		}
		acct.SSHKeys = keys
		if err := tx.PutAccount(acct); err != nil {
			return err
		}
		if len(keys) == 0 {
			return event(tx, a.clock.Now(), "account.ssh_keys", id, id, "%s has no default SSH keys now", id)
		}
		return event(tx, a.clock.Now(), "account.ssh_keys", id, id, "%s gives its new VMs %s", id, model.Count(len(keys), "default SSH key"))
	})
	if err != nil {
		return model.Account{}, categorised(err, "set the account's SSH keys")
	}
	a.log.Info("account SSH keys set", "account", id, "keys", len(keys))
	return acct, nil
}

// Ledger returns an account's ledger entries, newest first, at most limit
// (0 or less: 100; capped at model.MaxListLimit).
func (a *Appliance) Ledger(ctx context.Context, accountID string, limit int) ([]model.LedgerEntry, error) {
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return nil, err
	}
	limit = clampLimit(limit)
	var out []model.LedgerEntry
	err := a.view(ctx, func(tx *store.Tx) error {
		if _, err := getAccount(tx, accountID); err != nil {
			return err
		}
		var err error
		out, err = tx.Ledger(accountID, limit)
		return err
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Seq > out[j].Seq })
	return out, categorised(err, "read the ledger")
}

// LedgerTotals adds up an account's whole ledger (model.LedgerTotals): the
// answer for the account's whole life, however many entries it holds and
// however many days of charges the history pass has folded.
func (a *Appliance) LedgerTotals(ctx context.Context, accountID string) (model.LedgerTotals, error) {
	if err := model.ValidateID(model.KindAccount, accountID); err != nil {
		return model.LedgerTotals{}, err
	}
	var t model.LedgerTotals
	err := a.view(ctx, func(tx *store.Tx) error {
		if _, err := getAccount(tx, accountID); err != nil {
			return err
		}
		var err error
		t, err = tx.LedgerTotals(accountID)
		return err
	})
	return t, categorised(err, "read the ledger")
}

func clampLimit(limit int) int {
	if limit <= 0 {
		return 100
	}
	return min(limit, model.MaxListLimit)
}

// Tiers lists the tiers, cheapest first.
func (a *Appliance) Tiers(ctx context.Context) ([]model.Tier, error) {
	var out []model.Tier
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.Tiers()
		return err
	})
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].RatePerHour != out[j].RatePerHour {
			return out[i].RatePerHour < out[j].RatePerHour
		}
		return out[i].Name < out[j].Name
	})
	return out, categorised(err, "list tiers")
}
