package server

import (
	"bufio"
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/guest"
)

// TestInputReader: stdin lines become the program's stdin up to the eof
// line, and resize lines go to the resize channel.
func TestInputReader(t *testing.T) {
	body := `{"stdin":"aGVs"}` + "\n" + `{"resize":{"rows":40,"cols":120}}` + "\n" + `{"stdin":"bG8K"}` + "\n" + `{"eof":true}` + "\n" + `{"stdin":"aWdub3JlZA=="}` + "\n"
	resize := make(chan guest.WindowSize, 1)
	in := &inputReader{r: bufio.NewReader(strings.NewReader(body)), resize: resize}
	got, err := io.ReadAll(in)
	if err != nil || !bytes.Equal(got, []byte("hello\n")) {
		t.Fatalf("stdin = %q, %v; want hello and the end at eof", got, err)
	}
	if ws := <-resize; ws.Rows != 40 || ws.Cols != 120 {
		t.Fatalf("resize = %+v", ws)
	}
	bad := &inputReader{r: bufio.NewReader(strings.NewReader("{nope\n")), resize: resize}
	if _, err := io.ReadAll(bad); err == nil {
		t.Fatal("a malformed stdin line was accepted")
	}
}
