package appliance

import (
	"context"
	"errors"
	"io"
	"net"
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
