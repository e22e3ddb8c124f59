package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// The benchmark box: 10,000 VMs spread over 100 accounts, 10 backups each.
const (
	benchVMs      = 10_000
	benchAccounts = 100
	benchBackups  = 10
)

func benchVMID(i int) string     { return fmt.Sprintf("vm-%06d", i) }
func benchAcctID(i int) string   { return fmt.Sprintf("ac-%06d", i%benchAccounts) }
func benchBkID(vm, j int) string { return fmt.Sprintf("bk-%07d%03d", vm, j) }
func benchVM(i int) model.VM     { return testVM(benchVMID(i), benchAcctID(i), model.StateRunning) }
func benchAt(i, j int) time.Time {
	return t0.Add(-time.Duration(j)*24*time.Hour + time.Duration(i)*time.Second)
}
func benchBk(i, j int) model.Backup { return testBackup(benchBkID(i, j), benchVMID(i), benchAt(i, j)) }

// putBenchVM writes VM i, its account and its backups in one transaction, as
// the appliance does when it creates a VM (the backups come later, one per
// transaction, but the bytes are the same).
func putBenchVM(tx *Tx, i int) error {
	if err := tx.PutVM(benchVM(i)); err != nil {
		return err
	}
	for j := range benchBackups {
		if err := tx.PutBackup(benchBk(i, j)); err != nil {
			return err
		}
	}
	return nil
}

