package appliance

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/guest"
	"github.com/superjolt/superjolt/testvm"
)

// putVMs stores n VMs of acct in state st directly (no process, no
// address), with disks in the pool when disks is set.
func putVMs(b *testing.B, e *env, acctIDs []string, n int, st model.VMState, disks bool) []string {
	b.Helper()
	ctx := context.Background()
	ids := make([]string, 0, n)
	now := e.clk.Now()
	for start := 0; start < n; start += 500 {
		err := e.st.Update(ctx, func(tx *store.Tx) error {
			ids = ids[:start]
			for i := start; i < min(start+500, n); i++ {
				id, err := tx.NewID(model.KindVM)
				if err != nil {
					return err
				}
				vm := model.VM{ID: id, AccountID: acctIDs[i%len(acctIDs)], Name: id, Tier: "nano", Image: DefaultImage,
					State: st, CreatedAt: now, BilledUntil: now, NextBackupAt: now, Ports: []model.Port{}, Domains: []string{}}
				if err := tx.PutVM(vm); err != nil {
					return err
				}
				ids = append(ids, id)
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	if disks {
		for _, id := range ids {
			if _, err := e.pool.CreateVM(ctx, id, DefaultImage); err != nil {
				b.Fatal(err)
			}
		}
	}
	return ids
}

// BenchmarkSchedulerPass: one scheduler pass over 1,000 stopped VMs, when
// every one is due (1,000 offline backups; with retention 1, from the
// second pass on each also prunes the VM's previous backup, so the pool
// stays at 1,000 VMs and about 1,000 backups however many passes run) and
// when none is (the scan alone). Btrfs snapshots get slower as a pool
// holds more subvolumes (quota groups), so a pool at retention 5 is slower.
func BenchmarkSchedulerPass(b *testing.B) {
	e := newEnv(b, envOptions{poolSize: 4 << 30})
	acct := e.account("bench", 1_000_000*model.Credit, 1)
	putVMs(b, e, []string{acct.ID}, 1000, model.StateStopped, true)
	ctx := context.Background()
	b.Run("all-due", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			now := e.clk.Advance(24 * time.Hour)
			b.StartTimer()
			if err := e.a.schedulerPass(ctx, now); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "µs/vm")
	})
	b.Run("none-due", func(b *testing.B) {
		now := e.clk.Now()
		for b.Loop() {
			if err := e.a.schedulerPass(ctx, now); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBillingPass: one billing period over 10,000 running VMs of 100
// accounts (10,000 ledger entries, 10,000 billing rows rewritten, in three
// transactions). Bytes per op grow with the iterations: Badger's
// compactions, counted here, rewrite the ledger that earlier ones booked.
func BenchmarkBillingPass(b *testing.B) {
	e := newEnv(b, envOptions{})
	var accts []string
	for i := range 100 {
		accts = append(accts, e.account(fmt.Sprintf("bench-%d", i), 1_000_000*model.Credit, 0).ID)
	}
	putVMs(b, e, accts, 10_000, model.StateRunning, false)
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		now := e.clk.Advance(BillingPeriod)
		b.StartTimer()
		if err := e.a.billingPass(ctx, now); err != nil {
			b.Fatal(err)
		}
	}
}

// bigDiskImage copies the test image with its root filesystem grown to 3 GiB.
func bigDiskImage(img *images.Image) func(ctx context.Context, dir string) error {
	return func(ctx context.Context, dir string) error {
		if err := copyImage(dir, img); err != nil {
			return err
		}
		rootfs := filepath.Join(dir, RootfsFile)
		if err := os.Truncate(rootfs, 3<<30); err != nil {
			return err
		}
		if out, err := exec.CommandContext(ctx, "e2fsck", "-fy", rootfs).CombinedOutput(); err != nil && exitCode(err) > 1 {
			return fmt.Errorf("e2fsck: %v: %s", err, out)
		}
		if out, err := exec.CommandContext(ctx, "resize2fs", rootfs).CombinedOutput(); err != nil {
			return fmt.Errorf("resize2fs: %v: %s", err, out)
		}
		return nil
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	return -1
}

// BenchmarkBackup1GiB: a backup of a running real guest holding 1 GiB of
// written data (total time, and the time the guest stays frozen), beside a
// full copy of its disk, and a restore without the boot.
func BenchmarkBackup1GiB(b *testing.B) {
	img := testvm.Require(b)
	e := newEnv(b, envOptions{realVMs: true, poolSize: 8 << 30, imageFill: bigDiskImage(img)})
	ctx := context.Background()
	acct := e.account("bench", 1_000_000*model.Credit, 0)
	vm := e.vm(acct.ID)
	res, err := e.a.Exec(ctx, vm.ID, guest.ExecRequest{Path: "sh", Args: []string{"-c",
		"dd if=/dev/urandom of=/data/big bs=1M count=1024 2>&1 && sync && df -k /data"}, Timeout: model.MaxExecTimeout})
	if err != nil || res.ExitCode != 0 {
		b.Fatalf("write 1 GiB in the guest: %v exit %d %s %s", err, res.ExitCode, res.Stdout, res.Stderr)
	}
	b.Logf("guest: %s", res.Stdout)

	b.Run("backup-running", func(b *testing.B) {
		var frozen, total []time.Duration
		for b.Loop() {
			_, st, err := e.a.takeBackup(ctx, vm.ID, model.OnDemand)
			if err != nil {
				b.Fatal(err)
			}
			frozen, total = append(frozen, st.Frozen), append(total, st.Total)
			// Dirty a little, as a live guest would.
			b.StopTimer()
			e.guestExec(vm.ID, "dd if=/dev/urandom of=/data/small bs=64k count=16 2>/dev/null && sync")
			b.StartTimer()
		}
		b.ReportMetric(median(total), "median-ms/op")
		b.ReportMetric(median(frozen), "median-ms-frozen/op")
	})
	dir, _ := e.pool.VMPath(vm.ID)
	b.Run("full-copy", func(b *testing.B) {
		dst := filepath.Join(e.pool.Root(), "copy.img")
		var took []time.Duration
		for b.Loop() {
			t := time.Now()
			if err := fullCopy(dst, filepath.Join(dir, RootfsFile)); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(t))
		}
		b.ReportMetric(median(took), "median-ms/op")
		os.Remove(dst)
	})
	bks, err := e.a.Backups(ctx, vm.ID)
	if err != nil || len(bks) == 0 {
		b.Fatalf("no backup: %v", err)
	}
	if _, err := e.a.StopVM(ctx, vm.ID); err != nil {
		b.Fatal(err)
	}
	b.Run("restore-no-boot", func(b *testing.B) {
		var took []time.Duration
		for b.Loop() {
			t := time.Now()
			if _, err := e.a.RestoreVM(ctx, vm.ID, bks[0].ID); err != nil {
				b.Fatal(err)
			}
			took = append(took, time.Since(t))
		}
		b.ReportMetric(median(took), "median-ms/op")
	})
}

// fullCopy copies src to dst byte for byte (no reflink, no holes skipped)
// and syncs it: what a backup without snapshots would cost.
func fullCopy(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(struct{ io.Writer }{out}, struct{ io.Reader }{in}, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// median returns the median of ds in milliseconds.
func median(ds []time.Duration) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return float64(s[len(s)/2].Microseconds()) / 1000
}

// BenchmarkAdvance30d: `superjolt debug clock advance 30d` on an appliance
// with 10 running VMs (stub guests, a real pool) of two accounts, one of
// which runs out of credit on the way (archival) and one that does not
// (30 daily backups each, retention 1). Each op is a fresh appliance.
func BenchmarkAdvance30d(b *testing.B) {
	ctx := context.Background()
	var took []time.Duration
	for b.Loop() {
		b.StopTimer()
		e := newEnv(b, envOptions{})
		rich := e.account("rich", 1_000_000*model.Credit, 1)
		poor := e.account("poor", 3*model.Credit, 1)
		for i := range 10 {
			if i%5 == 4 {
				e.vm(poor.ID)
			} else {
				e.vm(rich.ID)
			}
		}
		b.StartTimer()
		t := time.Now()
		if _, err := e.a.AdvanceClock(ctx, 30*24*time.Hour); err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t))
		b.StopTimer()
		e.close()
		b.StartTimer()
	}
	b.ReportMetric(median(took), "median-ms/op")
}
