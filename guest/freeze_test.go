package guest

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestFreezeCandidates(t *testing.T) {
	const mounts = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
proc /proc proc rw,nosuid,nodev,noexec,relatime 0 0
udev /dev devtmpfs rw,nosuid,relatime,size=10240k 0 0
/dev/vda / ext4 rw,relatime 0 0
tmpfs /run tmpfs rw,nosuid,nodev 0 0
/dev/vdb /data xfs rw,relatime 0 0
/dev/vdc /mnt/ro\040disk ext4 ro,relatime 0 0
/dev/vdd /mnt/with\040space btrfs rw,relatime 0 0
/dev/vdb /data xfs rw,relatime 0 0
sshfs#x /mnt/fuse fuse.sshfs rw 0 0
overlay /var/lib/overlay overlay rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
`
	entries, err := parseMounts(strings.NewReader(mounts))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range freezeCandidates(entries) {
		got = append(got, m.mountpoint)
	}
	want := []string{"/", "/data", "/mnt/with space"}
	if !slices.Equal(got, want) {
		t.Errorf("candidates = %q, want %q", got, want)
	}
	if _, err := parseMounts(strings.NewReader("short line\n")); err == nil {
		t.Error("a short mounts line parsed")
	}
}

func TestUnescapeMount(t *testing.T) {
	tests := []struct{ in, want string }{
		{`/plain`, `/plain`},
		{`/a\040b`, `/a b`},
		{`/tab\011x\012y`, "/tab\tx\ny"},
		{`/back\134slash`, `/back\slash`},
		{`/trailing\04`, `/trailing\04`},
		{`/bad\089`, `/bad\089`},
	}
	for _, tt := range tests {
		if got := unescapeMount(tt.in); got != tt.want {
			t.Errorf("unescapeMount(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestFSFreezerFilesystemsDedupesByDevice(t *testing.T) {
	// Two mount points of one device (a bind mount) and a tmpfs: the
	// tmpfs is skipped and the device is listed once.
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a"), filepath.Join(dir, "b")
	for _, d := range []string{a, b} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mounts := filepath.Join(dir, "mounts")
	content := "/dev/vdx " + a + " ext4 rw 0 0\n/dev/vdx " + b + " ext4 rw 0 0\nnone " + dir + " tmpfs rw 0 0\n"
	if err := os.WriteFile(mounts, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := FSFreezer{MountsFile: mounts, Logger: testLogger(t)}.Filesystems()
	if err != nil {
		t.Fatal(err)
	}
	// a and b are plain directories of one filesystem: same st_dev.
	if !slices.Equal(got, []string{a}) {
		t.Errorf("Filesystems = %q, want [%s]", got, a)
	}
}

// loopFS makes and mounts a small loop-backed filesystem for the test.
func loopFS(t testing.TB, fstype string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a loop-backed filesystem")
	}
	mkfs := "mkfs." + fstype
	if _, err := exec.LookPath(mkfs); err != nil {
		t.Skipf("needs %s (e2fsprogs / btrfs-progs)", mkfs)
	}
	dir := t.TempDir()
	img := filepath.Join(dir, "fs.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(128 << 20); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs, "-q", img).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", mkfs, err, out)
	}
	mnt := filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-o", "loop", img, mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot loop-mount %s (no loop devices?): %v: %s", fstype, err, out)
	}
	t.Cleanup(func() {
		_ = FSFreezer{}.Thaw(mnt) // never leave it frozen, even on failure
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", mnt, err, out)
		}
	})
	return mnt
}

// TestFSFreezerReal freezes a real loop-mounted filesystem with FIFREEZE and
// proves a write blocks until FITHAW.
func TestFSFreezerReal(t *testing.T) {
	for _, fstype := range []string{"ext4", "btrfs"} {
		t.Run(fstype, func(t *testing.T) {
			mnt := loopFS(t, fstype)
			fz := FSFreezer{Logger: testLogger(t)}

			list, err := fz.Filesystems()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Contains(list, mnt) {
				t.Errorf("Filesystems() = %q does not list the loop mount %s", list, mnt)
			}

			if err := fz.Freeze(mnt); err != nil {
				t.Fatalf("Freeze: %v", err)
			}
			if err := fz.Freeze(mnt); !errors.Is(err, ErrNotFreezable) {
				t.Errorf("second Freeze = %v, want ErrNotFreezable (frozen already)", err)
			}
			wrote := make(chan error, 1)
			go func() { wrote <- os.WriteFile(filepath.Join(mnt, "file"), []byte("data"), 0o644) }()
			select {
			case err := <-wrote:
				_ = fz.Thaw(mnt)
				t.Fatalf("a write to the frozen filesystem finished (err %v)", err)
			case <-time.After(300 * time.Millisecond):
			}
			if err := fz.Thaw(mnt); err != nil {
				t.Fatalf("Thaw: %v", err)
			}
			select {
			case err := <-wrote:
				if err != nil {
					t.Fatalf("write after thaw: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the write did not finish after thaw")
			}
			if err := fz.Thaw(mnt); err != nil {
				t.Errorf("Thaw of a thawed filesystem = %v, want nil", err)
			}
		})
	}
}

// TestAgentFreezesRealFilesystem runs freeze and thaw through the agent and
// the client with the real freezer, limited to a loop mount (freezing the
// host's own root would hang the test machine), and lets the deadline
// thaw a second freeze.
func TestAgentFreezesRealFilesystem(t *testing.T) {
	mnt := loopFS(t, "ext4")
	mounts := filepath.Join(t.TempDir(), "mounts")
	if err := os.WriteFile(mounts, []byte("/dev/loopX "+mnt+" ext4 rw,relatime 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ta := newTestAgent(t, func(o *AgentOptions) {
		o.Freezer = FSFreezer{MountsFile: mounts}
		o.Sync = syncAll
	})
	c := servePipe(t, ta.Agent)
	ctx := context.Background()
	fr, err := c.Freeze(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(fr.Filesystems, []string{mnt}) {
		t.Fatalf("froze %q, want [%s]", fr.Filesystems, mnt)
	}
	if !frozenNow(t, mnt) {
		t.Fatal("the filesystem is not frozen after Freeze")
	}
	// A request that writes to the frozen filesystem is stuck; thaw is not.
	res := make(chan error, 1)
	go func() {
		_, err := c.Exec(ctx, ExecRequest{Path: "/bin/sh", Args: []string{"-c", "echo x > " + mnt + "/f"}})
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("a write finished while frozen (%v)", err)
	case <-time.After(300 * time.Millisecond):
	}
	within(t, 5*time.Second, "thaw with a stuck write", func() { mustThaw(t, c) })
	within(t, 10*time.Second, "the stuck write after thaw", func() {
		if err := <-res; err != nil {
			t.Errorf("Exec: %v", err)
		}
	})

	if _, err := c.Freeze(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	ta.clock.Advance(time.Minute)
	if frozenNow(t, mnt) {
		t.Fatal("still frozen after the deadline")
	}
}

// frozenNow tells whether the filesystem at mnt is frozen, by asking it to
// freeze: EBUSY means it is (and then nothing changed).
func frozenNow(t testing.TB, mnt string) bool {
	t.Helper()
	err := fsIoctl(mnt, ioctlFIFREEZE)
	switch {
	case errors.Is(err, unix.EBUSY):
		return true
	case err == nil:
		if err := fsIoctl(mnt, ioctlFITHAW); err != nil {
			t.Fatalf("undo probe freeze: %v", err)
		}
		return false
	default:
		t.Fatalf("probe freeze: %v", err)
		return false
	}
}
