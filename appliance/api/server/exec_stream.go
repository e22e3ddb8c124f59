package server

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/guest"
)

// The CLI names the agent's default limit without importing the agent.
const _ = uint(api.DefaultExecTimeout-guest.DefaultExecTimeout) + uint(guest.DefaultExecTimeout-api.DefaultExecTimeout)

// execStream serves POST /v1/vms/{id}/exec/stream (see api.ExecInput): the
// request body goes on being read, as stdin, while the answer streams the
// program's output. The request's context is the program's: when the
// client goes away, the program is interrupted.
func (s *Server) execStream(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindVM)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	// Read the body while answering: stdin comes while output goes.
	if err := rc.EnableFullDuplex(); err != nil {
		s.fail(w, r, err)
		return
	}
	body := bufio.NewReaderSize(r.Body, 64<<10)
	first, err := readInputLine(body, api.MaxRequestBytes)
	if err != nil {
		s.fail(w, r, invalidf("exec stream: the body must start with an exec request on one line: %v", err))
		return
	}
	req, err := decode[api.ExecRequest](bytes.NewReader(first))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if len(req.Stdin) > 0 {
		s.fail(w, r, invalidf("exec stream: send stdin in the lines after the request, not in it"))
		return
	}

	fw := &frameWriter{w: w, rc: rc, enc: json.NewEncoder(w)}
	started := false
	resize := make(chan guest.WindowSize, 4)
	res, err := s.app.ExecStream(r.Context(), id, guest.ExecRequest{
		Path: req.Path, Args: req.Args, Timeout: time.Duration(req.Timeout),
		TTY: req.TTY, Term: req.Term, Size: guest.WindowSize{Rows: req.Size.Rows, Cols: req.Size.Cols},
	}, guest.ExecIO{
		Resize: resize,
		Stdin:  &inputReader{r: body, resize: resize},
		Stdout: fw.stream(false),
		Stderr: fw.stream(true),
		Started: func() {
			started = true
			startStream(w, rc, "application/x-ndjson")
		},
	})
	if !started {
		if err == nil {
			err = fmt.Errorf("%w: the exec of %s ended before its program started", model.ErrUnavailable, id)
		}
		s.fail(w, r, err)
		return
	}
	if err != nil {
		if r.Context().Err() == nil {
			s.log.Warn("api: exec stream ended", "vm", id, "err", err)
		}
		_, b := api.Body(err)
		fw.frame(api.ExecFrame{Error: &b.Error})
		return
	}
	fw.frame(api.ExecFrame{Exit: &api.ExecResult{ExitCode: res.ExitCode, Signal: res.Signal, TimedOut: res.TimedOut}})
}

// frameWriter writes ExecFrames, each flushed at once.
type frameWriter struct {
	mu  sync.Mutex
	w   http.ResponseWriter
	rc  *http.ResponseController
	enc *json.Encoder
}

func (f *frameWriter) frame(fr api.ExecFrame) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.enc.Encode(fr); err != nil {
		return err
	}
	return f.rc.Flush()
}

// stream is an io.Writer of stdout (or stderr) frames.
func (f *frameWriter) stream(stderr bool) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		fr := api.ExecFrame{Stdout: p}
		if stderr {
			fr = api.ExecFrame{Stderr: p}
		}
		if err := f.frame(fr); err != nil {
			return 0, err
		}
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// inputReader reads the stdin of ExecInput lines; an eof line or the end of
// the body is its end.
type inputReader struct {
	r      *bufio.Reader
	resize chan<- guest.WindowSize // sizes; dropped when it is full
	rest   []byte
	done   bool
}

func (in *inputReader) Read(p []byte) (int, error) {
	for len(in.rest) == 0 {
		if in.done {
			return 0, io.EOF
		}
		line, err := readInputLine(in.r, 2*api.MaxExecInput)
		if err != nil {
			in.done = true
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		var x api.ExecInput
		if err := json.Unmarshal(line, &x); err != nil {
			in.done = true
			return 0, invalidf("exec stream: a stdin line is not valid JSON: %v", err)
		}
		if x.Resize != nil {
			select {
			case in.resize <- guest.WindowSize{Rows: x.Resize.Rows, Cols: x.Resize.Cols}:
			default:
			}
		}
		in.rest, in.done = x.Stdin, x.EOF
	}
	n := copy(p, in.rest)
	in.rest = in.rest[n:]
	return n, nil
}

// readInputLine reads one line of at most max bytes.
func readInputLine(r *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > max {
			return nil, invalidf("exec stream: a line is longer than %d bytes", max)
		}
		switch {
		case err == nil:
			return line, nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return line, nil
		default:
			return nil, err
		}
	}
}

// startStream answers a full-duplex stream's request with 200 and its
// content type, at once: from then on, errors travel in the stream.
func startStream(w http.ResponseWriter, rc *http.ResponseController, contentType string) {
	w.Header().Set("Content-Type", contentType)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	_ = rc.Flush()
}
