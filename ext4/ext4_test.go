package ext4

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// requireE2fs skips unless e2fsck, resize2fs and mkfs.ext4 are there.
func requireE2fs(t testing.TB) {
	t.Helper()
	for _, tool := range []string{"e2fsck", "resize2fs", "mkfs.ext4", "dumpe2fs"} {
		if _, err := Tool(tool); err != nil {
			t.Skipf("needs %s (apt-get install e2fsprogs)", tool)
		}
	}
}

// allocated returns the bytes the file at path has allocated on disk.
func allocated(t testing.TB, path string) int64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Blocks * 512
}

// extBytes returns the size of the ext filesystem in the file at path, from
// its superblock (dumpe2fs -h).
func extBytes(t testing.TB, path string) int64 {
	t.Helper()
	bin, _ := Tool("dumpe2fs")
	out, err := exec.Command(bin, "-h", path).Output()
	if err != nil {
		t.Fatalf("dumpe2fs %s: %v", path, err)
	}
	var count, size int64
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		if err != nil {
			continue
		}
		switch strings.TrimSpace(k) {
		case "Block count":
			count = n
		case "Block size":
			size = n
		}
	}
	if count == 0 || size == 0 {
		t.Fatalf("dumpe2fs %s: no block count or size in\n%s", path, out)
	}
	return count * size
}

// mkfsExt4 makes an ext4 filesystem of size bytes in a new file at path.
func mkfsExt4(t testing.TB, path string, size int64) {
	t.Helper()
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(path, size); err != nil {
		t.Fatal(err)
	}
	bin, _ := Tool("mkfs.ext4")
	if out, err := exec.Command(bin, "-q", "-F", path).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
}

// TestGrow: an ext4 disk grows, file and filesystem, and stays
// sparse; a disk at or above the size is untouched (never shrunk); a disk
// with no ext filesystem grows as a file only; a damaged ext filesystem is
// refused and left as it was.
func TestGrow(t *testing.T) {
	requireE2fs(t)
	ctx := context.Background()
	dir := t.TempDir()
	const small, big = 32 << 20, 2 << 30

	t.Run("ext4 grows", func(t *testing.T) {
		p := filepath.Join(dir, "grow.img")
		mkfsExt4(t, p, small)
		before := allocated(t, p)
		grown, err := Grow(ctx, p, big)
		if err != nil || !grown {
			t.Fatalf("Grow = %v, %v; want grown", grown, err)
		}
		if fi, _ := os.Stat(p); fi.Size() != big {
			t.Errorf("file is %d bytes, want %d", fi.Size(), big)
		}
		if got := extBytes(t, p); got != big {
			t.Errorf("filesystem is %d bytes, want %d", got, big)
		}
		// The new block groups' metadata is all that is written.
		if after := allocated(t, p); after-before > 32<<20 {
			t.Errorf("growing allocated %d bytes (before %d, after %d): the disk is not sparse", after-before, before, after)
		}
	})

	t.Run("never shrinks", func(t *testing.T) {
		p := filepath.Join(dir, "big.img")
		mkfsExt4(t, p, 64<<20)
		for _, size := range []int64{64 << 20, small} {
			grown, err := Grow(ctx, p, size)
			if err != nil || grown {
				t.Fatalf("Grow(%d) = %v, %v; want left alone", size, grown, err)
			}
			if fi, _ := os.Stat(p); fi.Size() != 64<<20 {
				t.Errorf("file is %d bytes, want %d", fi.Size(), 64<<20)
			}
			if got := extBytes(t, p); got != 64<<20 {
				t.Errorf("filesystem is %d bytes, want %d", got, 64<<20)
			}
		}
	})

	t.Run("not ext", func(t *testing.T) {
		p := filepath.Join(dir, "raw.img")
		if err := os.WriteFile(p, []byte("not a filesystem"), 0o644); err != nil {
			t.Fatal(err)
		}
		grown, err := Grow(ctx, p, big)
		if err != nil || !grown {
			t.Fatalf("Grow = %v, %v; want grown", grown, err)
		}
		if fi, _ := os.Stat(p); fi.Size() != big {
			t.Errorf("file is %d bytes, want %d", fi.Size(), big)
		}
	})

	t.Run("damaged ext", func(t *testing.T) {
		p := filepath.Join(dir, "damaged.img")
		if err := os.WriteFile(p, damagedExt(), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := Grow(ctx, p, big); err == nil || !strings.Contains(err.Error(), "e2fsck") {
			t.Fatalf("Grow of a damaged filesystem: %v; want an e2fsck error", err)
		}
		if fi, _ := os.Stat(p); fi.Size() != int64(len(damagedExt())) {
			t.Errorf("a refused disk was resized to %d bytes", fi.Size())
		}
	})
}

// damagedExt is 64 KiB of zeros but for an ext superblock magic: it looks
// like ext to Grow, and e2fsck cannot make sense of it.
func damagedExt() []byte {
	b := make([]byte, 64<<10)
	b[MagicOffset], b[MagicOffset+1] = 0x53, 0xEF
	return b
}
