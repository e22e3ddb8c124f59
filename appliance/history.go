package appliance

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Bounded history
//
// The store keeps what is live, and history only for a window
// (Options.HistoryWindow, superjoltd --history-window; default
// model.DefaultHistoryWindow, 30 days): once a day the background pass
// (historyPass)
//
//   - deletes the events older than the window (their seqs are never
//     handed out again, so a follower never sees one twice);
//   - deletes the finished operations (done, failed, cancelled, rolled
//     back) that finished before the window; running ones stay, whatever
//     their age;
//   - folds each account's charges of every UTC day that ended before the
//     window into one ledger entry per VM and day (LedgerEntry.Charges says
//     how many): the exact sums of Amount and Forgiven, at the place and
//     with the BalanceAfter of the day's last charge. Each fold and the
//     deletion of the rows it replaces commit together, so an account's
//     balance equals the sum of its ledger at every commit, and the ledger
//     still covers the whole life of the account. Top-ups and adjustments
//     are kept one by one, forever;
//   - then has the store give the space back (store.Maintain), so that disk
//     use follows live data instead of everything ever written.
//
// It writes one history.pruned event when it removed something. Each step
// works in transactions of at most historyBatch rows; a step that fails is
// done again at the next pass (every step is idempotent).

// historyEvery is how often the history pass runs: the window is counted
// in days, so daily is enough.
const historyEvery = 24 * time.Hour

// historyBatch bounds the rows one transaction of the pass deletes: some
// 100 KiB of deletes, far under a transaction's 1.2 MiB.
const historyBatch = 1000

// HistoryResult is what one history pass removed.
type HistoryResult struct {
	Events, Operations int
	// Folded is the folded ledger entries written; Charges the rows they
	// replaced that went.
	Folded, Charges int
}

func (r HistoryResult) empty() bool {
	return r.Events == 0 && r.Operations == 0 && r.Folded == 0 && r.Charges == 0
}

// historyPass applies the window at now (see Bounded history).
func (a *Appliance) historyPass(ctx context.Context, now time.Time) (HistoryResult, error) {
	var res HistoryResult
	cut := now.Add(-a.historyWindow)
	var errs []error
	n, err := a.repeat(ctx, func(tx *store.Tx) (int, error) { return tx.PruneEventsBefore(cut, historyBatch) })
	res.Events = n
	errs = append(errs, err)
	n, err = a.pruneOperations(ctx, cut)
	res.Operations = n
	errs = append(errs, err)
	folded, removed, err := a.foldLedgers(ctx, cut.UTC().Truncate(24*time.Hour))
	res.Folded, res.Charges = folded, removed
	errs = append(errs, err)
	if !res.empty() {
		a.log.Info("history pruned", "before", cut, "events", res.Events, "operations", res.Operations,
			"charges_folded", res.Charges+res.Folded, "ledger_entries", res.Folded)
		errs = append(errs, a.update(ctx, func(tx *store.Tx) error {
			return event(tx, now, "history.pruned", "", "",
				"history older than %s pruned: %d events, %d finished operations; %d charges folded into %d daily ledger entries",
				cut.UTC().Format(time.RFC3339), res.Events, res.Operations, res.Charges+res.Folded, res.Folded)
		}))
	}
	if err := a.store.Maintain(ctx); err != nil {
		errs = append(errs, err)
	}
	return res, errors.Join(errs...)
}

// repeat runs step in transactions until it deletes fewer than
// historyBatch rows, and returns the total.
func (a *Appliance) repeat(ctx context.Context, step func(tx *store.Tx) (int, error)) (int, error) {
	total := 0
	for {
		var n int
		err := a.update(ctx, func(tx *store.Tx) error {
			var err error
			n, err = step(tx)
			return err
		})
		if err != nil {
			return total, err
		}
		total += n
		if n < historyBatch {
			return total, nil
		}
	}
}

// pruneOperations deletes the operations that finished before cut, after
// indexing those a store from before the finished index holds.
func (a *Appliance) pruneOperations(ctx context.Context, cut time.Time) (int, error) {
	for done := false; !done; {
		err := a.update(ctx, func(tx *store.Tx) error {
			var err error
			done, err = tx.IndexFinishedOperations(historyBatch)
			return err
		})
		if err != nil {
			return 0, err
		}
	}
	return a.repeat(ctx, func(tx *store.Tx) (int, error) { return tx.PruneOperations(cut, historyBatch) })
}

// foldLedgers folds every account's charges before the UTC midnight cut,
// from where the last pass stopped, and moves that mark to cut when every
// account is done.
func (a *Appliance) foldLedgers(ctx context.Context, cut time.Time) (int, int, error) {
	var since time.Time
	var accts []string
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		if since, err = tx.LedgerFoldedBefore(); err != nil {
			return err
		}
		as, err := tx.Accounts()
		for _, acct := range as {
			accts = append(accts, acct.ID)
		}
		return err
	})
	if err != nil || !cut.After(since) {
		return 0, 0, err
	}
	folded, removed := 0, 0
	var errs []error
	for _, id := range accts {
		for before := cut; !before.IsZero(); {
			var st store.FoldStats
			var next time.Time
			err := a.update(ctx, func(tx *store.Tx) error {
				var err error
				st, next, err = tx.FoldCharges(id, since, before, historyBatch)
				return err
			})
			if err != nil {
				errs = append(errs, fmt.Errorf("fold the ledger of %s: %w", id, err))
				break
			}
			folded, removed, before = folded+st.Entries, removed+st.Removed, next
		}
	}
	if len(errs) == 0 {
		errs = append(errs, a.update(ctx, func(tx *store.Tx) error { return tx.SetLedgerFoldedBefore(cut) }))
	}
	return folded, removed, errors.Join(errs...)
}

// checkHistoryWindow returns the window Options.HistoryWindow asks for.
func checkHistoryWindow(w time.Duration) (time.Duration, error) {
	switch {
	case w == 0:
		return model.DefaultHistoryWindow, nil
	case w < model.MinHistoryWindow || w > model.MaxHistoryWindow:
		return 0, fmt.Errorf("appliance: %w: history window %s: give at least %s and at most %s, like 30d",
			model.ErrInvalid, w, model.MinHistoryWindow, model.MaxHistoryWindow)
	}
	return w, nil
}
