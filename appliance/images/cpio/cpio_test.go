package cpio_test

import (
	"bytes"
	"io/fs"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/images/cpio"
)

// entry is one record as read back by parse.
type entry struct {
	name  string
	mode  uint32
	nlink uint32
	data  string
	rdev  [2]uint32
}

// parse reads a newc archive independently of the writer, checking alignment as it goes.
func parse(t *testing.T, b []byte) []entry {
	t.Helper()
	var out []entry
	off := 0
	field := func(i int) uint32 {
		v, err := strconv.ParseUint(string(b[off+6+8*i:off+14+8*i]), 16, 32)
		if err != nil {
			t.Fatalf("offset %d field %d: %v", off, i, err)
		}
		return uint32(v)
	}
	for {
		if off%4 != 0 {
			t.Fatalf("record at offset %d is not 4-aligned", off)
		}
		if string(b[off:off+6]) != "070701" {
			t.Fatalf("bad magic %q at %d", b[off:off+6], off)
		}
		mode, nlink, size, namesize := field(1), field(4), int(field(6)), int(field(11))
		rdev := [2]uint32{field(9), field(10)}
		if uid, gid, mtime := field(2), field(3), field(5); uid != 0 || gid != 0 || mtime != 0 {
			t.Errorf("uid/gid/mtime = %d/%d/%d, want 0", uid, gid, mtime)
		}
		nameStart := off + 110
		name := string(b[nameStart : nameStart+namesize-1])
		if b[nameStart+namesize-1] != 0 {
			t.Fatalf("name %q not NUL-terminated", name)
		}
		dataStart := (nameStart + namesize + 3) &^ 3
		data := string(b[dataStart : dataStart+size])
		off = (dataStart + size + 3) &^ 3
		if name == "TRAILER!!!" {
			if off != len(b) {
				t.Errorf("%d bytes after the trailer", len(b)-off)
			}
			return out
		}
		out = append(out, entry{name, mode, nlink, data, rdev})
	}
}

func build(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := cpio.NewWriter(&buf)
	steps := []error{
		w.Dir("/dev", 0o755),
		w.Dir("tmp", 0o777|fs.ModeSticky),
		w.File("/init", 0o755, []byte("#!/bin/sh\n")),
		w.File("lib/modules/superjolt/order", 0o644, []byte("a.ko\nbc.ko\n")),
		w.File("empty", 0o600, nil),
		w.Symlink("bin/sh", "busybox"),
		w.CharDev("dev/console", 0o600, 5, 1),
		w.File("after-dev", 0o644, []byte("x")),
		w.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	return buf.Bytes()
}

func TestWriterRecords(t *testing.T) {
	got := parse(t, build(t))
	want := []entry{
		{"dev", 0o040755, 2, "", [2]uint32{}},
		{"tmp", 0o041777, 2, "", [2]uint32{}},
		{"init", 0o100755, 1, "#!/bin/sh\n", [2]uint32{}},
		{"lib/modules/superjolt/order", 0o100644, 1, "a.ko\nbc.ko\n", [2]uint32{}},
		{"empty", 0o100600, 1, "", [2]uint32{}},
		{"bin/sh", 0o120777, 1, "busybox", [2]uint32{}},
		{"dev/console", 0o020600, 1, "", [2]uint32{5, 1}},
		{"after-dev", 0o100644, 1, "x", [2]uint32{}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("record %d = %+v (mode %o), want %+v (mode %o)", i, got[i], got[i].mode, want[i], want[i].mode)
		}
	}
}

func TestWriterIsDeterministic(t *testing.T) {
	if !bytes.Equal(build(t), build(t)) {
		t.Error("the same input made different archives")
	}
}

func TestWriterRejects(t *testing.T) {
	tests := []struct {
		name string
		add  func(w *cpio.Writer) error
	}{
		{"parent escape", func(w *cpio.Writer) error { return w.File("../etc/passwd", 0o644, nil) }},
		{"inner escape", func(w *cpio.Writer) error { return w.File("a/../../b", 0o644, nil) }},
		{"empty name", func(w *cpio.Writer) error { return w.Dir("/", 0o755) }},
		{"trailer name", func(w *cpio.Writer) error { return w.File("TRAILER!!!", 0o644, nil) }},
		{"duplicate", func(w *cpio.Writer) error {
			w.Dir("x", 0o755)
			return w.File("/x/", 0o644, nil)
		}},
		{"empty symlink", func(w *cpio.Writer) error { return w.Symlink("l", "") }},
		{"after close", func(w *cpio.Writer) error {
			w.Close()
			return w.Dir("late", 0o755)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.add(cpio.NewWriter(&bytes.Buffer{})); err == nil {
				t.Error("accepted")
			}
		})
	}
}

// TestGNUCpioReadsIt cross-checks the format with GNU cpio when it is installed.
func TestGNUCpioReadsIt(t *testing.T) {
	bin, err := exec.LookPath("cpio")
	if err != nil {
		t.Skip("cpio not installed (apt-get install cpio)")
	}
	cmd := exec.Command(bin, "-t", "--quiet")
	cmd.Stdin = bytes.NewReader(build(t))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("cpio -t: %v: %s", err, out)
	}
	want := "dev\ntmp\ninit\nlib/modules/superjolt/order\nempty\nbin/sh\ndev/console\nafter-dev\n"
	if got := string(out); got != want {
		t.Errorf("cpio -t listed\n%s\nwant\n%s", got, strings.TrimSpace(want))
	}
}
