package api

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/superjolt/superjolt/appliance/model"
)

// ExecIO is where a streaming exec's input comes from and its output goes.
type ExecIO struct {
	// Stdin (nil: none) is sent to the program as it comes.
	Stdin io.Reader
	// Stdout and Stderr (nil: dropped) receive its output as it comes.
	Stdout, Stderr io.Writer
	// Resize carries new sizes of a TTY exec's terminal.
	Resize <-chan WindowSize
}

// ExecStream runs a program in the guest through the streaming exec (see
// ExecInput) and returns how it ended (its Stdout and Stderr empty: they
// went to eio). When ctx ends, the connection closes and the daemon
// interrupts the program; ExecStream returns ctx's error.
func (c *Client) ExecStream(ctx context.Context, id string, req ExecRequest, eio ExecIO) (ExecResult, error) {
	path := vmPath(id, "/exec/stream")
	first, err := json.Marshal(req)
	if err != nil {
		return ExecResult{}, fmt.Errorf("POST %s: %w", path, err)
	}
	pr, pw := io.Pipe()
	defer pr.Close() // ends the writers below once the answer is in
	var wmu sync.Mutex
	enc := json.NewEncoder(pw)
	send := func(in ExecInput) error {
		wmu.Lock()
		defer wmu.Unlock()
		return enc.Encode(in)
	}
	if eio.Resize != nil {
		go func() {
			for {
				select {
				case ws := <-eio.Resize:
					if send(ExecInput{Resize: &ws}) != nil {
						return
					}
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	go func() {
		wmu.Lock()
		_, err := pw.Write(append(first, '\n'))
		wmu.Unlock()
		if err != nil {
			return
		}
		if eio.Stdin == nil {
			if eio.Resize == nil {
				_ = pw.Close() // nothing more to send: stdin closes
			}
			return
		}
		buf := make([]byte, MaxExecInput)
		for {
			n, err := eio.Stdin.Read(buf)
			if n > 0 {
				if send(ExecInput{Stdin: buf[:n]}) != nil {
					return
				}
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					_ = send(ExecInput{EOF: true})
				}
				if eio.Resize == nil {
					_ = pw.Close()
				}
				return
			}
		}
	}()
	hreq, err := c.newRequest(ctx, http.MethodPost, path, pr)
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
		return ExecResult{}, c.decodeError(resp)
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
		case len(f.Stdout) > 0 && eio.Stdout != nil:
			_, _ = eio.Stdout.Write(f.Stdout)
		case len(f.Stderr) > 0 && eio.Stderr != nil:
			_, _ = eio.Stderr.Write(f.Stderr)
		}
	}
}
