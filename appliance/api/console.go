package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
)

// ConsoleClientHeader carries a console client's description of itself
// (for example "root, pid 4242 on /dev/pts/3"), which a second client that
// tries to attach is told.
const ConsoleClientHeader = "Superjolt-Console-Client"

// ConsoleIO is where a console session's input comes from and its output
// goes.
type ConsoleIO struct {
	// Client describes this client to a second one that is refused.
	Client string
	// In is sent to the guest's serial console as it comes; its end
	// detaches (nil: attach read-only until ctx ends).
	In io.Reader
	// Out receives what the guest writes on its serial console.
	Out io.Writer
	// Attached is called once the daemon has attached the console, before
	// any output.
	Attached func()
}

// Console attaches to the serial console of a running VM through POST
// /v1/vms/{id}/console, one full-duplex HTTP/1.1 exchange of raw bytes. It
// returns nil once the session ends: In ended (a detach), or the daemon
// ended it (the VM's process stopped). A VM that is not running, and a
// console another client is attached to, are refused with the daemon's
// error (model.ErrConflict). When ctx ends, the connection closes and
// Console returns ctx's error.
func (c *Client) Console(ctx context.Context, id string, cio ConsoleIO) error {
	path := vmPath(id, "/console")
	pr, pw := io.Pipe()
	defer pr.Close() // ends the copier below
	if cio.In != nil {
		go func() {
			_, err := io.Copy(pw, cio.In)
			_ = pw.CloseWithError(err) // nil: EOF, the detach
		}()
	}
	hreq, err := c.newRequest(ctx, http.MethodPost, path, pr)
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	hreq.Header.Set("Content-Type", "application/octet-stream")
	hreq.Header.Set("Accept", "application/octet-stream")
	if cio.Client != "" {
		hreq.Header.Set(ConsoleClientHeader, cio.Client)
	}
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return c.decodeError(resp)
	}
	if cio.Attached != nil {
		cio.Attached()
	}
	out := cio.Out
	if out == nil {
		out = io.Discard
	}
	_, err = io.Copy(out, resp.Body)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("POST %s: the console session broke: %w", path, err)
	}
	return nil
}

// ConsoleLog is the tail of a VM's serial console log
// (GET /v1/vms/{id}/console/log?lines=N): the guest's output as text,
// without escape sequences or control characters.
type ConsoleLog struct {
	Lines []string `json:"lines"`
}

// ConsoleLog returns the last n lines (0: the daemon's default) of what a VM
// wrote on its serial console, live or not.
func (c *Client) ConsoleLog(ctx context.Context, id string, n int) ([]string, error) {
	var q url.Values
	if n > 0 {
		q = url.Values{"lines": {strconv.Itoa(n)}}
	}
	var out ConsoleLog
	err := c.do(ctx, http.MethodGet, vmPath(id, "/console/log"), q, nil, &out)
	return out.Lines, err
}

// VMLogs writes a VM's log to w (GET /v1/vms/{id}/logs): what QEMU said
// and what its guest wrote on its console, the last lines (0: the daemon's
// default) and, with follow, what comes after until ctx ends.
func (c *Client) VMLogs(ctx context.Context, id string, lines int, follow bool, w io.Writer) error {
	q := url.Values{}
	if lines > 0 {
		q.Set("lines", strconv.Itoa(lines))
	}
	if follow {
		q.Set("follow", "true")
	}
	resp, err := c.send(ctx, http.MethodGet, vmPath(id, "/logs"), q, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if _, err := io.Copy(w, resp.Body); err != nil && ctx.Err() == nil {
		return fmt.Errorf("GET %s: the log stream broke: %w", vmPath(id, "/logs"), err)
	}
	return nil
}
