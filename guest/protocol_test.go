package guest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name    string
		line    string
		want    Request
		wantID  uint64
		wantErr bool
	}{
		{"ping", `{"v":1,"id":1,"op":"ping"}`, Request{V: 1, ID: 1, Op: "ping"}, 1, false},
		{"with newline", "{\"v\":1,\"id\":2,\"op\":\"thaw\"}\r\n", Request{V: 1, ID: 2, Op: "thaw"}, 2, false},
		{"freeze deadline", `{"v":1,"id":3,"op":"freeze","deadline_ms":1500}`, Request{V: 1, ID: 3, Op: "freeze", DeadlineMS: 1500}, 3, false},
		{"exec", `{"v":1,"id":4,"op":"exec","path":"/bin/ls","args":["-l","/"],"stdin":"aGk=","timeout_ms":10}`,
			Request{V: 1, ID: 4, Op: "exec", Path: "/bin/ls", Args: []string{"-l", "/"}, Stdin: []byte("hi"), TimeoutMS: 10}, 4, false},
		{"unknown fields ignored", `{"v":1,"id":5,"op":"ping","future":{"x":1}}`, Request{V: 1, ID: 5, Op: "ping"}, 5, false},
		{"max id", `{"v":1,"id":18446744073709551615,"op":"ping"}`, Request{V: 1, ID: 1<<64 - 1, Op: "ping"}, 1<<64 - 1, false},
		{"id too big", `{"v":1,"id":18446744073709551616,"op":"ping"}`, Request{}, 0, true},
		{"fractional id", `{"v":1,"id":1.5,"op":"ping"}`, Request{}, 0, true},
		{"string id", `{"v":1,"id":"1","op":"ping"}`, Request{}, 0, true},
		{"version 2", `{"v":2,"id":6,"op":"ping"}`, Request{}, 6, true},
		{"empty", ``, Request{}, 0, true},
		{"null", `null`, Request{}, 0, true},
		{"bad base64", `{"v":1,"id":7,"op":"exec","stdin":"!!"}`, Request{}, 7, true},
		{"two objects", `{"v":1,"id":8,"op":"ping"}{"v":1,"id":9,"op":"ping"}`, Request{}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, id, err := DecodeRequest([]byte(tt.line))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !errors.Is(err, ErrProtocol) {
				t.Errorf("err %v is not ErrProtocol", err)
			}
			if id != tt.wantID {
				t.Errorf("id = %d, want %d", id, tt.wantID)
			}
			if !tt.wantErr && !requestEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func requestEqual(a, b Request) bool {
	return a.V == b.V && a.ID == b.ID && a.Op == b.Op && a.DeadlineMS == b.DeadlineMS && a.Path == b.Path &&
		slices.Equal(a.Args, b.Args) && bytes.Equal(a.Stdin, b.Stdin) && a.TimeoutMS == b.TimeoutMS
}

func TestReadLine(t *testing.T) {
	long := strings.Repeat("x", 100)
	tests := []struct {
		name  string
		input string
		max   int
		want  []string // "ERR:too long" for errLineTooLong
	}{
		{"lines", "a\nbb\n", 10, []string{"a\n", "bb\n"}},
		{"last line without newline", "a\nb", 10, []string{"a\n", "b"}},
		{"exactly max", "abcd\n", 5, []string{"abcd\n"}},
		{"one over max", "abcde\nok\n", 5, []string{"ERR:too long", "ok\n"}},
		{"long line spans buffers", long + "\nok\n", 50, []string{"ERR:too long", "ok\n"}},
		{"long line at EOF", long, 50, nil},
		{"empty lines", "\n\n", 5, []string{"\n", "\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReaderSize(strings.NewReader(tt.input), 16) // small buffer: fragments
			var got []string
			for {
				line, err := readLine(br, tt.max)
				if errors.Is(err, errLineTooLong) {
					got = append(got, "ERR:too long")
					continue
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, string(line))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDurations(t *testing.T) {
	tests := []struct {
		d  time.Duration
		ms int64
	}{
		{0, 0}, {-time.Second, 0}, {time.Nanosecond, 1}, {time.Millisecond, 1}, {1500 * time.Microsecond, 2}, {time.Hour, 3600000},
	}
	for _, tt := range tests {
		if got := toMS(tt.d); got != tt.ms {
			t.Errorf("toMS(%s) = %d, want %d", tt.d, got, tt.ms)
		}
	}
	if got := durationMS(1 << 62); got != time.Duration(1<<63-1) {
		t.Errorf("durationMS(huge) = %d, want the max duration", got)
	}
}

// FuzzDecodeRequest feeds request lines to the decoder and to the agent's
// answer path: nothing panics, a decoded request is valid and survives a
// round trip, and every error becomes one well-formed answer line.
func FuzzDecodeRequest(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"id":1,"op":"ping"}`,
		`{"v":1,"id":2,"op":"freeze","deadline_ms":30000}`,
		`{"v":1,"id":3,"op":"exec","path":"/bin/sh","args":["-c","true"],"stdin":"aGk=","timeout_ms":5}`,
		`{"v":1,"id":18446744073709551615,"op":"thaw"}`,
		`{"v":1,"id":18446744073709551616,"op":"thaw"}`,
		`{"v":1,"id":-1,"op":"ping"}`,
		`{"v":1,"id":1e400,"op":"ping"}`,
		`{"v":0,"id":1,"op":"ping"}`,
		`{"v":99999999999999999999,"id":1,"op":"ping"}`,
		`{"v":1,"id":1,"op":""}`,
		`{"v":1,"id":1,"op":"ping\u0000"}`,
		"{\"v\":1,\"id\":1,\"op\":\"ping\x00\"}",
		"\x00\x00\x00",
		`{"v":1,"id":1,"op":"ping"`,
		`{"v":1,"id":1,"op":"ping"}}`,
		`{"v":1,"id":1,"op":"exec","args":[1,2]}`,
		`{"v":1,"id":1,"op":"exec","stdin":"%%%"}`,
		`{"v":1,"id":{"x":1},"op":"ping"}`,
		`[]`, `""`, `null`, `1`, ``, " \t",
		"\xff\xfe{\"v\":1}",
		`{"v":1,"id":7,"op":"freeze","deadline_ms":9223372036854775807}`,
		`{"v":1,"id":7,"op":"freeze","deadline_ms":-1}`,
		strings.Repeat(`{"a":`, 1000) + strings.Repeat(`}`, 1000),
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		req, id, err := DecodeRequest(line)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("decode error %v is not ErrProtocol", err)
			}
			out, merr := encodeLine(errorResponse(id, err))
			if merr != nil {
				t.Fatalf("encode the error answer: %v", merr)
			}
			if bytes.IndexByte(out, '\n') != len(out)-1 {
				t.Fatalf("error answer is not one line: %q", out)
			}
			var resp Response
			if err := json.Unmarshal(out, &resp); err != nil || resp.V != ProtocolVersion || resp.ID != id ||
				resp.OK || resp.Error == nil || resp.Error.Code != CodeProtocol {
				t.Fatalf("error answer %q does not decode to a protocol error for id %d (%v)", out, id, err)
			}
			return
		}
		if req.V != ProtocolVersion || req.ID == 0 || req.ID != id || req.Op == "" || req.DeadlineMS < 0 || req.TimeoutMS < 0 {
			t.Fatalf("decoded an invalid request %+v (id %d)", req, id)
		}
		again, err := encodeLine(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		req2, id2, err := DecodeRequest(again)
		if err != nil || id2 != id || req2.Op != req.Op || req2.Path != req.Path || !bytes.Equal(req2.Stdin, req.Stdin) ||
			!slices.Equal(req2.Args, req.Args) || req2.DeadlineMS != req.DeadlineMS || req2.TimeoutMS != req.TimeoutMS {
			t.Fatalf("round trip changed %+v into %+v (%v)", req, req2, err)
		}
	})
}

// nopRunner answers every exec without running anything: fuzzed input
// must never start programs on the test machine.
type nopRunner struct{}

func (nopRunner) Run(context.Context, ExecRequest) (ExecResult, error) {
	return ExecResult{Stdout: []byte("not run")}, nil
}

// lockedBuffer is a bytes.Buffer safe for the agent's concurrent answers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// FuzzServeConn feeds whole byte streams to an agent (every side effect
// faked): it must not panic, must end at EOF, and must write only whole,
// valid answer lines.
func FuzzServeConn(f *testing.F) {
	for _, seed := range []string{
		`{"v":1,"id":1,"op":"ping"}` + "\n" + `{"v":1,"id":2,"op":"freeze"}` + "\n" + `{"v":1,"id":3,"op":"thaw"}` + "\n",
		`{"v":1,"id":1,"op":"freeze"}` + "\n" + `{"v":1,"id":2,"op":"freeze"}` + "\n",
		`{"v":1,"id":1,"op":"exec","path":"/bin/true"}` + "\n" + `{"v":1,"id":2,"op":"shutdown"}` + "\n",
		"\n\n\r\n   \n",
		"garbage\x00\xff\n{\"v\":1}\n",
		`{"v":1,"id":1,"op":"ping"}`, // no final newline
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		ta := newTestAgent(t, func(o *AgentOptions) { o.Runner = nopRunner{}; o.Logger = slog.New(slog.DiscardHandler) })
		var out lockedBuffer
		rw := struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(stream), &out}
		done := make(chan error, 1)
		go func() { done <- ta.ServeConn(context.Background(), rw) }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("ServeConn: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("ServeConn did not end at EOF")
		}
		for _, line := range strings.SplitAfter(out.String(), "\n") {
			if line == "" {
				continue
			}
			if !strings.HasSuffix(line, "\n") {
				t.Fatalf("partial answer line %q", line)
			}
			var resp Response
			if err := json.Unmarshal([]byte(line), &resp); err != nil || resp.V != ProtocolVersion || (resp.OK == (resp.Error != nil)) {
				t.Fatalf("bad answer line %q (%v)", line, err)
			}
		}
		ta.ThawAll()
	})
}
