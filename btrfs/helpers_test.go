//go:build linux && cgo

package btrfs_test

import (
	"bufio"
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// writeRandom writes size bytes of pseudo-random data (seeded by seed) to
// path, fsyncs it, and returns the data.
func writeRandom(tb testing.TB, path string, size int, seed uint64) []byte {
	tb.Helper()
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(data)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return data
}

// wantContent fails tb unless the file at path holds want.
func wantContent(tb testing.TB, path string, want []byte) {
	tb.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		tb.Fatalf("%s: %d bytes differ from the %d expected", path, len(got), len(want))
	}
}

// mountTmpfs mounts a small tmpfs in a fresh temporary directory and returns
// it; it is unmounted when the test ends.
func mountTmpfs(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=16m"); err != nil {
		tb.Skipf("cannot mount a tmpfs (needs root): %v", err)
	}
	tb.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			tb.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// mountSource returns the source device of the mount on mnt, or "" when mnt
// is not a mount point.
func mountSource(tb testing.TB, mnt string) string {
	tb.Helper()
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	src := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		pre, post, _ := strings.Cut(sc.Text(), " - ")
		fields, pf := strings.Fields(pre), strings.Fields(post)
		if len(fields) >= 5 && len(pf) >= 2 && fields[4] == mnt {
			src = pf[1]
		}
	}
	return src
}

// loopAttached reports whether the loop device dev (/dev/loopN) has a
// backing file.
func loopAttached(dev string) bool {
	_, err := os.Stat(filepath.Join("/sys/block", filepath.Base(dev), "loop", "backing_file"))
	return err == nil
}

// dirNames returns the names in dir.
func dirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// runBtrfs runs the btrfs command line tool and returns its output.
func runBtrfs(tb testing.TB, args ...string) (string, error) {
	tb.Helper()
	out, err := exec.Command("btrfs", args...).CombinedOutput()
	return string(out), err
}
