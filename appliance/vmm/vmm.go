package vmm

import (
	"context"
	"errors"
)

// Machine is one virtual machine process as the appliance drives it.
type Machine interface {
	// Start boots the machine and returns once its guest agent has reported a boot id (or, for a machine
	// configured to start paused, once the VMM answers). ctx bounds the boot, not the machine's life.
	Start(ctx context.Context) error
	// Shutdown stops the guest: through its agent first, then an ACPI power-button press, then a kill.
	// It returns once the VMM process has exited.
	Shutdown(ctx context.Context) error
	// Wait blocks until the VMM process exits (returning how it exited) or ctx ends.
	Wait(ctx context.Context) error
	// Kill ends the VMM process at once and waits for it to go.
	Kill() error
	// Status says where the machine is in its life.
	Status() Status
}

var _ Machine = (*QEMU)(nil)

// Status is where a [Machine] is in its life.
type Status int

const (
	StatusNew      Status = iota // constructed, never started
	StatusStarting               // the VMM runs, the guest agent has not answered yet
	StatusRunning                // the guest agent answered (or the machine was started paused)
	StatusStopping               // Shutdown is under way
	StatusStopped                // the VMM process has exited
)

func (s Status) String() string {
	switch s {
	case StatusNew:
		return "new"
	case StatusStarting:
		return "starting"
	case StatusRunning:
		return "running"
	case StatusStopping:
		return "stopping"
	case StatusStopped:
		return "stopped"
	}
	return "unknown"
}

// Exit says how a machine's VMM process ended, as far as the driver saw.
type Exit int

const (
	// ExitUnasked: the process ended without the guest asking (it crashed or was killed), or
	// before it ran a guest.
	ExitUnasked Exit = iota
	// ExitGuestPowerOff: the guest powered the machine off (QMP SHUTDOWN, reason guest-shutdown),
	// by itself or because the host asked its agent or pressed the power button.
	ExitGuestPowerOff
	// ExitRebootFailed: the guest restarted and its agent did not report a boot id within the boot
	// deadline, so the driver killed the machine.
	ExitRebootFailed
)

func (e Exit) String() string {
	switch e {
	case ExitGuestPowerOff:
		return "guest-poweroff"
	case ExitRebootFailed:
		return "reboot-failed"
	}
	return "unasked"
}

// Errors the driver returns, to be tested with errors.Is.
var (
	// ErrBootTimeout: the guest agent did not report a boot id within the boot deadline, on every attempt.
	ErrBootTimeout = errors.New("vmm: guest agent did not come up before the boot deadline")
	// ErrNotRunning: the operation needs a running VMM process.
	ErrNotRunning = errors.New("vmm: machine is not running")
	// ErrAlreadyStarted: Start was called on a machine whose VMM is already running.
	ErrAlreadyStarted = errors.New("vmm: machine already started")
	// ErrExited: the VMM process exited while the driver waited for it to do something else.
	ErrExited = errors.New("vmm: qemu exited")
)
