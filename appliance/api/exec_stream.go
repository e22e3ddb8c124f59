package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/superjolt/superjolt/appliance/model"
)

// ExecStream runs a program in the guest through the streaming exec (see
// ExecInput): its output goes to stdout and stderr as it comes, stdin (nil:
// none) is sent to it as it comes, and the result says how it ended (its
// Stdout and Stderr empty). When ctx ends, the connection closes and the
// daemon interrupts the program; ExecStream returns ctx's error.
func (c *Client) ExecStream(ctx context.Context, id string, req ExecRequest, stdin io.Reader, stdout, stderr io.Writer) (ExecResult, error) {
	path := vmPath(id, "/exec/stream")
	first, err := json.Marshal(req)
	if err != nil {
		return ExecResult{}, fmt.Errorf("POST %s: %w", path, err)
	}
	pr, pw := io.Pipe()
	defer pr.Close() // ends the copy below once the answer is in
	go func() {
		if _, err := pw.Write(append(first, '\n')); err != nil {
			return
		}
		if stdin == nil {
			_ = pw.Close()
			return
		}
		enc := json.NewEncoder(pw)
		buf := make([]byte, MaxExecInput)
		for {
			n, err := stdin.Read(buf)
			if n > 0 {
				if werr := enc.Encode(ExecInput{Stdin: buf[:n]}); werr != nil {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = enc.Encode(ExecInput{EOF: true})
				}
				_ = pw.Close()
				return
			}
		}
	}()
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://superjoltd"+path, pr)
	if err != nil {
		return ExecResult{}, fmt.Errorf("POST %s: %w", path, err)
	}
	hreq.Header.Set("Content-Type", "application/x-ndjson")
	hreq.Header.Set("Accept", "application/x-ndjson")
	resp, err := c.hc.Do(hreq)
	if err != nil {
		if ctx.Err() != nil {
			return ExecResult{}, ctx.Err()
		}
		return ExecResult{}, c.unreachable(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return ExecResult{}, decodeError(resp)
	}
	br := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if err != nil {
			if ctx.Err() != nil {
				return ExecResult{}, ctx.Err()
			}
			return ExecResult{}, fmt.Errorf("%w: POST %s: superjoltd ended the exec stream before the program's exit: %v", model.ErrUnavailable, path, err)
		}
		var f ExecFrame
		if err := json.Unmarshal(line, &f); err != nil {
			return ExecResult{}, fmt.Errorf("POST %s: cannot read the answer of superjoltd: %w", path, err)
		}
		switch {
		case f.Exit != nil:
			return *f.Exit, nil
		case f.Error != nil:
			return ExecResult{}, &Error{Code: f.Error.Code, Message: f.Error.Message, Status: StatusOf(f.Error.Code)}
		case len(f.Stdout) > 0 && stdout != nil:
			_, _ = stdout.Write(f.Stdout)
		case len(f.Stderr) > 0 && stderr != nil:
			_, _ = stderr.Write(f.Stderr)
		}
	}
}
