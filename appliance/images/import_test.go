package images

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/images/imagetest"
	"github.com/superjolt/superjolt/guest"
)

// The import tests use real tools as root: tar, mkfs.ext4, debugfs, sfdisk, qemu-img, mount with
// loop devices, and mmdebstrap for the Debian tarball (made once and cached; see DebianTarball).
// What they make once is shared between them: the tarball, a small tree cut out of it, the
// unpacked Debian tree and its disks, all in fixtures.dir, which TestMain removes.

var fixtures struct {
	dir string

	agentOnce sync.Once
	agent     string

	tarballOnce sync.Once
	tarball     string
	tarballErr  error

	smallOnce sync.Once
	small     string // a small root tree: os-release, systemd, the kernel and the guest modules

	diskOnce sync.Once
	ext4     string // the whole Debian tree in a bare ext4 file system
	qcow2    string // and on a GPT disk (after an EFI system partition and a /boot), as qcow2
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtures.dir != "" {
		os.RemoveAll(fixtures.dir)
	}
	os.Exit(code)
}

var fixturesMu sync.Mutex

func fixtureDir(t *testing.T) string {
	t.Helper()
	fixturesMu.Lock()
	defer fixturesMu.Unlock()
	if fixtures.dir == "" {
		d, err := os.MkdirTemp("", "superjolt-import-test-")
		if err != nil {
			t.Fatal(err)
		}
		fixtures.dir = d
	}
	return fixtures.dir
}

// once runs setup the first time; when it failed (in whichever test ran it), every later caller
// fails too.
func once(t *testing.T, o *sync.Once, what string, setup func()) {
	t.Helper()
	fixturesMu.Lock()
	ok := fixturesReady[what]
	fixturesMu.Unlock()
	if ok {
		return
	}
	o.Do(func() {
		setup()
		fixturesMu.Lock()
		fixturesReady[what] = true
		fixturesMu.Unlock()
	})
	fixturesMu.Lock()
	ok = fixturesReady[what]
	fixturesMu.Unlock()
	if !ok {
		t.Fatalf("%s could not be made (see the test that first needed it)", what)
	}
}

var fixturesReady = map[string]bool{}

// testAgent is a static stand-in agent: busybox with a marker after its ELF image.
func testAgent(t *testing.T) string {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs busybox-static for a static stand-in agent: %v", err)
	}
	dir := fixtureDir(t)
	once(t, &fixtures.agentOnce, "the stand-in agent", func() {
		p := filepath.Join(dir, "agent")
		if err := os.WriteFile(p, append(bb, "stand-in agent"...), 0o755); err != nil {
			t.Fatal(err)
		}
		fixtures.agent = p
	})
	return fixtures.agent
}

// debianTarball is the cached mmdebstrap tarball of debian-12 with postgresql.
func debianTarball(t *testing.T) string {
	t.Helper()
	imagetest.Need(t, true, "mmdebstrap", "tar", "mkfs.ext4", "debugfs")
	fixtures.tarballOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		r, err := RecipeNamed("debian-12")
		if err != nil {
			fixtures.tarballErr = err
			return
		}
		fixtures.tarball, fixtures.tarballErr = DebianTarball(ctx, DebianOptions{Recipe: r, Packages: []string{"postgresql"}, Logf: t.Logf})
	})
	if fixtures.tarballErr != nil {
		t.Fatalf("debian tarball: %v", fixtures.tarballErr)
	}
	return fixtures.tarball
}

// smallTree returns a copy, in a fresh directory, of a small root tree cut out of the Debian
// tarball: what FromTree needs and little more.
func smallTree(t *testing.T) string {
	t.Helper()
	tarball := debianTarball(t)
	dir := fixtureDir(t)
	once(t, &fixtures.smallOnce, "the small tree", func() {
		tree := filepath.Join(dir, "small")
		imagetest.Unpack(t, tarball, tree, "./bin", "./lib", "./lib64", "./sbin", "./etc/os-release",
			"./usr/lib/os-release", "./usr/sbin/init", "./usr/lib/systemd/systemd", "./boot/vmlinuz-*",
			"./usr/lib/modules/*/modules.builtin", "./usr/lib/modules/*/kernel/*virtio*",
			"./usr/lib/modules/*/kernel/*vsock*", "./usr/lib/modules/*/kernel/*failover*")
		fixtures.small = tree
	})
	cp := filepath.Join(t.TempDir(), "root")
	imagetest.Run(t, "cp", "-a", fixtures.small, cp)
	return cp
}

