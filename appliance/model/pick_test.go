package model

import (
	"errors"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // the zones below, on a box without tzdata too
)

func TestPickBackup(t *testing.T) {
	zone := func(name string) *time.Location {
		loc, err := time.LoadLocation(name)
		if err != nil {
			t.Skipf("time zone %s is not on this machine: %v", name, err)
		}
		return loc
	}
	la, kolkata, chatham := zone("America/Los_Angeles"), zone("Asia/Kolkata"), zone("Pacific/Chatham")
	at := func(s string) time.Time {
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	bk := func(id, taken string) Backup { return Backup{ID: id, TakenAt: at(taken)} }
	// Around a UTC midnight that is still the evening before in Los Angeles.
	bks := []Backup{
		bk("bk-aaaaaaaaa1", "2027-01-12T02:21:25Z"), // LA: Jan 11 18:21; Kolkata: Jan 12 07:51
		bk("bk-aaaaaaaaa2", "2027-01-13T01:00:00Z"), // LA: Jan 12 17:00; Chatham: Jan 13 14:45
		bk("bk-aaaaaaaaa3", "2027-01-12T11:00:00Z"), // Chatham: Jan 13 00:45; Kolkata: Jan 12 16:30
		// Los Angeles springs forward on 2026-03-08: a 23-hour day.
		bk("bk-aaaaaaaaa4", "2026-03-09T07:30:00Z"), // LA: Mar 9 00:30 PDT (a 24-hour day from Mar 8 08:00Z would take it)
		bk("bk-aaaaaaaaa5", "2026-03-09T06:30:00Z"), // LA: Mar 8 23:30 PDT
	}
	now := at("2027-01-13T07:30:00Z") // LA: Jan 12 23:30; UTC: Jan 13; Kolkata: Jan 13 13:00
	tests := []struct {
		from string
		loc  *time.Location
		want string // id, or "none"
	}{
		{"latest", la, "bk-aaaaaaaaa2"},
		{"bk-aaaaaaaaa3", la, "bk-aaaaaaaaa3"},
		{"2027-01-12", time.UTC, "bk-aaaaaaaaa3"},
		{"2027-01-12", la, "bk-aaaaaaaaa2"},
		{"2027-01-11", la, "bk-aaaaaaaaa1"},
		{"2027-01-11", time.UTC, "none"},
		{"2027-01-12", kolkata, "bk-aaaaaaaaa3"},
		{"2027-01-13", chatham, "bk-aaaaaaaaa2"},
		{"2027-01-12", chatham, "bk-aaaaaaaaa1"}, // Chatham: Jan 12 16:06
		{"yesterday", la, "bk-aaaaaaaaa1"},       // LA today is Jan 12
		{"yesterday", time.UTC, "bk-aaaaaaaaa3"}, // UTC today is Jan 13
		{"yesterday", kolkata, "bk-aaaaaaaaa3"},
		{"2026-03-08", la, "bk-aaaaaaaaa5"},
		{"2026-03-09", la, "bk-aaaaaaaaa4"},
		{"2026-03-10", la, "none"},
	}
	for _, tt := range tests {
		t.Run(tt.from+" "+tt.loc.String(), func(t *testing.T) {
			got, err := PickBackup(bks, tt.from, now, tt.loc)
			if tt.want == "none" {
				if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.from) || !strings.Contains(err.Error(), tt.loc.String()) {
					t.Fatalf("PickBackup = %v, %v; want not found naming the day and the zone", got.ID, err)
				}
				return
			}
			if err != nil || got.ID != tt.want {
				t.Fatalf("PickBackup = %v, %v; want %s", got.ID, err, tt.want)
			}
			// What the operator sees in backup list: the backup's date in loc.
			if tt.from[0] == '2' && got.TakenAt.In(tt.loc).Format(time.DateOnly) != tt.from {
				t.Fatalf("%s is listed as taken on %s in %s, not %s", got.ID, got.TakenAt.In(tt.loc).Format(time.DateOnly), tt.loc, tt.from)
			}
		})
	}
	for _, bad := range []string{"", "last tuesday", "2027-13-01", "bk-1", "2027-01-12T00:00:00Z"} {
		if _, err := PickBackup(bks, bad, now, la); !errors.Is(err, ErrInvalid) {
			t.Errorf("PickBackup(%q) = %v, want invalid", bad, err)
		}
	}
	if _, err := PickBackup(nil, "latest", now, la); !errors.Is(err, ErrNotFound) {
		t.Errorf("PickBackup(latest) of none = %v, want not found", err)
	}
}
