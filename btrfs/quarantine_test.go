//go:build linux && cgo

package btrfs_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// TestQuarantine: a VM disk, a VM's backups directory and a single
// read-only backup are set aside with their data, no longer listed as
// VMs or backups, left alone by Purge (and so by a reopen), listed by
// Quarantine with where they were, and deleted only by PurgeQuarantine once
// they are older than its bound.
func TestQuarantine(t *testing.T) {
	p := btrfstest.NewPool(t, 0)
	ctx := context.Background()
	newImage(t, p, "img", 64<<10)
	for _, vm := range []string{"vm-aaaaaa", "vm-bbbbbb"} {
		if _, err := p.CreateVM(ctx, vm, "img"); err != nil {
			t.Fatal(err)
		}
	}
	for _, bk := range []string{"bk-aaaaaaaaa1", "bk-aaaaaaaaa2"} {
		if _, err := p.Backup(ctx, "vm-aaaaaa", bk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := p.Backup(ctx, "vm-bbbbbb", "bk-bbbbbbbbb1"); err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	if _, err := p.QuarantineVM(ctx, "vm-bbbbbb", day); err != nil {
		t.Fatal(err)
	}
	if _, err := p.QuarantineBackups(ctx, "vm-bbbbbb", day.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := p.QuarantineBackup(ctx, "vm-aaaaaa", "bk-aaaaaaaaa2", day.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if vms, _ := p.VMs(ctx); !slices.Equal(vms, []string{"vm-aaaaaa"}) {
		t.Fatalf("VMs after setting vm-bbbbbb aside = %v", vms)
	}
	if bks, _ := p.Backups(ctx, "vm-aaaaaa"); !slices.Equal(bks, []string{"bk-aaaaaaaaa1"}) {
		t.Fatalf("Backups of vm-aaaaaa after setting one aside = %v", bks)
	}
	if err := p.Purge(ctx); err != nil {
		t.Fatal(err)
	}
	want := []string{"vms/vm-bbbbbb", "backups/vm-bbbbbb", "backups/vm-aaaaaa/bk-aaaaaaaaa2"}
	check := func(want []string) {
		t.Helper()
		q, err := p.Quarantine(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var was []string
		for _, x := range q {
			was = append(was, x.Was)
		}
		if !slices.Equal(was, want) {
			t.Fatalf("Quarantine = %v, want %v", was, want)
		}
	}
	check(want)
	// Their data is all there: 3 disks/snapshots still subvolumes.
	if n := len(subvolumes(t, p)); n != 1+2+3 {
		t.Fatalf("%d subvolumes after setting aside, want 6 (image, 2 VMs, 3 backups): %v", n, subvolumes(t, p))
	}

	done, err := p.PurgeQuarantine(ctx, day.Add(90*time.Minute))
	if err != nil || len(done) != 2 {
		t.Fatalf("PurgeQuarantine = %v, %v; want the two set aside before 01:30", done, err)
	}
	check(want[2:])
	if _, err := p.PurgeQuarantine(ctx, day.Add(3*time.Hour)); err != nil {
		t.Fatal(err)
	}
	check(nil)
	if got := subvolumes(t, p); !slices.Equal(got, []string{"backups/vm-aaaaaa/bk-aaaaaaaaa1", "images/img", "vms/vm-aaaaaa"}) {
		t.Fatalf("subvolumes after purging = %v", got)
	}
}