// populate writes the benchmark box into s: one Update per VM, from a few
// goroutines (Badger folds concurrent commits into one synced write).
func populate(tb testing.TB, s *Store, writers int) {
	tb.Helper()
	ctx := context.Background()
	if err := s.Update(ctx, func(tx *Tx) error {
		for a := range benchAccounts {
			if err := tx.PutAccount(testAccount(benchAcctID(a))); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			for i := w; i < benchVMs; i += writers {
				if err := s.Update(ctx, func(tx *Tx) error { return putBenchVM(tx, i) }); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		tb.Fatal(err)
	}
}

var (
	benchDirOnce sync.Once
	benchDir     string
	benchDirErr  error
)

// populatedDir returns a directory holding the benchmark box on disk, built
// once per test binary run and removed by TestMain.
func populatedDir(tb testing.TB) string {
	tb.Helper()
	benchDirOnce.Do(func() {
		dir, err := os.MkdirTemp("", "superjolt-store-bench-")
		if err != nil {
			benchDirErr = err
			return
		}
		benchDir = dir
		s, err := Open(context.Background(), Options{Dir: dir, Logger: quiet})
		if err != nil {
			benchDirErr = err
			return
		}
		populate(tb, s, 16)
		benchDirErr = s.Close()
	})
	if benchDirErr != nil {
		tb.Fatalf("populate the benchmark store: %v", benchDirErr)
	}
	return benchDir
}

func TestMain(m *testing.M) {
	if dir := os.Getenv(rssChildEnv); dir != "" {
		os.Exit(rssChild(dir))
	}
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

// BenchmarkWrite10kVMs writes 10,000 VMs with 10 backups each to a new
// on-disk store with synced writes: one Update per VM from 8 goroutines.
func BenchmarkWrite10kVMs(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		s := openDir(b, b.TempDir())
		b.StartTimer()
		populate(b, s, 8)
		b.StopTimer()
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N*benchVMs), "µs/VM")
}

// openPopulated opens the on-disk benchmark box; closed when b ends.
func openPopulated(b *testing.B) *Store {
	b.Helper()
	s := openDir(b, populatedDir(b))
	b.Cleanup(func() { s.Close() })
	return s
}

// BenchmarkVMsOfAccount lists one account's 100 VMs out of 10,000.
func BenchmarkVMsOfAccount(b *testing.B) {
	s := openPopulated(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		acct := benchAcctID(i)
		i++
		err := s.View(ctx, func(tx *Tx) error {
			vms, err := tx.VMs(VMFilter{AccountID: acct})
			if err == nil && len(vms) != benchVMs/benchAccounts {
				err = fmt.Errorf("%s has %d VMs, want %d", acct, len(vms), benchVMs/benchAccounts)
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackupsOfVM lists one VM's 10 backups, newest first.
func BenchmarkBackupsOfVM(b *testing.B) {
	s := openPopulated(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		vm := benchVMID(i * 7919 % benchVMs)
		i++
		err := s.View(ctx, func(tx *Tx) error {
			bks, err := tx.Backups(vm)
			if err == nil && (len(bks) != benchBackups || bks[0].TakenAt.Before(bks[1].TakenAt)) {
				err = fmt.Errorf("%s: %d backups, not newest first", vm, len(bks))
			}
			return err
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkForEachVM walks all 10,000 VMs, as the scheduler and billing do.
func BenchmarkForEachVM(b *testing.B) {
	s := openPopulated(b)
	ctx := context.Background()
	for b.Loop() {
		n := 0
		err := s.View(ctx, func(tx *Tx) error {
			return tx.ForEachVM(func(model.VM) error { n++; return nil })
		})
		if err != nil || n != benchVMs {
			b.Fatalf("ForEachVM: %d VMs, %v", n, err)
		}
	}
}

// BenchmarkUpdateVM is the billing step: read a VM, change it, write it back,
// synced.
func BenchmarkUpdateVM(b *testing.B) {
	s := openPopulated(b)
	ctx := context.Background()
	i := 0
	for b.Loop() {
		id := benchVMID(i % benchVMs)
		i++
		err := s.Update(ctx, func(tx *Tx) error {
			vm, err := tx.VM(id)
			if err != nil {
				return err
			}
			vm.BilledUntil = vm.BilledUntil.Add(time.Hour)
			return tx.PutVM(vm)
		})
		if err != nil {
			b.Fatal(err)
		}
	}
}

// rssChildEnv names the store directory for the child process that
// BenchmarkOpenRSS runs: it opens the store, reads all of it, and reports its
// peak resident set.
const rssChildEnv = "SUPERJOLT_STORE_RSS_CHILD_DIR"

// BenchmarkOpenRSS reports the peak RSS (VmHWM) of a fresh process that opens
// the populated 10,000-VM store and reads every VM and every backup, and of
// the same process before it opens the store (the Go runtime and the test
// binary alone). One op is one such child process.
func BenchmarkOpenRSS(b *testing.B) {
	dir := populatedDir(b)
	var peak, base float64
	for b.Loop() {
		p, bl, err := runRSSChild(dir)
		if err != nil {
			b.Fatal(err)
		}
		peak, base = max(peak, p), max(base, bl)
	}
	b.ReportMetric(peak, "peak-RSS-MiB")
	b.ReportMetric(base, "base-RSS-MiB")
}

// TestOpenRSSBounded keeps the store's memory honest: a process holding the
// 10,000-VM store open and reading all of it must stay under 96 MiB peak
// RSS (Badger's defaults reach several hundred).
func TestOpenRSSBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("skipped in -short mode: builds a 10,000-VM store on disk (a few seconds)")
	}
	peak, base, err := runRSSChild(populatedDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("peak RSS %.1f MiB (process before opening the store: %.1f MiB)", peak, base)
	if peak > 96 {
		t.Errorf("peak RSS %.1f MiB holding the 10,000-VM store open; want under 96 MiB", peak)
	}
}

func runRSSChild(dir string) (peakMiB, baseMiB float64, err error) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), rssChildEnv+"="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return 0, 0, fmt.Errorf("RSS child: %v\n%s", err, out)
	}
	var peakKB, baseKB float64
	n, err := fmt.Sscanf(lastLine(string(out)), "rss base_kb=%g peak_kb=%g", &baseKB, &peakKB)
	if err != nil || n != 2 {
		return 0, 0, fmt.Errorf("RSS child said %q: %v", out, err)
	}
	return peakKB / 1024, baseKB / 1024, nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// rssChild runs in the child process: open dir, read everything, report.
func rssChild(dir string) int {
	base, err := vmHWM()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Logger: quiet})
	if err != nil {
		fmt.Println(err)
		return 1
	}
	vms, backups := 0, 0
	err = s.View(ctx, func(tx *Tx) error {
		return tx.ForEachVM(func(vm model.VM) error {
			vms++
			bks, err := tx.Backups(vm.ID)
			backups += len(bks)
			return err
		})
	})
	if err == nil {
		for a := range benchAccounts {
			err = s.View(ctx, func(tx *Tx) error { _, err := tx.VMs(VMFilter{AccountID: benchAcctID(a)}); return err })
			if err != nil {
				break
			}
		}
	}
	if err == nil {
		// A synced write, so that a memtable and its WAL are live too.
		err = s.Update(ctx, func(tx *Tx) error {
			vm, err := tx.VM(benchVMID(0))
			if err != nil {
				return err
			}
			return tx.PutVM(vm)
		})
	}
	if err != nil || vms != benchVMs || backups != benchVMs*benchBackups {
		fmt.Printf("read %d VMs and %d backups: %v\n", vms, backups, err)
		return 1
	}
	peak, err := vmHWM()
	if err != nil {
		fmt.Println(err)
		return 1
	}
	if err := s.Close(); err != nil {
		fmt.Println(err)
		return 1
	}
	fmt.Printf("rss base_kb=%d peak_kb=%d\n", base, peak)
	return 0
}

// vmHWM returns the process's peak resident set in KiB.
func vmHWM() (int64, error) {
	f, err := os.Open(filepath.Join("/proc", "self", "status"))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/self/status")
}
