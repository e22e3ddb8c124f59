package server

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// SocketMode is the permission of the API socket: root and the socket's
// group (the operators) may connect.
const SocketMode fs.FileMode = 0o660

// Listen listens on a UNIX socket at path with mode SocketMode, creating its
// directory (0755) when missing. A socket file left by a daemon that died is
// removed first; when another daemon still answers on it, Listen refuses with
// model.ErrConflict. A path that exists and is not a socket is never removed.
func Listen(ctx context.Context, path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("%w: api socket %s exists and is not a socket; move it away or choose another --socket", model.ErrConflict, path)
		}
		d := net.Dialer{Timeout: time.Second}
		if c, err := d.DialContext(ctx, "unix", path); err == nil {
			c.Close()
			return nil, fmt.Errorf("%w: another superjoltd is already serving on %s; stop it first (systemctl stop superjoltd) or choose another --socket", model.ErrConflict, path)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("api socket: remove stale %s: %w", path, err)
		}
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("api socket: %w", err)
	}
	// Remove the socket file on Close: a clean stop leaves nothing behind.
	ln.SetUnlinkOnClose(true)
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("api socket: %w", err)
	}
	return ln, nil
}
