package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/superjolt/superjolt/appliance/model"
)

// span writes a duration the way the console shows ages and countdowns:
// its two largest units ("3d 4h", "13h 02m", "4m 05s", "12s").
func span(d time.Duration) string {
	if d < 0 {
		d = -d
	}
	d = d.Truncate(time.Second)
	days := int(d / (24 * time.Hour))
	h := int(d/time.Hour) % 24
	mnt := int(d/time.Minute) % 60
	s := int(d/time.Second) % 60
	switch {
	case days > 0:
		return fmt.Sprintf("%dd %dh", days, h)
	case h > 0:
		return fmt.Sprintf("%dh %02dm", h, mnt)
	case mnt > 0:
		return fmt.Sprintf("%dm %02ds", mnt, s)
	}
	return fmt.Sprintf("%ds", s)
}

// countdown writes the time left to a deadline to the second ("23h 59m
// 58s"), so that the graveyard visibly counts down.
func countdown(d time.Duration) string {
	if d <= 0 {
		return "due"
	}
	d = d.Truncate(time.Second)
	h := int(d / time.Hour)
	return fmt.Sprintf("%dh %02dm %02ds", h, int(d/time.Minute)%60, int(d/time.Second)%60)
}

// ago writes how long before now t was ("3h ago"); "-" for a zero time.
func ago(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if d := now.Sub(t); d > 0 {
		return coarse(d) + " ago"
	}
	return "just now"
}

// in writes how long after now t is ("in 20h"); "-" for a zero time.
func in(now, t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	if d := t.Sub(now); d > 0 {
		return "in " + coarse(d)
	}
	return "due"
}

// coarse writes a duration in its largest unit ("3h", "2d", "40m").
func coarse(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}

// clockTime writes t as the header's clock in loc ("12:04 UTC").
func clockTime(t time.Time, loc *time.Location) string {
	t = t.In(loc)
	return t.Format("15:04") + " " + model.ZoneName(loc, t)
}

// stamp writes an event's or a backup's time in loc: the date only when it
// is not today's.
func stamp(now, t time.Time, loc *time.Location) string {
	t, now = t.In(loc), now.In(loc)
	if t.YearDay() == now.YearDay() && t.Year() == now.Year() {
		return t.Format("15:04:05")
	}
	return t.Format("Jan 02 15:04")
}

func fmtBytes(n int64) string {
	if n <= 0 {
		return "-"
	}
	return strings.ReplaceAll(humanize.IBytes(uint64(n)), " ", "")
}

// mem writes a VM's memory use as the sketch shows it ("312M").
func mem(n int64) string {
	switch {
	case n <= 0:
		return "-"
	case n >= 10<<30:
		return fmt.Sprintf("%dG", n>>30)
	case n >= 1<<30:
		return fmt.Sprintf("%.1fG", float64(n)/(1<<30))
	}
	return fmt.Sprintf("%dM", n>>20)
}

// doing names what an operation of kind does to its VM while it runs.
func doing(k model.OpKind) string {
	switch k {
	case model.OpCreate:
		return "creating…"
	case model.OpBackup:
		return "backing up…"
	case model.OpRestore:
		return "restoring…"
	case model.OpDestroy:
		return "destroying…"
	case model.OpReclaim:
		return "reclaiming…"
	case model.OpArchive:
		return "archiving…"
	case model.OpResume:
		return "resuming…"
	case model.OpStart:
		return "starting…"
	case model.OpStop:
		return "stopping…"
	case model.OpDeleteBackup:
		return "deleting…"
	}
	return string(k) + "…"
}

// stepNames says in the console's words what each step did.
var stepNames = map[string]string{
	"stopped":         "stop",
	"replaced":        "reflink",
	"booted":          "boot",
	"frozen":          "freeze",
	"snapshot":        "snapshot",
	"thawed":          "thaw",
	"saved":           "save",
	"pruned":          "prune",
	"subvolume":       "disk",
	"grown":           "grow",
	"graveyard":       "graveyard",
	"vm-deleted":      "disk gone",
	"backups-deleted": "backups gone",
	"row-deleted":     "deleted",
}

func stepName(s string) string {
	if n, ok := stepNames[s]; ok {
		return n
	}
	return s
}