// debianDisks returns the Debian tree as a bare ext4 file system and as a qcow2 disk with a GPT.
func debianDisks(t *testing.T) (ext4, qcow2 string) {
	t.Helper()
	tarball := debianTarball(t)
	imagetest.Need(t, true, "sfdisk", "qemu-img", "mount", "losetup")
	dir := fixtureDir(t)
	once(t, &fixtures.diskOnce, "the Debian disks", func() {
		start := time.Now()
		tree := filepath.Join(dir, "debian")
		imagetest.Unpack(t, tarball, tree)
		fixtures.ext4 = filepath.Join(dir, "debian.ext4")
		imagetest.MakeExt4(t, tree, fixtures.ext4)
		os.RemoveAll(tree)
		raw := filepath.Join(dir, "debian.raw")
		imagetest.MakeDisk(t, fixtures.ext4, raw)
		fixtures.qcow2 = filepath.Join(dir, "debian.qcow2")
		imagetest.QCOW2(t, raw, fixtures.qcow2)
		os.Remove(raw)
		t.Logf("made the Debian ext4 and qcow2 disks in %v", time.Since(start).Round(time.Second))
	})
	return fixtures.ext4, fixtures.qcow2
}

// checkImage checks what FromTree promises of img, reading its rootfs.img with debugfs.
func checkImage(t *testing.T, img *Image, agent, wantOS string) {
	t.Helper()
	if img.OS != wantOS || img.Init != "/sbin/init" || img.KernelRelease == "" || len(img.Modules) == 0 {
		t.Errorf("image %+v: want OS %q, Init /sbin/init, a kernel release and modules", img, wantOS)
	}
	a, err := os.ReadFile(agent)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(a)
	if img.AgentSHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("agent sha256 %s, want %x", img.AgentSHA256, sum)
	}
	opened, err := Open(img.Dir)
	if err != nil {
		t.Fatalf("Open(%s): %v", img.Dir, err)
	}
	if opened.OS != img.OS || opened.KernelRelease != img.KernelRelease || opened.Init != img.Init || opened.Source != img.Source {
		t.Errorf("image.json says %+v, Import returned %+v", opened, img)
	}
	if k, err := os.ReadFile(img.Kernel); err != nil || len(k) < 1<<20 || string(k[0x202:0x206]) != "HdrS" {
		t.Errorf("vmlinuz is not a bzImage (%d bytes, %v)", len(k), err)
	}
	if entries, _ := os.ReadDir(img.Dir); len(entries) != 4 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("image dir holds %v, want image.json, initrd, rootfs.img, vmlinuz", names)
	}

	rootfs := img.Rootfs
	agentStat := imagetest.Debugfs(t, rootfs, "stat "+guest.AgentPath)
	if !strings.Contains(agentStat, "Type: regular") || !strings.Contains(agentStat, fmt.Sprintf("Size: %d\n", len(a))) ||
		!strings.Contains(agentStat, "Mode:  0755") {
		t.Errorf("%s in rootfs.img:\n%s\nwant a regular file, mode 0755, of %d bytes", guest.AgentPath, agentStat, len(a))
	}
	for unit, text := range map[string]string{agentUnitName: guest.AgentUnit, bootConfigUnitName: guest.BootConfigUnit} {
		if got := imagetest.Debugfs(t, rootfs, "cat /etc/systemd/system/"+unit); got != text {
			t.Errorf("%s in rootfs.img:\n%s\nwant\n%s", unit, got, text)
		}
		link := imagetest.Debugfs(t, rootfs, "stat /etc/systemd/system/sysinit.target.wants/"+unit)
		if !strings.Contains(link, "Type: symlink") || !strings.Contains(link, `"/etc/systemd/system/`+unit+`"`) {
			t.Errorf("sysinit.target.wants/%s in rootfs.img:\n%s\nwant a link to /etc/systemd/system/%s", unit, link, unit)
		}
	}
	if got := imagetest.Debugfs(t, rootfs, "stat /etc/machine-id"); !strings.Contains(got, "Size: 0\n") || !strings.Contains(got, "Type: regular") {
		t.Errorf("/etc/machine-id in rootfs.img:\n%s\nwant an empty file", got)
	}
	fstab := imagetest.Debugfs(t, rootfs, "cat /etc/fstab")
	if !slices.Contains(strings.Split(fstab, "\n"), rootFstabLine) {
		t.Errorf("/etc/fstab in rootfs.img:\n%s\nwant the line %q", fstab, rootFstabLine)
	}
	if got := imagetest.Debugfs(t, rootfs, "cat /etc/systemd/system/serial-getty@ttyS0.service.d/superjolt.conf"); got != consoleAutologin {
		t.Errorf("console autologin drop-in:\n%s", got)
	}
	if imagetest.Exists(t, rootfs, "/usr/sbin/sshd") {
		if ssh := imagetest.Debugfs(t, rootfs, "ls -l /etc/ssh"); strings.Contains(ssh, "ssh_host_") || !strings.Contains(ssh, "sshd_config") {
			t.Errorf("/etc/ssh in rootfs.img:\n%s\nwant sshd_config and no host keys", ssh)
		}
		if got := imagetest.Debugfs(t, rootfs, "cat /etc/systemd/system/ssh.service.d/superjolt-host-keys.conf"); got != sshHostKeysDropIn {
			t.Errorf("ssh host keys drop-in:\n%s", got)
		}
	}
	if len(imagetest.Debugfs(t, rootfs, "stat /boot/vmlinuz-"+img.KernelRelease)) == 0 {
		t.Errorf("rootfs.img has no /boot/vmlinuz-%s", img.KernelRelease)
	}
}

