package appliance

import (
	"context"
	"encoding/base64"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Lists of VMs and backups come whole (the default, for the TUI and
// people) or a page at a time (for scripts over thousands of VMs). A page
// ends with a cursor, an opaque string that names the last item's place in
// the list's order; the next page starts after that place. The place is
// made of what orders the list (a VM's creation time and id; a backup's VM,
// time taken and id), never of an offset, so a page that follows VMs being
// created or destroyed neither repeats an item nor skips one that existed
// throughout. A cursor carries no permission: it only says where to start,
// and the filter (an account's, for a remote token) decides what is seen.

// MaxPageLimit is the most items a page holds when a limit is asked for.
const MaxPageLimit = 1000

// Page selects a page of a list: at most Limit items (0: all of them)
// after the place Cursor names ("": from the start).
type Page struct {
	Limit  int
	Cursor string
}

// Rows is one page of a list as the stored JSON of each item, which is the
// wire form of its model type: the API writes rows to its answer without
// decoding them. Next is the cursor of the following page, "" after the
// last.
type Rows struct {
	Rows [][]byte
	Next string
}

// validate checks the page's limit; its cursor is read by the list it
// belongs to.
func (p Page) validate() error {
	if p.Limit < 0 || p.Limit > MaxPageLimit {
		return invalidf("page limit %d is out of range: ask for 1 to %d items a page (or none, for the whole list)", p.Limit, MaxPageLimit)
	}
	return nil
}

// Cursor prefixes: a cursor of one list is refused by the other.
const (
	vmCursorTag     = "vm1"
	backupCursorTag = "bk1"
)

func encodeCursor(parts ...string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strings.Join(parts, " ")))
}

// decodeCursor returns the n parts of cursor c of the list tagged tag.
func decodeCursor(c, tag, list string, n int) ([]string, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return nil, badCursor(c, list)
	}
	parts := strings.Split(string(b), " ")
	if len(parts) != n+1 || parts[0] != tag {
		return nil, badCursor(c, list)
	}
	return parts[1:], nil
}

// badCursor is the error for a cursor that no list gave out, or another
// list's.
func badCursor(c, list string) error {
	return invalidf("cursor %q is not one that %s gave out: pass the cursor of the previous page as it was given, or list again without a cursor to start from the first page", clipCursor(c), list)
}

func clipCursor(c string) string {
	if len(c) > 60 {
		return c[:60] + "…"
	}
	return c
}

// validateVMFilter checks f's account id, state, name prefix and image
// name when set.
func validateVMFilter(f VMFilter) error {
	return model.ValidateVMFilter(f.AccountID, f.State, f.NamePrefix, f.Image)
}

// vmBefore is the order of VM lists: oldest first, then by id.
func vmBefore(aCreated time.Time, aID string, bCreated time.Time, bID string) int {
	if c := aCreated.Compare(bCreated); c != 0 {
		return c
	}
	return strings.Compare(aID, bID)
}

// VMRows lists the VMs that f selects, oldest first (then by id), a page
// at a time. An account that does not exist is an error, not an empty list.
func (a *Appliance) VMRows(ctx context.Context, f VMFilter, p Page) (Rows, error) {
	if err := validateVMFilter(f); err != nil {
		return Rows{}, err
	}
	if err := p.validate(); err != nil {
		return Rows{}, err
	}
	var afterCreated time.Time
	var afterID string // "": from the start
	if p.Cursor != "" {
		parts, err := decodeCursor(p.Cursor, vmCursorTag, "`vm list`", 2)
		if err != nil {
			return Rows{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, parts[0])
		if err != nil || model.ValidateID(model.KindVM, parts[1]) != nil {
			return Rows{}, badCursor(p.Cursor, "`vm list`")
		}
		afterCreated, afterID = t, parts[1]
	}
	var rows []store.VMRow
	err := a.view(ctx, func(tx *store.Tx) error {
		if f.AccountID != "" {
			if _, err := getAccount(tx, f.AccountID); err != nil {
				return err
			}
		}
		var err error
		rows, err = tx.VMRows(store.VMFilter{AccountID: f.AccountID, State: f.State, NamePrefix: f.NamePrefix, Image: f.Image})
		return err
	})
	if err != nil {
		return Rows{}, categorised(err, "list VMs")
	}
	slices.SortFunc(rows, func(x, y store.VMRow) int { return vmBefore(x.CreatedAt, x.ID, y.CreatedAt, y.ID) })
	if afterID != "" {
		rows = rows[sort.Search(len(rows), func(i int) bool {
			return vmBefore(rows[i].CreatedAt, rows[i].ID, afterCreated, afterID) > 0
		}):]
	}
	out := Rows{}
	if p.Limit > 0 && len(rows) > p.Limit {
		rows = rows[:p.Limit]
		last := rows[len(rows)-1]
		out.Next = encodeCursor(vmCursorTag, last.CreatedAt.Format(time.RFC3339Nano), last.ID)
	}
	out.Rows = make([][]byte, len(rows))
	for i, r := range rows {
		out.Rows[i] = r.JSON
	}
	return out, nil
}

// validateBackupFilter checks f's ids and kind when set.
func validateBackupFilter(f BackupFilter) error {
	return model.ValidateBackupFilter(f.AccountID, f.VMID, f.Kind)
}

// BackupRows lists the backups that f selects, in the order of
// ListBackups, a page at a time. An account or VM that does not exist is
// an error, not an empty list.
func (a *Appliance) BackupRows(ctx context.Context, f BackupFilter, p Page) (Rows, error) {
	if err := validateBackupFilter(f); err != nil {
		return Rows{}, err
	}
	if err := p.validate(); err != nil {
		return Rows{}, err
	}
	sf := store.BackupFilter{AccountID: f.AccountID, VMID: f.VMID, Kind: f.Kind}
	if p.Cursor != "" {
		parts, err := decodeCursor(p.Cursor, backupCursorTag, "`backup list`", 3)
		if err != nil {
			return Rows{}, err
		}
		t, err := time.Parse(time.RFC3339Nano, parts[1])
		if err != nil || model.ValidateID(model.KindVM, parts[0]) != nil || model.ValidateID(model.KindBackup, parts[2]) != nil {
			return Rows{}, badCursor(p.Cursor, "`backup list`")
		}
		sf.After = store.BackupPos{VMID: parts[0], TakenAt: t, ID: parts[2]}
	}
	if p.Limit > 0 {
		sf.Limit = p.Limit + 1 // one more, to know whether a page follows
	}
	var rows []store.BackupRow
	err := a.view(ctx, func(tx *store.Tx) error {
		if err := backupFilterTargets(tx, f); err != nil {
			return err
		}
		var err error
		rows, err = tx.BackupRows(sf)
		return err
	})
	if err != nil {
		return Rows{}, categorised(err, "list backups")
	}
	out := Rows{}
	if p.Limit > 0 && len(rows) > p.Limit {
		rows = rows[:p.Limit]
		last := rows[len(rows)-1]
		out.Next = encodeCursor(backupCursorTag, last.VMID, last.TakenAt.Format(time.RFC3339Nano), last.ID)
	}
	out.Rows = make([][]byte, len(rows))
	for i, r := range rows {
		out.Rows[i] = r.JSON
	}
	return out, nil
}

// backupFilterTargets checks that the account and VM f names exist.
func backupFilterTargets(tx *store.Tx, f BackupFilter) error {
	if f.AccountID != "" {
		if _, err := getAccount(tx, f.AccountID); err != nil {
			return err
		}
	}
	if f.VMID != "" {
		if _, err := getVM(tx, f.VMID); err != nil {
			return err
		}
	}
	return nil
}
