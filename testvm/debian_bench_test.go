package testvm_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/testvm"
)

// Distribution images under TCG (issue 12): run one iteration at a time,
// several times, and compare medians:
//
//	go test -run '^$' -bench 'DebianImage|BootImage' -benchtime=1x -count 5 ./testvm/
//
// (one iteration a run: -benchtime=1x).

// debianRecipe is what the benchmarks build: the image the consistency
// proof uses.
func debianOptions(b *testing.B, cache string) images.DebianOptions {
	b.Helper()
	rec, err := images.RecipeNamed("debian-12")
	if err != nil {
		b.Fatal(err)
	}
	agent := filepath.Join(b.TempDir(), "superjolt-agent")
	if err := images.BuildAgent(context.Background(), "", agent); err != nil {
		b.Fatal(err)
	}
	return images.DebianOptions{Recipe: rec, Packages: []string{"postgresql"}, Agent: agent, CacheDir: cache, TempDir: b.TempDir()}
}

// BenchmarkDebianImageBuild measures `image build debian-12 --packages
// postgresql` in package images: cold (mmdebstrap installs from the
// archive into an empty cache, then the import) and cached (the installed
// system is in the cache: the import alone).
func BenchmarkDebianImageBuild(b *testing.B) {
	if testing.Short() || images.Missing() != nil {
		b.Skip("needs the image tools and the Debian archive")
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			opts := debianOptions(b, b.TempDir())
			dir := b.TempDir()
			b.StartTimer()
			if _, err := images.BuildDebian(context.Background(), dir, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		opts := debianOptions(b, "")
		if _, err := images.DebianTarball(context.Background(), opts); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			b.StartTimer()
			if _, err := images.BuildDebian(context.Background(), dir, opts); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBootImage measures QEMU start to agent ready for the Debian 12
// image (systemd, the agent a unit of it) beside the built-in image (the
// agent as PID 1), in one run; systemd-running-ms is, for Debian, the
// time until `systemctl is-system-running --wait` says running.
func BenchmarkBootImage(b *testing.B) {
	builtin := testvm.Require(b)
	opts := debianOptions(b, "")
	deb, err := images.BuildDebian(context.Background(), filepath.Join(b.TempDir(), "debian"), opts)
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		img  *images.Image
		mem  int
	}{{"builtin", builtin, 192}, {"debian-12", deb, 512}} {
		b.Run(c.name, func(b *testing.B) {
			var running time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				disk := filepath.Join(b.TempDir(), "rootfs.img")
				if err := images.CopyDisk(disk, c.img.Rootfs); err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				b.StartTimer()
				vm := testvm.Boot(b, testvm.Options{Image: c.img, Rootfs: disk, MemoryMiB: c.mem, BootTimeout: 3 * time.Minute})
				b.StopTimer()
				if c.img.Init != "" {
					vm.Exec(b, "/bin/systemctl", "is-system-running", "--wait")
					running += time.Since(start)
				}
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				vm.Shutdown(ctx)
				cancel()
				os.Remove(disk)
				b.StartTimer()
			}
			if running > 0 {
				b.ReportMetric(ms(running)/float64(b.N), "systemd-running-ms")
			}
		})
	}
}
