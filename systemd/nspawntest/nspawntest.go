// Package nspawntest boots a throwaway real systemd in systemd-nspawn for
// tests, on a machine whose PID 1 need not be systemd: the host's own /usr,
// read-only, with a fresh /etc, /var and /run on tmpfs (--volatile=yes).
//
// A test that needs systemd boots a container with Boot and either runs
// commands in it (Run, which enters all its namespaces) or re-runs itself
// inside it (RunTest), where Inside reports true and the code under test
// talks to the container's systemd through its usual paths.
//
// See ../../../shared/notes/systemd-in-tests.md for what was measured.
package nspawntest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// EnvInside is set to 1 in the environment of a test binary that RunTest runs
// inside a container.
const EnvInside = "SUPERJOLT_IN_SYSTEMD"

// Inside reports whether this process is a test binary that RunTest started
// inside a container.
func Inside() bool { return os.Getenv(EnvInside) == "1" }

// Options configure a container. The zero value boots one that shares the
// host's network and sees the test binary's directory.
type Options struct {
	// PrivateNetwork gives the container its own network namespace (only a
	// loopback interface).
	PrivateNetwork bool
	// Binds and BindsRO are host paths made visible in the container,
	// read-write and read-only: "PATH" (the same path inside) or
	// "HOST:CONTAINER", as systemd-nspawn's --bind and --bind-ro take them.
	// The test binary's own directory is always bound read-only (RunTest).
	Binds, BindsRO []string
	// BootTimeout bounds the boot until systemd is running; 0 means 60s.
	BootTimeout time.Duration
}

// Container is a booted systemd in systemd-nspawn.
type Container struct {
	name   string
	pid    int // the container's PID 1, as the host sees it
	cmd    *exec.Cmd
	exited chan struct{} // closed when systemd-nspawn has exited
	cgroup []string      // the cgroup directories made for it, one per hierarchy
	out    *syncBuffer   // systemd-nspawn's output and the container's console
	once   sync.Once
	err    error
}

var seq atomic.Int64

// Boot boots a container and waits until its systemd is up ("running" or
// "degraded"); tb's cleanup powers it off and removes its cgroups. It skips
// tb when not root or when systemd-nspawn or nsenter is missing.
func Boot(tb testing.TB, opts Options) *Container {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("nspawntest: needs root to boot systemd in systemd-nspawn")
	}
	for _, bin := range []string{"systemd-nspawn", "nsenter"} {
		if _, err := exec.LookPath(bin); err != nil {
			tb.Skipf("nspawntest: %s is missing (apt-get install systemd-container util-linux; or scripts/install-deps)", bin)
		}
	}
	if _, err := os.Stat("/usr/lib/systemd/systemd"); err != nil {
		tb.Skip("nspawntest: /usr/lib/systemd/systemd is missing (apt-get install systemd)")
	}
	timeout := opts.BootTimeout
	if timeout <= 0 {
		timeout = 60 * time.Second
	}
	c := &Container{
		name:   fmt.Sprintf("sjtest-%d-%d", os.Getpid(), seq.Add(1)),
		exited: make(chan struct{}),
		out:    &syncBuffer{},
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Poweroff(ctx); err != nil {
			tb.Errorf("nspawntest: power off %s: %v", c.name, err)
		}
		c.removeCgroups(tb)
	})
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.start(ctx, opts); err != nil {
		tb.Fatalf("nspawntest: boot %s: %v\n--- systemd-nspawn's output:\n%s", c.name, err, c.out.String())
	}
	return c
}

func (c *Container) start(ctx context.Context, opts Options) error {
	// Its own cgroup in each hierarchy that systemd-nspawn uses: else it
	// leaves its payload and supervisor cgroups at the root.
	for _, h := range []string{"/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
		if !isCgroupRoot(h) {
			continue
		}
		dir := filepath.Join(h, c.name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		c.cgroup = append(c.cgroup, dir)
		if h == "/sys/fs/cgroup" { // cgroup v2 only
			break
		}
	}
	args := []string{"-q", "-D", "/", "--volatile=yes", "--boot", "--register=no", "--keep-unit",
		"--console=pipe", "--machine=" + c.name}
	if opts.PrivateNetwork {
		args = append(args, "--private-network")
	}
	if exe, err := os.Executable(); err == nil {
		args = append(args, "--bind-ro="+filepath.Dir(exe))
	}
	for _, b := range opts.Binds {
		args = append(args, "--bind="+b)
	}
	for _, b := range opts.BindsRO {
		args = append(args, "--bind-ro="+b)
	}
	args = append(args, "systemd.mask=systemd-firstboot.service")

	// A shell joins the cgroups and execs systemd-nspawn, so that nothing
	// of this test process moves.
	script := `for d in $SJ_CGROUPS; do echo $$ > "$d/cgroup.procs" || exit 1; done; unset SJ_CGROUPS; exec systemd-nspawn "$@"`
	c.cmd = exec.Command("/bin/sh", append([]string{"-c", script, "sh"}, args...)...)
	c.cmd.Env = append(cleanEnv(), "SJ_CGROUPS="+strings.Join(c.cgroup, " "))
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := c.cmd.Start(); err != nil {
		return err
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()

	// The container's PID 1 is systemd-nspawn's child; it is up for clients
	// once its private socket exists.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	// systemd-nspawn forks helpers before the container's init: look again
	// until the child is systemd.
	for c.pid == 0 || !isSystemd(c.pid) || !exists(fmt.Sprintf("/proc/%d/root/run/systemd/private", c.pid)) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("systemd did not come up: %w", ctx.Err())
		case <-c.exited:
			return fmt.Errorf("systemd-nspawn exited: %v", c.err)
		case <-tick.C:
		}
		c.pid = childOf(c.cmd.Process.Pid)
	}
	out, err := c.Run(ctx, "systemctl", "is-system-running", "--wait")
	state := strings.TrimSpace(out)
	if state == "running" || state == "degraded" {
		return nil
	}
	if err == nil {
		err = fmt.Errorf("system state %q", state)
	}
	failed, _ := c.Run(context.Background(), "systemctl", "--failed", "--no-pager")
	return fmt.Errorf("%w\n%s", err, failed)
}

