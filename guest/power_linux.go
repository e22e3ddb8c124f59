package guest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultPower is the PowerFunc of an agent left without one: InitPower
// when the agent is PID 1, CommandPower otherwise.
func DefaultPower(ctx context.Context, action PowerAction) (func(), error) {
	if os.Getpid() == 1 {
		return InitPower(slog.Default())(ctx, action)
	}
	return CommandPower(ctx, action)
}

// CommandPower asks the guest's own init to power off or reboot, through
// `systemctl poweroff|reboot` or else the `poweroff`/`reboot` command. It
// finds the command at once (ErrUnsupported when there is none) and runs it
// after the answer went out: the init stops the agent soon after, and the
// host should have its answer by then. An agent that is not PID 1 never
// calls the reboot syscall itself: that would skip the init's orderly
// shutdown.
func CommandPower(_ context.Context, action PowerAction) (func(), error) {
	var argv []string
	if p, err := exec.LookPath("systemctl"); err == nil {
		argv = []string{p, action.String()}
	} else if p, err := exec.LookPath(action.String()); err == nil {
		argv = []string{p}
	} else {
		return nil, fmt.Errorf("%w: the agent is not PID 1 and the guest has neither systemctl nor %s", ErrUnsupported, action)
	}
	return func() {
		unix.Sync()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, argv[0], argv[1:]...).CombinedOutput()
		if err != nil {
			slog.Error("power action failed", "command", strings.Join(argv, " "), "err", err, "output", strings.TrimSpace(string(out)))
		}
	}, nil
}

// InitPower is the PowerFunc of an agent that is PID 1: after the answer
// went out it stops every other process (SIGTERM, then SIGKILL after two
// seconds), syncs, remounts the root read-only and calls reboot(2).
func InitPower(log *slog.Logger) PowerFunc {
	return func(ctx context.Context, action PowerAction) (func(), error) {
		if os.Getpid() != 1 {
			return nil, fmt.Errorf("%w: InitPower needs the agent to be PID 1", ErrUnsupported)
		}
		return func() { haltSystem(log, action) }, nil
	}
}

// InitSignals are the signals by which a guest's own tools ask PID 1 to
// end the machine, in busybox init's conventions (checked against busybox
// 1.35's reboot, poweroff and halt applets, which signal PID 1 unless
// given -f): SIGTERM reboots (`reboot`), SIGUSR2 powers off (`poweroff`),
// SIGUSR1 and SIGPWR halt (`halt`), SIGINT is Ctrl-Alt-Del, which busybox
// init turns into a reboot by default.
var InitSignals = []os.Signal{unix.SIGTERM, unix.SIGINT, unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR}

// InitSignalAction says what a signal sent to PID 1 asks for. A halt
// powers off: a VM halted without power is a process that burns its host's
// CPU and bills for nothing, which nobody wants from a VM.
func InitSignalAction(sig os.Signal) (PowerAction, bool) {
	switch sig {
	case unix.SIGTERM, unix.SIGINT:
		return Restart, true
	case unix.SIGUSR1, unix.SIGUSR2, unix.SIGPWR:
		return PowerOff, true
	}
	return 0, false
}

// HandleInitSignals makes a PID 1 agent act on InitSignals, as busybox
// init would, until ctx ends: before() runs first (the agent thaws what it
// froze, or the read-only remount would hang), then every other process
// is stopped, filesystems are synced and / remounted read-only, and
// reboot(2) restarts or powers the machine off. The host sees a reset of
// the machine or its QEMU exit after a guest shutdown.
func HandleInitSignals(ctx context.Context, log *slog.Logger, before func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, InitSignals...)
	defer signal.Stop(ch)
	for {
		select {
		case <-ctx.Done():
			return
		case sig := <-ch:
			action, ok := InitSignalAction(sig)
			if !ok {
				continue
			}
			log.Info("signal to init", "signal", sig.String(), "action", action.String())
			if before != nil {
				before()
			}
			haltSystem(log, action)
		}
	}
}

// halting is held by the haltSystem under way: a second one (a signal
// while a host's request is being carried out) is ignored, the first one
// ends the machine.
var halting sync.Mutex

// haltSystem ends the machine as PID 1. It returns only if reboot(2)
// fails.
func haltSystem(log *slog.Logger, action PowerAction) {
	if !halting.TryLock() {
		log.Info("already stopping; ignoring a second power action", "action", action.String())
		return
	}
	defer halting.Unlock()
	log.Info("stopping all processes", "action", action.String())
	_ = unix.Kill(-1, unix.SIGTERM)
	for deadline := time.Now().Add(2 * time.Second); len(userProcesses()) > 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	_ = unix.Kill(-1, unix.SIGKILL)
	unix.Sync()
	for _, mp := range []string{"/tmp", "/run"} {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
	if err := unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		log.Warn("remount / read-only", "err", err)
	}
	unix.Sync()
	cmd := unix.LINUX_REBOOT_CMD_POWER_OFF
	if action == Restart {
		cmd = unix.LINUX_REBOOT_CMD_RESTART
	}
	log.Info("goodbye", "action", action.String())
	if err := unix.Reboot(cmd); err != nil {
		log.Error("reboot(2)", "err", err)
	}
}

// userProcesses lists the processes other than PID 1 and this one that
// are neither kernel threads nor zombies (both have an empty cmdline).
// kill(-1, 0) cannot tell: kernel threads count for it.
func userProcesses() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == 1 || pid == os.Getpid() {
			continue
		}
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && len(b) > 0 {
			pids = append(pids, pid)
		}
	}
	return pids
}
