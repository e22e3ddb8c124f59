package main

import (
	"io"
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/superjolt/superjolt/appliance/api"
)

// terminal is the CLI's own terminal, for `vm exec -t`.
type terminal struct {
	fd  int
	old *unix.Termios
}

// openTerminal returns r's terminal, or nil when r is not one.
func openTerminal(r io.Reader) *terminal {
	f, ok := r.(*os.File)
	if !ok {
		return nil
	}
	fd := int(f.Fd())
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil
	}
	return &terminal{fd: fd, old: t}
}

// makeRaw passes every key to the guest as it is typed (Ctrl-C included:
// the guest's terminal turns it into SIGINT), as cfmakeraw(3) does.
func (t *terminal) makeRaw() error {
	raw := *t.old
	raw.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON
	raw.Oflag &^= unix.OPOST
	raw.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	raw.Cflag &^= unix.CSIZE | unix.PARENB
	raw.Cflag |= unix.CS8
	raw.Cc[unix.VMIN] = 1
	raw.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(t.fd, unix.TCSETS, &raw)
}

// restore puts the terminal back as it was.
func (t *terminal) restore() { _ = unix.IoctlSetTermios(t.fd, unix.TCSETS, t.old) }

// size returns the terminal's size, 24x80 when it cannot tell.
func (t *terminal) size() api.WindowSize {
	ws, err := unix.IoctlGetWinsize(t.fd, unix.TIOCGWINSZ)
	if err != nil || ws.Row == 0 || ws.Col == 0 {
		return api.WindowSize{Rows: 24, Cols: 80}
	}
	return api.WindowSize{Rows: ws.Row, Cols: ws.Col}
}

// watchSize sends the terminal's new size at each SIGWINCH until stop.
func (t *terminal) watchSize() (sizes <-chan api.WindowSize, stop func()) {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGWINCH)
	out := make(chan api.WindowSize, 1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-sig:
				select {
				case out <- t.size():
				default:
				}
			case <-done:
				return
			}
		}
	}()
	return out, func() { signal.Stop(sig); close(done) }
}