// PID returns the container's PID 1 as the host sees it.
func (c *Container) PID() int { return c.pid }

// Name returns the container's machine name (also its host name).
func (c *Container) Name() string { return c.name }

// Root returns the container's root directory as the host sees it.
func (c *Container) Root() string { return fmt.Sprintf("/proc/%d/root", c.pid) }

// Run runs a command in the container (in all its namespaces, with a clean
// environment; use `env K=V cmd` to add to it) and returns its output,
// stdout and stderr together. A failing command's error holds its output.
func (c *Container) Run(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", strconv.Itoa(c.pid), "-a", "--wdns=/", "--"}, args...)...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// RunTest re-runs this test binary inside the container with only the test
// called name (the top-level test's name; its subtests run too), where
// Inside reports true, and fails tb with the inner run's output when it
// fails. The inner run's output is logged when the test is verbose.
func (c *Container) RunTest(ctx context.Context, tb testing.TB, name string) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	args := []string{"env", EnvInside + "=1", exe, "-test.run=^" + name + "$", "-test.count=1"}
	if testing.Verbose() {
		args = append(args, "-test.v")
	}
	out, err := c.Run(ctx, args...)
	if err != nil {
		tb.Fatalf("inside the container: %v", err)
	}
	if testing.Verbose() {
		tb.Logf("inside the container:\n%s", out)
	}
	if strings.Contains(out, "no tests to run") {
		tb.Fatalf("inside the container: no test matched %s:\n%s", name, out)
	}
}

// Poweroff powers the container off and waits until systemd-nspawn has
// exited; when ctx ends first, it kills the container. Calling it again
// returns the first result.
func (c *Container) Poweroff(ctx context.Context) error {
	var err error
	c.once.Do(func() {
		if c.cmd == nil || c.cmd.Process == nil {
			return
		}
		// systemd-nspawn turns SIGTERM into a clean poweroff of the
		// container.
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
			return
		case <-ctx.Done():
		}
		err = fmt.Errorf("did not power off: %w; killed it", ctx.Err())
		if c.pid > 0 {
			_ = syscall.Kill(c.pid, syscall.SIGKILL) // ends its PID namespace
		}
		_ = syscall.Kill(-c.cmd.Process.Pid, syscall.SIGKILL)
		<-c.exited
	})
	return err
}

// Output returns what systemd-nspawn and the container's console printed.
func (c *Container) Output() string { return c.out.String() }

// removeCgroups removes the container's cgroup trees, deepest first.
func (c *Container) removeCgroups(tb testing.TB) {
	for _, root := range c.cgroup {
		var dirs []string
		_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			var err error
			for try := 0; try < 50; try++ { // the last processes may take a moment to go
				if err = os.Remove(dirs[i]); err == nil || errors.Is(err, os.ErrNotExist) {
					err = nil
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err != nil {
				tb.Logf("nspawntest: remove cgroup %s: %v", dirs[i], err)
			}
		}
	}
}

// isCgroupRoot reports whether dir is a mounted cgroup hierarchy.
func isCgroupRoot(dir string) bool {
	return exists(filepath.Join(dir, "cgroup.procs"))
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// isSystemd reports whether process pid runs systemd.
func isSystemd(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return err == nil && strings.TrimSpace(string(b)) == "systemd"
}

// childOf returns a child of process pid, 0 if none yet.
func childOf(pid int) int {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		if f := strings.Fields(string(b)); len(f) > 0 {
			n, _ := strconv.Atoi(f[0])
			return n
		}
	}
	return 0
}

// cleanEnv is the environment of commands run for a container: nothing of
// the test's own (NOTIFY_SOCKET, INVOCATION_ID, ...) leaks in.
func cleanEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"}
}

// syncBuffer is a bytes.Buffer that two goroutines may write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
