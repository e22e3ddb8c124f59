package model

import (
	"fmt"
	"slices"
	"strings"
	"time"
)

// Naming a backup to restore from: "latest", "yesterday", a date
// YYYY-MM-DD or a backup id. A date is a calendar day in a time zone: the
// one the operator reads times in (the CLI's, shown with every time it
// prints), so that the backup `--from 2027-01-12` restores is the one
// `backup list` shows as taken on 2027-01-12. Days are whole calendar
// days in that zone, 23 or 25 hours long across a DST change.

// ValidateFrom checks a from-expression: latest, yesterday, a date
// YYYY-MM-DD or a backup id.
func ValidateFrom(from string) error {
	if from == "latest" || from == "yesterday" || KindOf(from) == KindBackup {
		return nil
	}
	if _, err := time.Parse(time.DateOnly, from); err != nil {
		return invalidf("backup %q: use a backup id, latest, yesterday or a date YYYY-MM-DD", clip(from))
	}
	return nil
}

// PickBackup returns the backup from names among bks (a VM's backups, in
// any order): the newest one ("latest"), the newest taken on the calendar
// day before now's ("yesterday") or on a date, both in loc, or the one with
// that id. It fails with ErrNotFound naming the day and the zone when there
// is none.
func PickBackup(bks []Backup, from string, now time.Time, loc *time.Location) (Backup, error) {
	if err := ValidateFrom(from); err != nil {
		return Backup{}, err
	}
	if loc == nil {
		loc = time.UTC
	}
	newest := slices.Clone(bks)
	slices.SortStableFunc(newest, func(x, y Backup) int {
		if c := y.TakenAt.Compare(x.TakenAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	var start, end time.Time
	switch {
	case from == "latest":
		if len(newest) > 0 {
			return newest[0], nil
		}
		return Backup{}, &CodedError{Code: "not_found", Message: "there is no backup yet"}
	case KindOf(from) == KindBackup:
		for _, b := range newest {
			if b.ID == from {
				return b, nil
			}
		}
		return Backup{}, &CodedError{Code: "not_found", Message: from + " is not one of this VM's backups"}
	case from == "yesterday":
		y, m, d := now.In(loc).Date()
		start, end = time.Date(y, m, d-1, 0, 0, 0, 0, loc), time.Date(y, m, d, 0, 0, 0, 0, loc)
	default:
		day, _ := time.ParseInLocation(time.DateOnly, from, loc)
		y, m, d := day.Date()
		start, end = time.Date(y, m, d, 0, 0, 0, 0, loc), time.Date(y, m, d+1, 0, 0, 0, 0, loc)
	}
	for _, b := range newest {
		if !b.TakenAt.Before(start) && b.TakenAt.Before(end) {
			return b, nil
		}
	}
	return Backup{}, &CodedError{Code: "not_found",
		Message: fmt.Sprintf("there is no backup taken on %s (%s)", start.Format(time.DateOnly), ZoneName(loc, start))}
}

// ZoneName names loc for a person: its IANA name when it has one, else its
// abbreviation at t (what the system's local zone reads as).
func ZoneName(loc *time.Location, t time.Time) string {
	if n := loc.String(); n != "Local" && n != "" {
		return n
	}
	abbr, _ := t.In(loc).Zone()
	return abbr
}
