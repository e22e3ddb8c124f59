package testvm_test

import (
	"context"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/testvm"
)

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// BenchmarkBoot measures QEMU start to agent ready (ns/op) and, as shutdown-ms, agent shutdown to QEMU
// exit.
func BenchmarkBoot(b *testing.B) {
	img := testvm.Require(b)
	var shutdown time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		disk := filepath.Join(b.TempDir(), "rootfs.img")
		if err := images.CopyDisk(disk, img.Rootfs); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		vm := testvm.Boot(b, testvm.Options{Rootfs: disk})
		b.StopTimer()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		start := time.Now()
		if err := vm.Shutdown(ctx); err != nil {
			b.Fatal(err)
		}
		shutdown += time.Since(start)
		cancel()
		b.StartTimer()
	}
	b.ReportMetric(ms(shutdown)/float64(b.N), "shutdown-ms")
}

// The benchmarks below boot their VM once, before b.Loop: with a b.N loop every round would boot
// another one.

// BenchmarkPing measures one agent ping round trip over the VM's transport; median-ms and worst-ms are
// over the single pings of the run.
func BenchmarkPing(b *testing.B) {
	vm := testvm.Boot(b, testvm.Options{})
	c := vm.Client()
	ctx := context.Background()
	var rtts []time.Duration
	for b.Loop() {
		start := time.Now()
		if _, err := c.Ping(ctx); err != nil {
			b.Fatal(err)
		}
		rtts = append(rtts, time.Since(start))
	}
	med, worst := medianWorst(rtts)
	b.ReportMetric(med, "median-ms")
	b.ReportMetric(worst, "worst-ms")
}

// BenchmarkFreezeThaw measures a freeze round trip (sync and FIFREEZE of every writable filesystem),
// reported as ns/op (median-ms and worst-ms over the run's freezes), and the thaw that follows it, as
// thaw-ms.
func BenchmarkFreezeThaw(b *testing.B) {
	vm := testvm.Boot(b, testvm.Options{})
	c := vm.Client()
	ctx := context.Background()
	var thaw time.Duration
	var freezes []time.Duration
	n := 0
	for b.Loop() {
		n++
		start := time.Now()
		if _, err := c.Freeze(ctx, 30*time.Second); err != nil {
			b.Fatal(err)
		}
		freezes = append(freezes, time.Since(start))
		b.StopTimer()
		start = time.Now()
		if err := c.Thaw(ctx); err != nil {
			b.Fatal(err)
		}
		thaw += time.Since(start)
		b.StartTimer()
	}
	med, worst := medianWorst(freezes)
	b.ReportMetric(med, "median-ms")
	b.ReportMetric(worst, "worst-ms")
	b.ReportMetric(ms(thaw)/float64(n), "thaw-ms")
}

// medianWorst returns the median and the largest of ds in milliseconds.
func medianWorst(ds []time.Duration) (float64, float64) {
	s := slices.Clone(ds)
	slices.Sort(s)
	return ms(s[len(s)/2]), ms(s[len(s)-1])
}
