package appliance

import (
	"fmt"
	"slices"
	"strings"

	"github.com/superjolt/superjolt/appliance/model"
)

// Retention: each VM keeps its newest N scheduled backups, N being its
// account's Entitlements.BackupRetention (5 unless set); older scheduled
// backups roll off after each new scheduled backup. On-demand backups are
// never touched by retention: they stay until deleted by hand.

// retentionVerdict is what retention does with one backup, and why.
type retentionVerdict struct {
	Backup model.Backup
	Keep   bool
	Reason string
}

// applyRetention decides, for a VM's backups (in any order), which to keep
// and which to remove under a retention of keep scheduled backups. It
// returns a verdict per backup, newest first. It is a pure function of its
// arguments: it reads no clock and touches no disk.
func applyRetention(bks []model.Backup, keep int) []retentionVerdict {
	out := make([]retentionVerdict, 0, len(bks))
	kept := 0
	for _, b := range sortNewestFirst(bks) {
		v := retentionVerdict{Backup: b, Keep: true}
		switch {
		case b.Kind != model.Scheduled:
			v.Reason = "on-demand: kept until deleted"
		case kept < keep:
			kept++
			v.Reason = fmt.Sprintf("scheduled %d of the newest %d", kept, keep)
		default:
			v.Keep = false
			v.Reason = fmt.Sprintf("scheduled, older than the newest %d", keep)
		}
		out = append(out, v)
	}
	return out
}

// toRemove returns the ids of the backups the verdicts remove.
func toRemove(vs []retentionVerdict) []string {
	var ids []string
	for _, v := range vs {
		if !v.Keep {
			ids = append(ids, v.Backup.ID)
		}
	}
	return ids
}

// sortNewestFirst returns bks sorted newest first (ties: the larger id
// first), leaving bks as it was.
func sortNewestFirst(bks []model.Backup) []model.Backup {
	out := slices.Clone(bks)
	slices.SortStableFunc(out, func(x, y model.Backup) int {
		if c := y.TakenAt.Compare(x.TakenAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	return out
}
