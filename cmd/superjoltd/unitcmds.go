package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/vmm"
	"github.com/superjolt/superjolt/systemd"
)

// The commands of a VM's systemd unit: superjoltd is its own launcher
// (exec-vm), stop command (stop-vm) and console copier (follow-console).

// execVM is `superjoltd exec-vm RUNDIR`, the command of a VM's unit: it
// becomes the VM's QEMU (vmm.ExecLaunch) and returns only on failure.
func execVM(args []string) int {
	if len(args) != 1 || !filepath.IsAbs(args[0]) {
		fmt.Fprintln(os.Stderr, "usage: superjoltd exec-vm RUNDIR (run by a VM's systemd unit, not by hand)")
		return 2
	}
	err := vmm.ExecLaunch(args[0])
	fmt.Fprintf(os.Stderr, "superjoltd exec-vm: %v\n", err)
	return 1
}

// stopVM is `superjoltd stop-vm --socket S --run-dir R VMID`, the stop
// command of a VM's unit (the host shuts down, or superjolt.slice is
// stopped): it asks superjoltd to shut the guest down through its agent,
// or, when no superjoltd answers, the agent itself. Either way the unit's
// QEMU then exits by itself; if it does not, systemd signals it after.
func stopVM(args []string) int {
	socket, runDir := api.DefaultSocket, appliance.DefaultRunDir
	for len(args) > 2 && (args[0] == "--socket" || args[0] == "--run-dir") {
		if args[0] == "--socket" {
			socket = args[1]
		} else {
			runDir = args[1]
		}
		args = args[2:]
	}
	if len(args) != 1 {
		fmt.Fprintln(os.Stderr, "usage: superjoltd stop-vm [--socket S] [--run-dir R] VMID (run by a VM's systemd unit)")
		return 2
	}
	id := args[0]
	if err := systemd.CheckVMID(id); err != nil {
		fmt.Fprintf(os.Stderr, "superjoltd stop-vm: %v\n", err)
		return 2
	}
	// systemd runs a unit's stop command also after its main process
	// ended by itself (a crash, a poweroff inside), with MAINPID unset:
	// then there is nothing to shut down, and the daemon is already
	// handling that end as what it was.
	if os.Getenv("MAINPID") == "" {
		return 0
	}
	ctx, cancel := context.WithTimeout(context.Background(), 75*time.Second)
	defer cancel()
	c := api.NewClient(socket)
	defer c.Close()
	_, err := c.HaltVM(ctx, id)
	if err == nil {
		fmt.Fprintf(os.Stderr, "superjoltd stop-vm: superjoltd shut %s down\n", id)
		return 0
	}
	fmt.Fprintf(os.Stderr, "superjoltd stop-vm: superjoltd did not shut %s down (%v); asking its agent directly\n", id, err)
	if err := vmm.ShutdownGuest(ctx, filepath.Join(runDir, id), id); err != nil {
		fmt.Fprintf(os.Stderr, "superjoltd stop-vm: %v; systemd ends QEMU\n", err)
		return 1
	}
	fmt.Fprintf(os.Stderr, "superjoltd stop-vm: the agent of %s powered its guest off\n", id)
	return 0
}

// followConsole is `superjoltd follow-console CONSOLE_LOG PID`, which the
// launcher of a VM's unit starts to copy the guest's console into the
// journal while QEMU (PID, its parent) runs (vmm.FollowConsole).
func followConsole(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: superjoltd follow-console CONSOLE_LOG PID (started by a VM's unit)")
		return 2
	}
	pid, err := strconv.Atoi(args[1])
	if err != nil || pid <= 1 {
		fmt.Fprintf(os.Stderr, "superjoltd follow-console: bad pid %q\n", args[1])
		return 2
	}
	if err := vmm.FollowConsole(context.Background(), args[0], pid, os.Stdout); err != nil {
		fmt.Fprintf(os.Stderr, "superjoltd follow-console: %v\n", err)
		return 1
	}
	return 0
}