// importInto imports src into a fresh image directory with a fresh TempDir, and checks that
// TempDir is left empty whatever happens.
func importInto(t *testing.T, src, agent string) (*Image, string, error) {
	t.Helper()
	img, dir, _, err := importLogged(t, src, agent)
	return img, dir, err
}

// importLogged is importInto that also returns what Import logged.
func importLogged(t *testing.T, src, agent string) (*Image, string, []string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	base := t.TempDir()
	tmp := filepath.Join(base, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "image")
	start := time.Now()
	var logs []string
	logf := func(f string, a ...any) {
		logs = append(logs, fmt.Sprintf(f, a...))
		t.Logf(f, a...)
	}
	img, err := Import(ctx, src, dir, ImportOptions{Agent: agent, TempDir: tmp, Logf: logf})
	t.Logf("Import %s: %v (%v)", filepath.Base(src), time.Since(start).Round(100*time.Millisecond), err)
	if left := listTree(t, tmp); len(left) > 0 {
		t.Errorf("Import left in TempDir: %v", left)
	}
	if out := imagetest.Run(t, "findmnt", "-rn", "-o", "TARGET"); strings.Contains(out, base) {
		t.Errorf("Import left mounted:\n%s", out)
	}
	return img, dir, logs, err
}

// listTree lists what is under dir (nil when dir is absent or empty).
func listTree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			names = append(names, strings.TrimPrefix(p, dir+"/"))
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}
	return names
}

func TestImportDebianTarball(t *testing.T) {
	tarball := debianTarball(t)
	agent := testAgent(t)
	img, _, err := importInto(t, tarball, agent)
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, agent, "Debian GNU/Linux 12 (bookworm)")
	if !strings.HasSuffix(img.KernelRelease, "-cloud-amd64") || img.Source != filepath.Base(tarball) {
		t.Errorf("kernel %q, source %q", img.KernelRelease, img.Source)
	}
	if !imagetest.Exists(t, img.Rootfs, "/usr/lib/postgresql") {
		t.Error("rootfs.img has no /usr/lib/postgresql: the extra package is missing")
	}
}

func TestImportDebianDisks(t *testing.T) {
	ext4, qcow2 := debianDisks(t)
	agent := testAgent(t)
	for name, src := range map[string]string{"bare-ext4": ext4, "gpt-qcow2": qcow2} {
		t.Run(name, func(t *testing.T) {
			img, _, logs, err := importLogged(t, src, agent)
			if err != nil {
				t.Fatal(err)
			}
			checkImage(t, img, agent, "Debian GNU/Linux 12 (bookworm)")
			// The GPT disk's root is its third partition, after an EFI system partition (not
			// even mounted) and an ext4 /boot (mounted, and passed over: no os-release).
			if name == "gpt-qcow2" && !slices.ContainsFunc(logs, func(l string) bool { return strings.HasPrefix(l, "copying the files of partition 3 (ext4") }) {
				t.Errorf("Import did not copy partition 3; it logged:\n%s", strings.Join(logs, "\n"))
			}
			if !imagetest.Exists(t, img.Rootfs, "/usr/lib/postgresql") {
				t.Error("rootfs.img has no /usr/lib/postgresql")
			}
		})
	}
}

