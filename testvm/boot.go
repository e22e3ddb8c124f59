package testvm

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/guest"
)

// Options configure [Boot]. Zero fields take the defaults named beside them.
type Options struct {
	// Name is the machine name. Default: "t-" and a short unique suffix.
	Name string
	// VCPUs and MemoryMiB. Default: 1 vCPU, 192 MiB (QEMU under TCG is CPU-heavy; keep tests small).
	VCPUs     int
	MemoryMiB int
	// Rootfs is the disk the VM boots from. If the file does not exist, the image's rootfs.img is
	// copied there first. Default: a copy in t.TempDir().
	Rootfs string
	// RunDir is the machine's run directory. Default: a fresh directory in t.TempDir() (a long path:
	// vmm moves the sockets somewhere shorter).
	RunDir string
	// Image to boot. Default: [Require]'s cached image.
	Image *images.Image
	// BootTimeout per attempt. Default: 90 s (two VMs booting under TCG on a loaded 2-core box).
	BootTimeout time.Duration
	// Transport and Accel are passed to vmm. Default: what the host has.
	Transport vmm.Transport
	Accel     vmm.Accel
	// Paused starts QEMU with its vCPUs stopped and returns without waiting for the agent.
	Paused bool
	// Hostname, Net and KernelArgs are passed to vmm (see [vmm.Config]): the guest's hostname, its
	// NIC and address, extra kernel command-line words. Default: none (the guest is "superjolt",
	// without a network). A Net's TAP must live in a network namespace the test made.
	Hostname   string
	Net        *vmm.GuestNet
	KernelArgs string
}

// VM is a test guest booted by [Boot].
type VM struct {
	*vmm.QEMU
	// Image booted, and the VM's own disk.
	Image  *images.Image
	Rootfs string
}

// Client returns the connected guest agent client (nil when started paused).
func (v *VM) Client() *guest.Client { return v.QEMU.Agent() }

var (
	imageOnce sync.Once
	image     *images.Image
	imageErr  error
)

// Require skips tb when the host lacks what a test guest needs, and otherwise returns the cached image
// (building it the first time: a few seconds, plus a 27 MB kernel download once).
func Require(tb testing.TB) *images.Image {
	tb.Helper()
	if m := images.Missing(); len(m) > 0 {
		tb.Skipf("test VM needs: %s", strings.Join(m, ", "))
	}
	imageOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		image, imageErr = images.Cached(ctx, images.BuildOptions{Logf: func(f string, a ...any) { tb.Logf("testvm: "+f, a...) }})
	})
	if imageErr != nil {
		tb.Fatalf("testvm: image: %v", imageErr)
	}
	return image
}

var nameSeq struct {
	sync.Mutex
	n int
}

// Boot boots a test guest and returns it with its agent connected. The VM runs under a context that
// ends with the test; the test's cleanup shuts it down (a no-op if the test already did), kills it if
// that fails, and fails the test if QEMU is still there afterwards.
func Boot(tb testing.TB, opts Options) *VM {
	tb.Helper()
	img := opts.Image
	if img == nil {
		img = Require(tb)
	}
	if opts.Name == "" {
		nameSeq.Lock()
		nameSeq.n++
		opts.Name = fmt.Sprintf("t-%d-%d", os.Getpid(), nameSeq.n)
		nameSeq.Unlock()
	}
	if opts.MemoryMiB == 0 {
		opts.MemoryMiB = 192
	}
	if opts.BootTimeout == 0 {
		opts.BootTimeout = 90 * time.Second
	}
	if opts.Rootfs == "" {
		opts.Rootfs = filepath.Join(tb.TempDir(), images.RootfsFile)
	}
	if _, err := os.Stat(opts.Rootfs); os.IsNotExist(err) {
		if err := images.CopyDisk(opts.Rootfs, img.Rootfs); err != nil {
			tb.Fatalf("testvm: copy rootfs: %v", err)
		}
	}
	if opts.RunDir == "" {
		opts.RunDir = filepath.Join(tb.TempDir(), "run")
	}

	life, stop := context.WithCancel(context.Background())
	m, err := vmm.New(life, vmm.Config{
		Name:        opts.Name,
		VCPUs:       opts.VCPUs,
		MemoryMiB:   opts.MemoryMiB,
		Kernel:      img.Kernel,
		Initrd:      img.Initrd,
		Rootfs:      opts.Rootfs,
		RunDir:      opts.RunDir,
		Accel:       opts.Accel,
		Transport:   opts.Transport,
		BootTimeout: opts.BootTimeout,
		Paused:      opts.Paused,
		Hostname:    opts.Hostname,
		Net:         opts.Net,
		KernelArgs:  opts.KernelArgs,
		Logger:      slog.New(tbHandler{tb: tb, level: logLevel(tb)}),
	})
	if err != nil {
		stop()
		tb.Fatal(err)
	}
	vm := &VM{QEMU: m, Image: img, Rootfs: opts.Rootfs}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		if err := m.Shutdown(ctx); err != nil {
			tb.Errorf("testvm: shutdown %s: %v", opts.Name, err)
		}
		cancel()
		m.Kill()
		stop()
		if m.Status() != vmm.StatusStopped && m.Status() != vmm.StatusNew {
			tb.Errorf("testvm: %s still %v after cleanup", opts.Name, m.Status())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 3*opts.BootTimeout)
	defer cancel()
	if err := m.Start(ctx); err != nil {
		tb.Fatalf("testvm: boot %s: %v\nconsole:\n%s", opts.Name, err, tail(m.ConsoleLog(), 4096))
	}
	return vm
}

// Console returns the end of the guest's serial console log, for failure messages.
func (v *VM) Console() string { return tail(v.ConsoleLog(), 4096) }

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// Exec runs a program in the guest and fails the test unless it exits 0. It returns stdout.
func (v *VM) Exec(tb testing.TB, path string, args ...string) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c := v.Client()
	if c == nil {
		tb.Fatalf("testvm: %s has no agent connection", v.Config().Name)
	}
	res, err := c.Exec(ctx, guest.ExecRequest{Path: path, Args: args, Timeout: 50 * time.Second})
	if err != nil {
		tb.Fatalf("testvm: exec %s %v: %v", path, args, err)
	}
	if res.ExitCode != 0 {
		tb.Fatalf("testvm: exec %s %v: exit %d (signal %d, timed out %v)\nstdout: %s\nstderr: %s",
			path, args, res.ExitCode, res.Signal, res.TimedOut, res.Stdout, res.Stderr)
	}
	return string(res.Stdout)
}

// logLevel is Info for tests (their log shows only on failure or with -v) and Warn for benchmarks,
// whose log always shows and would split the result lines.
func logLevel(tb testing.TB) slog.Level {
	if _, ok := tb.(*testing.B); ok {
		return slog.LevelWarn
	}
	return slog.LevelInfo
}

// tbHandler sends slog records to tb.Log, so that a VM's log lines appear with the test that made
// them (and only when it fails or runs with -v).
type tbHandler struct {
	tb    testing.TB
	level slog.Level
	attrs []slog.Attr
}

func (h tbHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }

func (h tbHandler) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	for _, a := range h.attrs {
		b.WriteString(" " + a.String())
	}
	r.Attrs(func(a slog.Attr) bool {
		b.WriteString(" " + a.String())
		return true
	})
	defer func() { recover() }() // a log line after the test ended must not panic
	h.tb.Log(b.String())
	return nil
}

func (h tbHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	h.attrs = append(append([]slog.Attr{}, h.attrs...), attrs...)
	return h
}

func (h tbHandler) WithGroup(string) slog.Handler { return h }
