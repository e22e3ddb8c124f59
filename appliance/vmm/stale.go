package vmm

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// KillStale kills a QEMU of machine name that an earlier daemon left running, found by the qemu.pid
// file in runDir, so that a VM never runs twice on the same disk. The process is killed only when its
// command line names the machine (-name superjolt-<name>): a pid file outliving its process, whose pid
// the kernel has since given to something else, kills nothing. It waits (up to 2 s) for the process to
// go. log may be nil (slog.Default()).
func KillStale(runDir, name string, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	b, err := os.ReadFile(filepath.Join(runDir, "qemu.pid"))
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil || !bytes.Contains(cmdline, []byte("superjolt-"+name)) {
		return
	}
	log.Warn("killing a QEMU left by an earlier daemon", "vm", name, "pid", pid)
	_ = syscall.Kill(pid, syscall.SIGKILL)
	for range 100 {
		if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond) // waiting for the kernel to reap, not for the clock
	}
}
