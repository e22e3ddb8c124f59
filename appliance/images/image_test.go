package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestBuildImage builds an image with a stand-in agent and checks every part without booting it.
func TestBuildImage(t *testing.T) {
	if m := Missing(); len(m) > 0 {
		t.Skipf("missing: %s", strings.Join(m, ", "))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	// The stand-in agent: a static executable (the build refuses anything
	// else) with a marker after its ELF image.
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Skipf("needs busybox-static for a static stand-in agent: %v", err)
	}
	agent := filepath.Join(t.TempDir(), "agent")
	if err := os.WriteFile(agent, append(bb, "stand-in agent"...), 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "img")
	img, err := Build(ctx, dir, BuildOptions{Agent: agent, RootfsSize: 64 << 20, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(img.KernelRelease, "-cloud-amd64") {
		t.Errorf("kernel release %q is not a cloud kernel", img.KernelRelease)
	}
	// Dependencies before dependents.
	pos := func(m string) int { return slices.Index(img.Modules, m) }
	for _, dep := range [][2]string{
		{"virtio", "virtio_mmio"}, {"virtio_ring", "virtio_blk"}, {"virtio", "virtio_console"},
		{"vsock", "vmw_vsock_virtio_transport_common"}, {"vmw_vsock_virtio_transport_common", "vsock_loopback"},
	} {
		if pos(dep[0]) < 0 || pos(dep[1]) < 0 || pos(dep[0]) > pos(dep[1]) {
			t.Errorf("module order %v: %s must come before %s", img.Modules, dep[0], dep[1])
		}
	}
	if len(img.Modules) != len(guestModules) {
		t.Errorf("modules %v, want all of %v", img.Modules, guestModules)
	}

	// The kernel is a bzImage.
	k, err := os.ReadFile(img.Kernel)
	if err != nil {
		t.Fatal(err)
	}
	if len(k) < 1<<20 || string(k[0x202:0x206]) != "HdrS" {
		t.Errorf("vmlinuz (%d bytes) is not a bzImage", len(k))
	}

	// The initramfs holds the agent as /init, the modules and their order.
	f, err := os.Open(img.Initrd)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if cpioBin, err := exec.LookPath("cpio"); err == nil {
		cmd := exec.Command(cpioBin, "-t", "--quiet")
		cmd.Stdin = bytes.NewReader(raw)
		out, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		list := strings.Fields(string(out))
		for _, want := range []string{"init", "dev/console", "proc", "sys", "newroot", "lib/modules/superjolt/order",
			"lib/modules/superjolt/virtio_blk.ko", "lib/modules/superjolt/vsock_loopback.ko"} {
			if !slices.Contains(list, want) {
				t.Errorf("initramfs lacks %s (has %v)", want, list)
			}
		}
	}
	wantOrder := strings.Join(img.Modules, ".ko\n") + ".ko\n"
	if !bytes.Contains(raw, []byte(wantOrder)) {
		t.Errorf("initramfs order file is not %q", wantOrder)
	}
	if !bytes.Contains(raw, []byte("stand-in agent")) {
		t.Error("initramfs does not hold the agent")
	}

	// rootfs.img is a clean ext4 with busybox, its applets and the agent.
	if out, err := exec.Command(lookPath("e2fsck"), "-fn", img.Rootfs).CombinedOutput(); err != nil {
		t.Errorf("e2fsck: %v\n%s", err, out)
	}
	debugfs := func(req string) string {
		out, err := exec.Command(lookPath("debugfs"), "-R", req, img.Rootfs).CombinedOutput()
		if err != nil {
			t.Fatalf("debugfs %s: %v\n%s", req, err, out)
		}
		return string(out)
	}
	if out := debugfs("stat /bin/sh"); !strings.Contains(out, "Type: symlink") || !strings.Contains(out, `"busybox"`) {
		t.Errorf("/bin/sh is not a symlink to busybox:\n%s", out)
	}
	if out := debugfs("cat /sbin/superjolt-agent"); !strings.Contains(out, "stand-in agent") {
		t.Errorf("/sbin/superjolt-agent is not the agent: %q", out)
	}
	ls := debugfs("ls -l /")
	for _, d := range []string{"bin", "sbin", "etc", "tmp", "root", "data", "proc", "sys", "dev"} {
		if !strings.Contains(ls, " "+d+"\n") && !strings.Contains(ls, " "+d+" ") {
			t.Errorf("rootfs lacks /%s:\n%s", d, ls)
		}
	}
	if out := debugfs("stat /tmp"); !strings.Contains(out, "Mode:  01777") {
		t.Errorf("/tmp is not 1777:\n%s", out)
	}

	// Open reads it back.
	again, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.KernelRelease != img.KernelRelease || again.Rootfs != img.Rootfs {
		t.Errorf("Open = %+v, want %+v", again, img)
	}
}

func TestCopyDiskKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	f.Truncate(size)
	f.WriteAt([]byte("head"), 0)
	f.WriteAt([]byte("middle"), 32<<20)
	f.WriteAt([]byte("tail"), size-4)
	f.Close()

	dst := filepath.Join(dir, "dst")
	if err := CopyDisk(dst, src); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if !bytes.Equal(a, b) {
		t.Fatal("copy differs from the source")
	}
	var st1, st2 syscallStat
	stat(t, src, &st1)
	stat(t, dst, &st2)
	if st2.blocks > st1.blocks+1024 { // 512-byte blocks: within 512 KiB
		t.Errorf("copy uses %d blocks, the source %d: holes were filled", st2.blocks, st1.blocks)
	}
}

func TestPruneImages(t *testing.T) {
	root := t.TempDir()
	mk := func(name string, used time.Time) {
		p := filepath.Join(root, name)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(p, used, used)
	}
	stale := time.Now().Add(-imageMaxIdle - time.Hour)
	mk("keep", stale)
	mk("stale", stale)
	want := map[string]bool{"keep": true, "stale": false}
	// imageMaxKept+2 recent ones: the current one counts, so the oldest three go.
	for i := 0; i < imageMaxKept+2; i++ {
		name := fmt.Sprintf("recent-%02d", i)
		mk(name, time.Now().Add(-time.Duration(i)*time.Minute))
		want[name] = i < imageMaxKept-1
	}
	pruneImages(root, "keep", t.Logf)
	for name, w := range want {
		_, err := os.Stat(filepath.Join(root, name))
		if got := err == nil; got != w {
			t.Errorf("%s exists = %v, want %v", name, got, w)
		}
	}
}

// TestBuildRefusesDynamicAgent: an image build handed a dynamically linked
// agent fails at once, saying how to build it, before anything is fetched
// or built (such an agent makes every boot fail with "Failed to execute
// /init").
func TestBuildRefusesDynamicAgent(t *testing.T) {
	dynamic, err := exec.LookPath("ls")
	if err != nil {
		t.Skip("needs ls")
	}
	dir := t.TempDir()
	_, err = Build(context.Background(), dir, BuildOptions{Agent: dynamic, CacheDir: t.TempDir()})
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "make agent") {
		t.Fatalf("Build with %s as the agent: %v, want a refusal saying make agent", dynamic, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a refused build left %d files in %s", len(ents), dir)
	}
}
