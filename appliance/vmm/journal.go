package vmm

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"time"
)

// A machine run as a unit has its output in the journal: QEMU's own (stdout and stderr), and its
// guest's serial console, which the launcher has a companion process copy there ([FollowConsole])
// besides console.log, so that `journalctl -u superjolt-vm-<id>.service` (and `superjolt vm logs`)
// tells the VM's whole story: QEMU, the guest's kernel and agent, its shutdown.

// consolePrefix starts each console line copied to the journal.
const consolePrefix = "console: "

// FollowConsole copies the lines the guest writes to its console log at path to out, each prefixed
// with "console: ", from the start, until process parent (the unit's QEMU) has ended (or ctx
// ends); then what is left is copied and it returns. It is `superjoltd follow-console`, started by
// the launcher just before it becomes QEMU.
func FollowConsole(ctx context.Context, path string, parent int, out io.Writer) error {
	var f *os.File
	for f == nil {
		var err error
		if f, err = os.Open(path); err != nil {
			if os.Getppid() != parent || ctx.Err() != nil {
				return err
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	defer f.Close()
	return followLines(f, out, func() bool {
		// At the end of what was written so far: the guest goes on, or
		// QEMU has ended (this process was handed to another parent).
		if os.Getppid() != parent || ctx.Err() != nil {
			return false
		}
		time.Sleep(200 * time.Millisecond) // polling a file that grows: no notification for it here
		return true
	})
}

// followLines copies the console lines read from r to out as they come.
// At the end of what is there, more waits for the file to grow and says
// whether to go on; when it says no, a last partial line is copied too.
func followLines(r io.Reader, out io.Writer, more func() bool) error {
	br := bufio.NewReader(r)
	var partial []byte
	for {
		line, err := br.ReadBytes('\n')
		partial = append(partial, line...)
		if err == nil {
			writeConsoleLine(out, partial)
			partial = partial[:0]
			continue
		}
		if err != io.EOF {
			return err
		}
		if !more() {
			if len(partial) > 0 {
				writeConsoleLine(out, partial)
			}
			return nil
		}
	}
}

func writeConsoleLine(out io.Writer, line []byte) {
	line = bytes.TrimRight(line, "\r\n")
	line = bytes.ReplaceAll(line, []byte("\r"), nil)
	if len(line) == 0 {
		return
	}
	out.Write(append(append([]byte(consolePrefix), line...), '\n'))
}

// TailConsole writes the last n lines of the console log at path to out, prefixed as in the
// journal, and with follow, the lines written after, until ctx ends. A missing log is empty.
func TailConsole(ctx context.Context, path string, n int, follow bool, out io.Writer) error {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) && !follow {
		return nil
	}
	for err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(200 * time.Millisecond):
		}
		f, err = os.Open(path)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		return err
	}
	lines := bytes.Split(bytes.TrimRight(b, "\r\n"), []byte("\n"))
	for _, l := range lines[max(len(lines)-n, 0):] {
		writeConsoleLine(out, l)
	}
	if !follow {
		return nil
	}
	return followLines(f, out, func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond): // polling a file that grows
			return true
		}
	})
}
