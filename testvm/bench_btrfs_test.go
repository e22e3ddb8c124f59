//go:build linux && cgo

package testvm_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/superjolt/superjolt/testvm"
)

// BenchmarkFrozenWindow measures how long the guest's filesystems stay frozen while a backup is taken:
// freeze, read-only snapshot of the VM's subvolume, thaw, 20 times per op with fresh unsynced data in
// the guest before each. frozen-median-ms and frozen-worst-ms span the freeze's answer to the thaw's
// answer (the guest is frozen at least that long, and longer by at most one ping round trip); ns/op
// is one whole freeze+snapshot+thaw.
func BenchmarkFrozenWindow(b *testing.B) {
	const vmID, cycles = "vm-bench1", 20
	pool, img := poolVM(b, vmID)
	vm := testvm.Boot(b, testvm.Options{Image: img, Rootfs: img.Rootfs})
	c := vm.Client()
	ctx := context.Background()
	var frozen []time.Duration
	for i := 0; b.Loop(); i++ {
		for j := 0; j < cycles; j++ {
			b.StopTimer()
			vm.Exec(b, "dd", "if=/dev/urandom", "of=/data/churn", "bs=64k", "count=16", "conv=notrunc")
			b.StartTimer()
			if _, err := c.Freeze(ctx, 30*time.Second); err != nil {
				b.Fatal(err)
			}
			frozenAt := time.Now()
			_, snapErr := pool.Backup(ctx, vmID, fmt.Sprintf("bk-%d-%d", i, j))
			if err := c.Thaw(ctx); err != nil {
				b.Fatal(err)
			}
			frozen = append(frozen, time.Since(frozenAt))
			if snapErr != nil {
				b.Fatal(snapErr)
			}
		}
	}
	med, worst := medianWorst(frozen)
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(len(frozen)), "ns/op")
	b.ReportMetric(med, "frozen-median-ms")
	b.ReportMetric(worst, "frozen-worst-ms")
}
