package appliance

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
)

// yearDays is how many days TestSimulatedYear runs: a year under
// `make test-long` (SUPERJOLT_YEAR_DAYS=365), and by default enough days
// for the history window (30) to roll over twice, which `make test` affords.
func yearDays(t *testing.T) int {
	s := os.Getenv("SUPERJOLT_YEAR_DAYS")
	if s == "" {
		return 65
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 31 {
		t.Fatalf("SUPERJOLT_YEAR_DAYS=%q: give a number of days, at least 31", s)
	}
	return n
}

// yearSample is what the simulated year reports on a checkpoint day.
type yearSample struct {
	day        int
	storeBytes int64         // on disk, allocated blocks of the state directory
	subvolumes int           // images, VMs and backups in the pool
	rssBytes   int64         // the process's resident set after a GC
	pass       time.Duration // wall time of that day's background work
	ledgerRows int           // every account's ledger rows
	events     int
}

// TestSimulatedYear runs the appliance through a year (yearDays) on the
// manual clock: 50 VMs of 10 accounts on a real pool and store (stub
// guests: the VMs' disks are written by the test, a few blocks a day), with
// the daily scheduled backups and their retention, on-demand backups made
// and deleted, monthly top-ups, two accounts that run out of money (one
// tops up within the archive's 24 h and resumes, one lets its VMs be
// reclaimed and starts again), and VMs destroyed and resumed from the
// graveyard or left to be reclaimed and replaced.
//
// Every day it checks that every account's balance is the sum of its
// ledger, and that what the ledger says was charged and forgiven over the
// account's whole life only grows by that day's new entries (folding old
// charges changes no total). On days 1, 30, 180 and 365 (and the last) it
// reports the store's size, the pool's subvolumes, the resident set and the
// day's pass time, and the box must not grow with its age: the store and
// the resident set on the last day are within 2× of day 30's.
func TestSimulatedYear(t *testing.T) {
	btrfstest.Skip(t)
	days := yearDays(t)
	e := newEnv(t, envOptions{poolSize: 2 << 30})
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(14, 365))

	const accounts, vmsPerAccount = 10, 5
	type account struct {
		id       string
		poor     bool // runs out of money now and then
		lapses   bool // when it runs out, lets its VMs be reclaimed
		topups   model.Micro
		brokeDay int // the day its VMs were archived (0: not archived)
	}
	var accts []*account
	// nano costs 5,000 micro-credits an hour: 0.6 credits a day for five.
	for i := range accounts {
		a := &account{poor: i >= 8, lapses: i == 9}
		balance := 30 * model.Credit
		if a.poor {
			balance = 6 * model.Credit // ten days
		}
		a.id = e.account(fmt.Sprintf("year-%d", i), balance, i%5+1).ID
		a.topups = balance
		accts = append(accts, a)
	}
	vmsOf := map[string][]string{}
	create := func(a *account) {
		vm := e.vm(a.id)
		vmsOf[a.id] = append(vmsOf[a.id], vm.ID)
	}
	for _, a := range accts {
		for range vmsPerAccount {
			create(a)
		}
	}

	// totals are what an account's ledger says over its whole life.
	type totals struct{ charged, forgiven, credited model.Micro }
	ledgerOf := func(id string) (totals, []model.LedgerEntry) {
		var rows []model.LedgerEntry
		if err := e.st.View(ctx, func(tx *store.Tx) error {
			var err error
			rows, err = tx.Ledger(id, 0)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		var tot totals
		for _, r := range rows {
			if r.Kind == model.Charge {
				tot.charged -= r.Amount
				tot.forgiven += r.Forgiven
			} else {
				tot.credited += r.Amount
			}
		}
		return tot, rows
	}
	maxSeq := func(rows []model.LedgerEntry) uint64 {
		var m uint64
		for _, r := range rows {
			m = max(m, r.Seq)
		}
		return m
	}
	before := map[string]totals{}
	seqBefore := map[string]uint64{}
	for _, a := range accts {
		tot, rows := ledgerOf(a.id)
		before[a.id], seqBefore[a.id] = tot, maxSeq(rows)
	}

	var onDemand []model.Backup
	var graveyard []string // destroyed yesterday, to resume today
	var samples []yearSample
	checkpoints := map[int]bool{1: true, 30: true, 180: true, 365: true, days: true}
	for day := 1; day <= days; day++ {
		// The tenants' day, before the background work.
		for _, a := range accts {
			switch {
			case day%30 == 0 && !a.poor:
				if _, err := e.a.TopUp(ctx, a.id, 18*model.Credit); err != nil {
					t.Fatalf("day %d: top up %s: %v", day, a.id, err)
				}
				a.topups += 18 * model.Credit
			case a.brokeDay != 0 && !a.lapses:
				// Tops up within the archive's 24 h and resumes everything.
				if _, err := e.a.TopUp(ctx, a.id, 6*model.Credit); err != nil {
					t.Fatal(err)
				}
				a.topups += 6 * model.Credit
				for _, id := range vmsOf[a.id] {
					if vm, err := e.a.VM(ctx, id); err == nil && vm.State == model.StateArchived {
						if _, err := e.a.ResumeVM(ctx, id); err != nil {
							t.Fatalf("day %d: resume archived %s: %v", day, id, err)
						}
					}
				}
				a.brokeDay = 0
			case a.brokeDay != 0 && day >= a.brokeDay+2:
				// Its archived VMs were reclaimed; it comes back with new ones.
				if _, err := e.a.TopUp(ctx, a.id, 6*model.Credit); err != nil {
					t.Fatal(err)
				}
				a.topups += 6 * model.Credit
				vmsOf[a.id] = nil
				for range vmsPerAccount {
					create(a)
				}
				a.brokeDay = 0
			}
		}
		for _, id := range graveyard {
			if _, err := e.a.ResumeVM(ctx, id); err != nil {
				t.Fatalf("day %d: resume %s from the graveyard: %v", day, id, err)
			}
		}
		graveyard = nil
		rich := accts[rng.IntN(8)]
		if day%5 == 0 {
			ids := vmsOf[rich.id]
			if bk, err := e.a.CreateBackup(ctx, ids[rng.IntN(len(ids))]); err == nil {
				onDemand = append(onDemand, bk)
			} else if !errors.Is(err, model.ErrConflict) {
				t.Fatalf("day %d: on-demand backup: %v", day, err)
			}
		}
		for len(onDemand) > 0 && e.clk.Now().Sub(onDemand[0].TakenAt) > 20*24*time.Hour {
			if err := e.a.DeleteBackup(ctx, onDemand[0].ID); err != nil && !errors.Is(err, model.ErrNotFound) {
				t.Fatalf("day %d: delete backup %s: %v", day, onDemand[0].ID, err)
			}
			onDemand = onDemand[1:]
		}
		// The guests write a little every day.
		for _, ids := range vmsOf {
			for _, id := range ids {
				writeDisk(t, e, id, rng)
			}
		}

		start := time.Now()
		e.advance(12 * time.Hour)
		pass := time.Since(start)
		// At noon (a VM destroyed at midnight would be reclaimed by the
		// next midnight's pass, before its resume):
		switch {
		case day%7 == 0: // destroyed, resumed tomorrow
			ids := vmsOf[rich.id]
			id := ids[rng.IntN(len(ids))]
			if _, err := e.a.DestroyVM(ctx, id); err != nil {
				t.Fatalf("day %d: destroy %s: %v", day, id, err)
			}
			graveyard = append(graveyard, id)
		case day%11 == 0: // destroyed for good: reclaimed after 24 h, replaced now
			ids := vmsOf[rich.id]
			i := rng.IntN(len(ids))
			if _, err := e.a.DestroyVM(ctx, ids[i]); err != nil {
				t.Fatalf("day %d: destroy %s: %v", day, ids[i], err)
			}
			vmsOf[rich.id] = append(ids[:i:i], ids[i+1:]...)
			create(rich)
		}
		start = time.Now()
		e.advance(12 * time.Hour)
		pass += time.Since(start)

		for _, a := range accts {
			acct, err := e.a.Account(ctx, a.id)
			if err != nil {
				t.Fatal(err)
			}
			tot, rows := ledgerOf(a.id)
			var sum model.Micro
			var fresh totals
			for _, r := range rows {
				sum += r.Amount
				if r.Seq > seqBefore[a.id] {
					if r.Kind == model.Charge {
						fresh.charged -= r.Amount
						fresh.forgiven += r.Forgiven
					} else {
						fresh.credited += r.Amount
					}
				}
			}
			if sum != acct.Balance {
				t.Fatalf("day %d: %s has a balance of %s but its ledger sums to %s", day, a.id, acct.Balance, sum)
			}
			lt, err := e.a.LedgerTotals(ctx, a.id)
			if err != nil {
				t.Fatal(err)
			}
			if lt.Sum != acct.Balance || lt.Charged != tot.charged || lt.Forgiven != tot.forgiven || lt.ToppedUp+lt.Adjusted != tot.credited {
				t.Fatalf("day %d: %s's ledger totals %+v; its entries add up to %+v and its balance is %s", day, a.id, lt, tot, acct.Balance)
			}
			if tot.credited != a.topups {
				t.Fatalf("day %d: %s's ledger credits %s, the test topped up %s", day, a.id, tot.credited, a.topups)
			}
			b := before[a.id]
			if want := (totals{b.charged + fresh.charged, b.forgiven + fresh.forgiven, b.credited + fresh.credited}); tot != want {
				t.Fatalf("day %d: %s's whole-life ledger totals %+v; yesterday's plus today's new entries are %+v", day, a.id, tot, want)
			}
			before[a.id], seqBefore[a.id] = tot, max(seqBefore[a.id], maxSeq(rows))
			if a.brokeDay == 0 && acct.Balance == 0 {
				a.brokeDay = day
			}
		}

		if checkpoints[day] {
			s := yearSample{day: day, pass: pass, storeBytes: diskUsage(t, filepath.Join(e.stateDir, "db")), rssBytes: rss(t)}
			st, err := e.pool.Status(ctx)
			if err != nil {
				t.Fatal(err)
			}
			s.subvolumes = st.Images.Count + st.VMs.Count + st.Backups.Count
			if err := e.st.View(ctx, func(tx *store.Tx) error {
				evs, err := tx.EventsAfter(0, 0)
				s.events = len(evs)
				return err
			}); err != nil {
				t.Fatal(err)
			}
			for _, a := range accts {
				_, rows := ledgerOf(a.id)
				s.ledgerRows += len(rows)
			}
			samples = append(samples, s)
			t.Logf("day %3d: store %6.1f MiB, %4d subvolumes, RSS %6.1f MiB, pass %7.2fs, %6d ledger rows, %6d events",
				s.day, float64(s.storeBytes)/(1<<20), s.subvolumes, float64(s.rssBytes)/(1<<20), s.pass.Seconds(), s.ledgerRows, s.events)
		}
	}
	e.checkConsistent()

	var d30, last yearSample
	for _, s := range samples {
		if s.day == 30 {
			d30 = s
		}
		last = s
	}
	if last.storeBytes > 2*d30.storeBytes {
		t.Errorf("the store takes %d bytes on day %d, more than twice day 30's %d", last.storeBytes, last.day, d30.storeBytes)
	}
	if last.rssBytes > 2*d30.rssBytes {
		t.Errorf("the resident set is %d bytes on day %d, more than twice day 30's %d", last.rssBytes, last.day, d30.rssBytes)
	}
	if last.ledgerRows > 2*d30.ledgerRows {
		t.Errorf("the ledger holds %d rows on day %d, more than twice day 30's %d", last.ledgerRows, last.day, d30.ledgerRows)
	}
	if last.events > 2*d30.events {
		t.Errorf("the event log holds %d events on day %d, more than twice day 30's %d", last.events, last.day, d30.events)
	}
}

// writeDisk writes a 4 KiB block at a random place of the VM's disk, as
// a guest would, if the VM has a disk in the pool (not reclaimed).
func writeDisk(t *testing.T, e *env, id string, rng *rand.Rand) {
	t.Helper()
	dir, err := e.pool.VMPath(id)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(filepath.Join(dir, RootfsFile), os.O_WRONLY, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = byte(rng.Uint32())
	}
	if _, err := f.WriteAt(buf, int64(rng.IntN(16))*4096); err != nil {
		t.Fatal(err)
	}
}

// diskUsage is what the files under dir take on disk (allocated blocks).
func diskUsage(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// rss is the process's resident set, after returning what it can to the
// system.
func rss(t *testing.T) int64 {
	t.Helper()
	debug.FreeOSMemory()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}
