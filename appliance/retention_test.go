package appliance

import (
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

func TestApplyRetention(t *testing.T) {
	day := func(d int) time.Time { return t0.Add(time.Duration(d) * 24 * time.Hour) }
	s := func(id string, d int) model.Backup {
		return model.Backup{ID: id, Kind: model.Scheduled, TakenAt: day(d)}
	}
	o := func(id string, d int) model.Backup {
		return model.Backup{ID: id, Kind: model.OnDemand, TakenAt: day(d)}
	}
	tests := []struct {
		name string
		bks  []model.Backup
		keep int
		want string // verdicts newest first: id+ kept, id- removed
	}{
		{"none", nil, 5, ""},
		{"fewer than retention", []model.Backup{s("s1", 1), s("s2", 2)}, 5, "s2+ s1+"},
		{"exactly retention", []model.Backup{s("s1", 1), s("s2", 2), s("s3", 3)}, 3, "s3+ s2+ s1+"},
		{"oldest roll off", []model.Backup{s("s1", 1), s("s2", 2), s("s3", 3), s("s4", 4)}, 2, "s4+ s3+ s2- s1-"},
		{"input order does not matter", []model.Backup{s("s3", 3), s("s1", 1), s("s4", 4), s("s2", 2)}, 2, "s4+ s3+ s2- s1-"},
		{"on-demand never counted nor removed", []model.Backup{o("o1", 0), s("s1", 1), o("o2", 2), s("s2", 2), s("s3", 3)}, 2, "s3+ s2+ o2+ s1- o1+"},
		{"retention zero keeps only on-demand", []model.Backup{s("s1", 1), o("o1", 2)}, 0, "o1+ s1-"},
		{"same instant: larger id is newer", []model.Backup{s("sa", 1), s("sb", 1)}, 1, "sb+ sa-"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vs := applyRetention(tt.bks, tt.keep)
			var got []string
			for _, v := range vs {
				mark := "+"
				if !v.Keep {
					mark = "-"
				}
				if v.Reason == "" {
					t.Errorf("%s has no reason", v.Backup.ID)
				}
				got = append(got, v.Backup.ID+mark)
			}
			if strings.Join(got, " ") != tt.want {
				t.Fatalf("applyRetention = %q, want %q", strings.Join(got, " "), tt.want)
			}
			if n := len(toRemove(vs)); n != strings.Count(tt.want, "-") {
				t.Fatalf("toRemove = %d ids, want %d", n, strings.Count(tt.want, "-"))
			}
		})
	}
}