// TestFromTreeSmall makes an image from the small tree directly, and through a tarball of it.
func TestFromTreeSmall(t *testing.T) {
	tree := smallTree(t)
	agent := testAgent(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img, err := FromTree(ctx, tree, filepath.Join(t.TempDir(), "img"), TreeOptions{Agent: agent, Source: "small", Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	checkImage(t, img, agent, "Debian GNU/Linux 12 (bookworm)")
	var want []string
	for _, m := range guestModules {
		if !slices.Contains(img.Modules, m) {
			want = append(want, m)
		}
	}
	if len(want) > 0 {
		t.Errorf("modules %v lack %v (the cloud kernel builds none of them in)", img.Modules, want)
	}
	// FromTree changed the tree as it says, and made it again gives the same files.
	fstab, _ := os.ReadFile(filepath.Join(tree, "etc/fstab"))
	if string(fstab) != rewriteFstab("") {
		t.Errorf("tree's fstab %q", fstab)
	}
	img2, err := FromTree(ctx, tree, filepath.Join(t.TempDir(), "img"), TreeOptions{Agent: agent, Logf: t.Logf})
	if err != nil {
		t.Fatalf("FromTree on a tree it already made an image of: %v", err)
	}
	checkImage(t, img2, agent, img.OS)
}

// TestImportErrors imports what cannot become an image: each fails with a message saying what is
// wrong, and leaves nothing in TempDir nor in the image directory.
func TestImportErrors(t *testing.T) {
	tarball := debianTarball(t)
	agent := testAgent(t)
	imagetest.Need(t, true, "qemu-img", "sfdisk")
	work := t.TempDir()

	// variant makes a tarball of the small tree changed by change.
	variant := func(name string, change func(tree string)) string {
		tree := smallTree(t)
		change(tree)
		out := filepath.Join(work, name+".tar")
		imagetest.Tar(t, tree, out)
		return out
	}
	rm := func(tree string, globs ...string) {
		for _, g := range globs {
			m, _ := filepath.Glob(filepath.Join(tree, g))
			if len(m) == 0 {
				t.Fatalf("nothing to remove at %s", g)
			}
			for _, p := range m {
				if err := os.RemoveAll(p); err != nil {
					t.Fatal(err)
				}
			}
		}
	}

	// A qcow2 disk whose L1 table points into nowhere: qemu-img check finds it.
	smallExt4 := filepath.Join(work, "small.ext4")
	imagetest.MakeExt4(t, smallTree(t), smallExt4)
	corrupt := filepath.Join(work, "corrupt.qcow2")
	imagetest.MakeDisk(t, smallExt4, filepath.Join(work, "small.raw"))
	imagetest.QCOW2(t, filepath.Join(work, "small.raw"), corrupt)
	corruptL1(t, corrupt)
	// A qcow2 disk cut short.
	truncQCOW2 := filepath.Join(work, "truncated.qcow2")
	imagetest.QCOW2(t, filepath.Join(work, "small.raw"), truncQCOW2)
	if st, err := os.Stat(truncQCOW2); err != nil || os.Truncate(truncQCOW2, st.Size()/2) != nil {
		t.Fatal("truncate qcow2")
	}

	truncTar := filepath.Join(work, "truncated.tar")
	imagetest.Run(t, "dd", "if="+tarball, "of="+truncTar, "bs=1M", "count=10", "status=none")
	garbage := filepath.Join(work, "random.img")
	junk := make([]byte, 1<<20)
	for i := range junk {
		junk[i] = byte(i*7919 + i>>8*31 + 17)
	}
	if err := os.WriteFile(garbage, junk, 0o644); err != nil {
		t.Fatal(err)
	}
	dynamic := filepath.Join(work, "dynamic-agent")
	imagetest.Run(t, "cp", "/bin/true", dynamic)

	for _, c := range []struct {
		name  string
		src   string
		agent string
		is    error    // when not nil, errors.Is(err, is)
		say   []string // and the message says these
	}{
		{"corrupt-qcow2", corrupt, agent, nil, []string{"corrupt.qcow2", "damaged", "qemu-img check"}},
		{"truncated-qcow2", truncQCOW2, agent, nil, []string{"truncated.qcow2", "damaged"}},
		{"truncated-tarball", truncTar, agent, nil, []string{"truncated.tar", "damaged", "Unexpected EOF"}},
		{"unknown-format", garbage, agent, ErrUnknownFormat, []string{"random.img", "tarball", "qcow2"}},
		{"no-kernel", variant("no-kernel", func(tree string) { rm(tree, "boot/vmlinuz-*") }), agent, ErrNoKernel, []string{"no-kernel.tar", "linux-image-cloud-amd64"}},
		{"kernel-without-modules", variant("no-modules", func(tree string) { rm(tree, "usr/lib/modules/*") }), agent, ErrNoKernel, nil},
		{"kernel-without-virtio-net", variant("no-virtio-net", func(tree string) { rm(tree, "usr/lib/modules/*/kernel/drivers/net/virtio_net.ko") }), agent, nil, []string{"virtio_net", "linux-image-cloud-amd64"}},
		{"no-os-release", variant("no-os-release", func(tree string) { rm(tree, "etc/os-release", "usr/lib/os-release") }), agent, ErrNotAnOS, []string{"os-release"}},
		{"no-systemd", variant("no-systemd", func(tree string) { rm(tree, "usr/sbin/init", "usr/lib/systemd/systemd") }), agent, ErrNoSystemd, []string{"systemd-sysv"}},
		{"dynamic-agent", variant("small", func(string) {}), dynamic, nil, []string{"dynamically linked", "make agent"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, dir, err := importInto(t, c.src, c.agent)
			if err == nil {
				t.Fatalf("Import made %+v", img)
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Errorf("error %q, want errors.Is %v", err, c.is)
			}
			for _, s := range c.say {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
			if left := listTree(t, dir); len(left) > 0 {
				t.Errorf("a failed Import left in the image directory: %v", left)
			}
		})
	}
}

// corruptL1 points the first L1 table entry of a qcow2 file at an offset that is not cluster
// aligned and lies past the file's end.
func corruptL1(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	hdr := make([]byte, 48)
	if _, err := f.ReadAt(hdr, 0); err != nil {
		t.Fatal(err)
	}
	l1 := int64(be64(hdr[40:48]))
	bad := []byte{0x80, 0, 0, 0x7f, 0xff, 0xff, 0x12, 0x34} // copied flag, offset far away
	for i := int64(0); i < 4; i++ {
		if _, err := f.WriteAt(bad, l1+8*i); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := runCheck(path); err == nil {
		t.Fatalf("qemu-img check passes the corrupted disk:\n%s", out)
	}
}

func be64(b []byte) uint64 {
	var v uint64
	for _, c := range b {
		v = v<<8 | uint64(c)
	}
	return v
}

func runCheck(path string) (string, error) {
	return run(context.Background(), "", "qemu-img", "check", "-q", "-f", "qcow2", path)
}

// TestImportSymlinkEscape imports trees whose links point outside them: nothing outside may
// change, whether the import fails or not.
func TestImportSymlinkEscape(t *testing.T) {
	agent := testAgent(t)
	outside := t.TempDir()
	marker := filepath.Join(outside, "marker")
	if err := os.WriteFile(marker, []byte("untouched"), 0o644); err != nil {
		t.Fatal(err)
	}
	before := listTree(t, outside)
	hostRoot := listTree(t, "/etc/systemd/system")
	_, agentOnHostRoot := os.Lstat("/superjolt-agent")
	work := t.TempDir()

	for _, c := range []struct {
		name   string
		change func(tree string)
		extra  map[string]string // files appended to the tarball after the tree, through the link
	}{
		{"etc-absolute", func(tree string) { relink(t, filepath.Join(tree, "etc"), outside) }, map[string]string{"etc/evil": "x"}},
		{"etc-relative", func(tree string) {
			relink(t, filepath.Join(tree, "etc"), strings.Repeat("../", 12)+strings.TrimPrefix(outside, "/"))
		}, nil},
		{"usr-sbin-outside", func(tree string) {
			// sbin/init stays, in a real sbin, so that the import gets as far as installing the agent.
			os.Remove(filepath.Join(tree, "sbin"))
			os.Mkdir(filepath.Join(tree, "sbin"), 0o755)
			os.Symlink("/lib/systemd/systemd", filepath.Join(tree, "sbin/init"))
			relink(t, filepath.Join(tree, "usr/sbin"), outside)
		}, map[string]string{"usr/sbin/superjolt-agent": "x"}},
		{"usr-sbin-root", func(tree string) {
			os.Remove(filepath.Join(tree, "sbin"))
			os.Mkdir(filepath.Join(tree, "sbin"), 0o755)
			os.Symlink("/lib/systemd/systemd", filepath.Join(tree, "sbin/init"))
			relink(t, filepath.Join(tree, "usr/sbin"), "/")
		}, nil},
		{"machine-id-link", func(tree string) {
			os.MkdirAll(filepath.Join(tree, "etc/systemd/system"), 0o755)
			os.Symlink(marker, filepath.Join(tree, "etc/machine-id"))
			os.Symlink(marker, filepath.Join(tree, "etc/fstab"))
			os.Symlink(outside, filepath.Join(tree, "etc/systemd/system/sysinit.target.wants"))
		}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			tree := smallTree(t)
			c.change(tree)
			tarball := filepath.Join(work, c.name+".tar")
			imagetest.Tar(t, tree, tarball)
			if len(c.extra) > 0 {
				stage := t.TempDir()
				var names []string
				for p, data := range c.extra {
					os.MkdirAll(filepath.Join(stage, filepath.Dir(p)), 0o755)
					os.WriteFile(filepath.Join(stage, p), []byte(data), 0o644)
					names = append(names, "./"+p)
				}
				imagetest.Run(t, "tar", append([]string{"--append", "--file", tarball, "--directory", stage}, names...)...)
			}
			img, _, err := importInto(t, tarball, agent)
			t.Logf("import: %v", err)
			if err == nil {
				checkImage(t, img, agent, "Debian GNU/Linux 12 (bookworm)")
			}

			// FromTree on the tree itself, without tar in between.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			img, err = FromTree(ctx, tree, filepath.Join(t.TempDir(), "img"), TreeOptions{Agent: agent})
			t.Logf("FromTree: %v", err)
			if err == nil {
				checkImage(t, img, agent, "Debian GNU/Linux 12 (bookworm)")
			}

			if after := listTree(t, outside); !slices.Equal(after, before) {
				t.Errorf("outside the tree %s now holds %v, had %v", outside, after, before)
			}
			if b, _ := os.ReadFile(marker); !bytes.Equal(b, []byte("untouched")) {
				t.Errorf("the marker outside the tree now says %q", b)
			}
			if after := listTree(t, "/etc/systemd/system"); !slices.Equal(after, hostRoot) {
				t.Errorf("the host's /etc/systemd/system changed")
			}
			if _, err := os.Lstat("/superjolt-agent"); err == nil && agentOnHostRoot != nil {
				os.Remove("/superjolt-agent")
				t.Errorf("the import wrote /superjolt-agent on the host")
			}
		})
	}
}

// relink replaces the file or directory at p by a symbolic link to target.
func relink(t *testing.T, p, target string) {
	t.Helper()
	if err := os.RemoveAll(p); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, p); err != nil {
		t.Fatal(err)
	}
}

// TestDiskPartitionNumbers: partitions are named by their number in the table, which for an MBR
// need not be their place in sfdisk's list (empty slots are not listed).
func TestDiskPartitionNumbers(t *testing.T) {
	imagetest.Need(t, false, "sfdisk", "mkfs.ext4")
	dir := t.TempDir()
	fsImg := filepath.Join(dir, "fs.ext4")
	imagetest.Run(t, "mkfs.ext4", "-q", "-F", fsImg, "4096k")
	disk := filepath.Join(dir, "mbr.raw")
	if err := os.WriteFile(disk, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(disk, 8<<20); err != nil {
		t.Fatal(err)
	}
	imagetest.RunIn(t, "label: dos\n3: start=4096, size=8192, type=83\n", "sfdisk", "--quiet", disk)
	imagetest.Run(t, "dd", "if="+fsImg, "of="+disk, "bs=1M", "seek=2", "conv=notrunc", "status=none")
	parts, err := diskPartitions(context.Background(), disk)
	if err != nil {
		t.Fatal(err)
	}
	if want := []partition{{Number: 3, Start: 2 << 20, Size: 4 << 20, FS: "ext4"}}; !slices.Equal(parts, want) {
		t.Errorf("partitions %+v, want %+v", parts, want)
	}
	parts, err = diskPartitions(context.Background(), fsImg)
	if want := []partition{{Number: 1, Start: 0, Size: 4 << 20, FS: "ext4"}}; err != nil || !slices.Equal(parts, want) {
		t.Errorf("bare file system: partitions %+v, %v; want %+v", parts, err, want)
	}
}
