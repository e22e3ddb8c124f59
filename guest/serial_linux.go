package guest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Where the guest kernel shows virtio-serial ports and their device nodes.
const (
	VirtioPortsDir = "/sys/class/virtio-ports"
	DevDir         = "/dev"
)

// errNoSerialPort: no virtio-serial port carries the name (yet).
var errNoSerialPort = errors.New("no virtio-serial port with that name")

// FindSerialPort returns the device node of the virtio-serial port named
// name, looked up in /sys/class/virtio-ports/vport*/name. There is no udev
// in a minimal guest, so when devtmpfs has no node for the port it is made
// with mknod from the port's dev file.
func FindSerialPort(name string) (string, error) {
	return findSerialPort(VirtioPortsDir, DevDir, name)
}

func findSerialPort(sysDir, devDir, name string) (string, error) {
	ents, err := os.ReadDir(sysDir)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "", fmt.Errorf("%w: %s is missing (virtio_console not loaded?)", errNoSerialPort, sysDir)
		}
		return "", err
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "name"))
		if err != nil || strings.TrimSpace(string(b)) != name {
			continue
		}
		node := filepath.Join(devDir, e.Name())
		if _, err := os.Stat(node); err == nil {
			return node, nil
		}
		devb, err := os.ReadFile(filepath.Join(sysDir, e.Name(), "dev"))
		if err != nil {
			return "", fmt.Errorf("port %s: %w", e.Name(), err)
		}
		major, minor, ok := strings.Cut(strings.TrimSpace(string(devb)), ":")
		maj, err1 := strconv.ParseUint(major, 10, 32)
		mnr, err2 := strconv.ParseUint(minor, 10, 32)
		if !ok || err1 != nil || err2 != nil {
			return "", fmt.Errorf("port %s: bad dev %q", e.Name(), devb)
		}
		err = unix.Mknod(node, unix.S_IFCHR|0o600, int(unix.Mkdev(uint32(maj), uint32(mnr))))
		if err != nil && !errors.Is(err, unix.EEXIST) {
			return "", fmt.Errorf("mknod %s: %w", node, err)
		}
		return node, nil
	}
	return "", fmt.Errorf("%w: %q under %s", errNoSerialPort, name, sysDir)
}

// ServeSerial serves the virtio-serial port named name (usually
// SerialPortName) until ctx is done. The port may appear late; it is looked
// for again every second. A virtio-serial read returns EOF while no host is
// connected, so on EOF the port is closed, reopened after a short pause and
// served again: a host can connect, go away and come back.
func (a *Agent) ServeSerial(ctx context.Context, name string) error {
	const reopen = 100 * time.Millisecond
	waitLogged, announced := false, false
	for ctx.Err() == nil {
		node, err := findSerialPort(a.portsDir, a.devDir, name)
		if err != nil {
			if !waitLogged {
				a.log.Info("waiting for the virtio-serial port", "name", name, "err", err)
				waitLogged = true
			}
			sleepCtx(ctx, a.portRetry)
			continue
		}
		f, err := os.OpenFile(node, os.O_RDWR, 0)
		if err != nil {
			a.log.Warn("open virtio-serial port", "port", node, "err", err)
			sleepCtx(ctx, a.portRetry)
			continue
		}
		if !announced {
			a.log.Info("serving virtio-serial port", "port", node, "name", name)
			announced, waitLogged = true, false
		}
		if err := a.ServeConn(ctx, f); err != nil {
			a.log.Debug("virtio-serial session ended", "port", node, "err", err)
		}
		sleepCtx(ctx, reopen)
	}
	return nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
