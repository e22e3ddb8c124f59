package appliance

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// consoler is a Machine with an interactive serial console (*vmm.QEMU).
type consoler interface {
	// ConsoleSocket is the UNIX socket of the serial console ("" when the
	// process is not running).
	ConsoleSocket() string
}

// Attached is who is attached to a VM's serial console.
type Attached struct {
	// Client describes the attached client as it described itself (the CLI
	// says its user, pid and terminal).
	Client string
	// Since is when it attached.
	Since time.Time
}

// ConsoleIO is where a console session's input comes from and its output
// goes.
type ConsoleIO struct {
	// Client describes who attaches, for the error a second one gets.
	Client string
	// In is what the operator types; its end ends the session (a detach).
	In io.Reader
	// Out receives what the guest writes on its serial console.
	Out io.Writer
	// Attached is called once the console is connected, before any output.
	Attached func()
}

// Console attaches to the serial console of a running VM (its first UART,
// where the built-in guest's agent keeps a shell): In goes to the guest,
// the guest's output to Out, until In ends, ctx ends, or the VM's process
// ends. One client at a time: a second one is refused with a conflict
// naming the first. The console log (console.log) records the output
// whether or not anyone is attached.
func (a *Appliance) Console(ctx context.Context, id string, cio ConsoleIO) error {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return err
	}
	if vm.State != model.StateRunning {
		return stateError(vm, "attach to its console")
	}
	a.mu.Lock()
	var sock string
	if mc := a.machines[id]; mc != nil {
		if c, ok := mc.m.(consoler); ok {
			sock = c.ConsoleSocket()
		}
	}
	if sock == "" {
		a.mu.Unlock()
		return unavailablef("%s has no serial console to attach to right now (its process may be restarting); try again in a moment", id)
	}
	if first, ok := a.consoles[id]; ok {
		a.mu.Unlock()
		return conflictf("the console of %s is in use: %s attached at %s; one client at a time: detach that one first (Ctrl-] in superjolt vm console)",
			id, first.Client, first.Since.UTC().Format(time.RFC3339))
	}
	client := cio.Client
	if client == "" {
		client = "an API client"
	}
	a.consoles[id] = Attached{Client: client, Since: a.clock.Now()}
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		delete(a.consoles, id)
		a.mu.Unlock()
	}()

	var d net.Dialer
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	conn, err := d.DialContext(dctx, "unix", sock)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return unavailablef("cannot reach the serial console of %s: %v; try again", id, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	if cio.Attached != nil {
		cio.Attached()
	}
	in := cio.In
	if in == nil {
		in = eofReader{}
	}
	go func() {
		_, _ = io.Copy(conn, in)
		conn.Close() // the operator detached: end the session
	}()
	out := cio.Out
	if out == nil {
		out = io.Discard
	}
	_, err = io.Copy(out, conn)
	if ctx.Err() != nil || err == nil || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

type eofReader struct{}

func (eofReader) Read([]byte) (int, error) { return 0, io.EOF }

// consoleTailBytes bounds how much of a console log ConsoleLog reads.
const consoleTailBytes = 64 << 10

// ConsoleLog returns the last lines (at most n, 1..model.MaxListLimit) of
// what a VM wrote on its serial console, live or not (the log stays until
// the VM is reclaimed), as text: without the escape sequences and control
// characters of the guest, which would drive the reader's terminal. A VM
// that never booted on this run directory has an empty log.
func (a *Appliance) ConsoleLog(ctx context.Context, id string, n int) ([]string, error) {
	if n < 1 || n > model.MaxListLimit {
		return nil, invalidf("lines=%d: ask for 1 to %d lines", n, model.MaxListLimit)
	}
	if _, err := a.readVM(ctx, id); err != nil {
		return nil, err
	}
	f, err := os.Open(filepath.Join(a.vmRunDir(id), "console.log"))
	if errors.Is(err, fs.ErrNotExist) {
		return []string{}, nil
	}
	if err != nil {
		return nil, unavailablef("cannot read the console log of %s: %v", id, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, unavailablef("cannot read the console log of %s: %v", id, err)
	}
	off := max(st.Size()-consoleTailBytes, 0)
	b := make([]byte, st.Size()-off)
	k, err := f.ReadAt(b, off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, unavailablef("cannot read the console log of %s: %v", id, err)
	}
	text := strings.ReplaceAll(string(b[:k]), "\r\n", "\n")
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	if off > 0 && len(lines) > 1 {
		lines = lines[1:] // the first is cut
	}
	if len(lines) == 1 && lines[0] == "" {
		return []string{}, nil
	}
	lines = lines[max(len(lines)-n, 0):]
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return lines, nil
}

// printable returns s without terminal escape sequences (CSI, OSC and
// two-byte ones) and control characters other than tab; invalid UTF-8
// becomes U+FFFD.
func printable(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == 0x1b && i+1 < len(s) && s[i+1] == '[': // CSI: parameters, then a final byte
			i += 2
			for i < len(s) && (s[i] < 0x40 || s[i] > 0x7e) {
				i++
			}
		case c == 0x1b && i+1 < len(s) && s[i+1] == ']': // OSC: up to BEL or ESC \
			i += 2
			for i < len(s) && s[i] != 0x07 && !(s[i] == 0x1b && i+1 < len(s) && s[i+1] == '\\') {
				i++
			}
			if i < len(s) && s[i] == 0x1b {
				i++
			}
		case c == 0x1b: // ESC and one byte
			i++
		case c == '\t' || c >= 0x20 && c != 0x7f:
			b.WriteByte(c)
		}
	}
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}
