package main

import (
	"testing"

	"github.com/superjolt/superjolt/appliance/model"
)

// BenchmarkPostgresBackup measures `backup create` of a Debian 12 guest
// running PostgreSQL (small tier, TCG), idle and while a writer commits
// rows as fast as it can, in one run: ns/op is the whole backup as the CLI
// waits for it, frozen-ms how long the guest's filesystems were frozen.
// One guest serves every iteration:
//
//	make bench BENCH=PostgresBackup PKGS=./cmd/superjolt/ COUNT=1
//
// (b.Loop runs each case as often as -benchtime allows; -benchtime=10x
// gives ten backups of each).
func BenchmarkPostgresBackup(b *testing.B) {
	needDebian(b)
	g := startDebianGuest(b)
	g.psql(b, "CREATE TABLE acks (n bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())")
	for _, c := range []struct {
		name    string
		writing bool
	}{{"idle", false}, {"writing", true}} {
		b.Run(c.name, func(b *testing.B) {
			if c.writing {
				g.exec(b, "systemd-run", "--unit=pgwriter", "--collect", "/bin/sh", "-c", writerScript)
				waitAcks(b, g, 50)
				b.Cleanup(func() { g.exec(b, "systemctl", "stop", "pgwriter") })
			}
			var frozen int64
			for b.Loop() {
				bk := okJSON[model.Backup](b, g.d, "backup", "create", g.vm.ID)
				if bk.Consistency != model.Frozen {
					b.Fatalf("backup consistency %q, want frozen", bk.Consistency)
				}
				frozen += bk.FrozenMS
			}
			b.ReportMetric(float64(frozen)/float64(b.N), "frozen-ms")
		})
	}
}
