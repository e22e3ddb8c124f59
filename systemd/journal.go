package systemd

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os/exec"
	"strconv"
	"strings"
)

// VMJournal writes the last lines of a VM unit's journal to w (journalctl
// -u superjolt-vm-<id>.service, short-iso timestamps): its launcher's and
// QEMU's output and the guest's console, which the launcher copies there.
// With follow it goes on with what comes until ctx ends.
func VMJournal(ctx context.Context, vmID string, lines int, follow bool, w io.Writer) error {
	unit, err := unitName(vmID)
	if err != nil {
		return err
	}
	args := []string{"-u", unit, "-o", "short-iso", "--no-pager", "-n", strconv.Itoa(lines)}
	if follow {
		args = append(args, "-f")
	}
	cmd := exec.CommandContext(ctx, "journalctl", args...)
	cmd.Stdout = w
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil && ctx.Err() == nil {
		return fmt.Errorf("journalctl -u %s: %w: %s", unit, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
