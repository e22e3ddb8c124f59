package images

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/superjolt/superjolt/appliance/images/cpio"
	"github.com/superjolt/superjolt/guest"
)

// File names inside an image directory.
const (
	KernelFile = "vmlinuz"
	InitrdFile = "initrd"
	RootfsFile = "rootfs.img"
	infoFile   = "image.json"
)

// builderVersion changes whenever the image layout changes, so that cached images are rebuilt.
const builderVersion = "1"

// DefaultRootfsSize is the size of rootfs.img (a sparse file: only what is written takes space).
const DefaultRootfsSize = 256 << 20

// Image is a bootable guest image: a kernel, an initramfs whose /init is the agent, and an ext4 root
// filesystem with busybox and the agent.
type Image struct {
	Dir           string   `json:"-"`
	Kernel        string   `json:"-"`              // Dir/vmlinuz
	Initrd        string   `json:"-"`              // Dir/initrd
	Rootfs        string   `json:"-"`              // Dir/rootfs.img, to be copied for each VM
	KernelRelease string   `json:"kernel_release"` // what uname -r says in the guest
	KernelPackage string   `json:"kernel_package"` // the Debian package, name=version
	Modules       []string `json:"modules"`        // in load order
	AgentSHA256   string   `json:"agent_sha256"`
	// OS, Init and Source describe a distribution image (see FromTree): what its os-release calls
	// it, the program its initramfs execs on the root disk, where it came from. The built-in
	// image leaves them empty: its init is the agent.
	OS     string `json:"os,omitempty"`
	Init   string `json:"init,omitempty"`
	Source string `json:"source,omitempty"`
}

// BuildOptions say what goes into an image. Zero fields take the defaults named beside them.
type BuildOptions struct {
	// Agent is a built superjolt-agent (static, CGO_ENABLED=0). Default: built from ModuleDir.
	Agent string
	// ModuleDir is the superjolt module's root, to build the agent from. Default: `go env GOMOD`'s
	// directory as seen from the current directory.
	ModuleDir string
	// Busybox is a statically linked busybox. Default: /bin/busybox (Debian's busybox-static).
	Busybox string
	// RootfsSize is rootfs.img's size in bytes. Default: [DefaultRootfsSize].
	RootfsSize int64
	// CacheDir keeps downloaded kernels (and, for [Cached], built images). Default: [CacheDir].
	CacheDir string
	// Logf reports progress. Default: silent.
	Logf func(format string, args ...any)
}

func (o BuildOptions) withDefaults() BuildOptions {
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	if o.RootfsSize == 0 {
		o.RootfsSize = DefaultRootfsSize
	}
	if o.CacheDir == "" {
		o.CacheDir = CacheDir()
	}
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	return o
}

// CacheDir is where kernels and images are cached: $SUPERJOLT_TESTVM_CACHE if set, else
// $XDG_CACHE_HOME/superjolt/testvm (~/.cache/superjolt/testvm), else /var/cache/superjolt/testvm.
// The directory and the variable keep the names they had when this code lived in package testvm,
// so that caches already on disk (installed daemons, CI) are used rather than built again.
func CacheDir() string {
	if d := os.Getenv("SUPERJOLT_TESTVM_CACHE"); d != "" {
		return d
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "superjolt", "testvm")
	}
	return "/var/cache/superjolt/testvm"
}

// Missing names the host tools the image build and the boot need that are not installed, with the
// Debian package to install for each; empty when all is there.
func Missing() []string {
	var missing []string
	for _, t := range []struct{ bin, pkg string }{
		{"qemu-system-x86_64", "qemu-system-x86"},
		{"mkfs.ext4", "e2fsprogs"},
		{"apt-get", "apt"},
		{"apt-cache", "apt"},
		{"dpkg-deb", "dpkg"},
		{"go", "the Go toolchain"},
	} {
		if lookPath(t.bin) == "" {
			missing = append(missing, t.bin+" ("+t.pkg+")")
		}
	}
	if _, err := os.Stat("/usr/share/qemu/qboot.rom"); err != nil {
		missing = append(missing, "/usr/share/qemu/qboot.rom (qemu-system-data)")
	}
	if _, err := os.Stat("/bin/busybox"); err != nil {
		missing = append(missing, "/bin/busybox (busybox-static)")
	}
	return missing
}

// lookPath finds a program in PATH or in the sbin directories a non-root PATH may lack.
func lookPath(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/go/bin"} {
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// Build writes a bootable image (vmlinuz, initrd, rootfs.img, image.json) into dir, creating it and
// replacing the image files already there.
// This is also the built-in image of a new installation.
func Build(ctx context.Context, dir string, opts BuildOptions) (*Image, error) {
	opts = opts.withDefaults()
	k, err := fetchKernel(ctx, opts.CacheDir, opts.Logf)
	if err != nil {
		return nil, fmt.Errorf("images: kernel: %w", err)
	}
	agent, cleanup, err := agentBinary(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()
	return build(ctx, dir, k, agent, opts)
}

func build(ctx context.Context, dir string, k *kernel, agent string, opts BuildOptions) (*Image, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	agentData, err := os.ReadFile(agent)
	if err != nil {
		return nil, fmt.Errorf("images: agent: %w", err)
	}
	opts.Logf("writing the initramfs and making rootfs.img (%d MiB)", opts.RootfsSize>>20)
	return writeImage(dir, &Image{}, k, agentData, func(rootfs string) error {
		return makeRootfs(ctx, rootfs, agentData, opts)
	})
}

// writeImage fills dir with an image booting kernel k: vmlinuz, the initramfs (the agent as /init,
// exec'ing img.Init when it is set), rootfs.img as makeRootfs makes it, and image.json describing
// img (whose kernel and agent fields it sets).
func writeImage(dir string, img *Image, k *kernel, agent []byte, makeRootfs func(rootfs string) error) (*Image, error) {
	sum := sha256.Sum256(agent)
	img.KernelRelease, img.KernelPackage, img.Modules = k.Release, k.Package, k.Order
	img.AgentSHA256 = hex.EncodeToString(sum[:])
	img.setDir(dir)
	if err := copyFile(img.Kernel, filepath.Join(k.Dir, "vmlinuz"), 0o644); err != nil {
		return nil, err
	}
	if err := writeInitrd(img.Initrd, agent, k, img.Init); err != nil {
		return nil, fmt.Errorf("images: initrd: %w", err)
	}
	if err := makeRootfs(img.Rootfs); err != nil {
		return nil, fmt.Errorf("images: rootfs: %w", err)
	}
	info, _ := json.MarshalIndent(img, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, infoFile), append(info, '\n'), 0o644); err != nil {
		return nil, err
	}
	return img, nil
}

func (img *Image) setDir(dir string) {
	img.Dir = dir
	img.Kernel = filepath.Join(dir, KernelFile)
	img.Initrd = filepath.Join(dir, InitrdFile)
	img.Rootfs = filepath.Join(dir, RootfsFile)
}

// Open reads an image that [Build] wrote into dir.
func Open(dir string) (*Image, error) {
	b, err := os.ReadFile(filepath.Join(dir, infoFile))
	if err != nil {
		return nil, err
	}
	img := &Image{}
	if err := json.Unmarshal(b, img); err != nil {
		return nil, fmt.Errorf("images: %s: %w", dir, err)
	}
	img.setDir(dir)
	for _, p := range []string{img.Kernel, img.Initrd, img.Rootfs} {
		if _, err := os.Stat(p); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// Cached returns the image for the current agent source, kernel package, module list and busybox, building it
// under CacheDir/images/<key> the first time. Concurrent callers (test binaries of several packages)
// wait on a lock file and share one build.
func Cached(ctx context.Context, opts BuildOptions) (*Image, error) {
	opts = opts.withDefaults()
	if err := os.MkdirAll(opts.CacheDir, 0o755); err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(opts.CacheDir, "lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()

	k, err := fetchKernel(ctx, opts.CacheDir, opts.Logf)
	if err != nil {
		return nil, fmt.Errorf("images: kernel: %w", err)
	}
	agent, cleanup, err := agentBinary(ctx, opts)
	if err != nil {
		return nil, err
	}
	defer cleanup()

	h := sha256.New()
	fmt.Fprintf(h, "builder=%s\nkernel=%s\nmodules=%s\nsize=%d\n", builderVersion, k.Package,
		strings.Join(k.Order, ","), opts.RootfsSize)
	for _, f := range []string{agent, opts.Busybox} {
		if err := hashFile(h, f); err != nil {
			return nil, err
		}
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(opts.CacheDir, "images", key)
	if img, err := Open(dir); err == nil {
		now := time.Now()
		os.Chtimes(dir, now, now) // marks it used, for pruneImages
		return img, nil
	}
	opts.Logf("building image %s in %s", key, dir)
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), ".tmp-"+key+"-")
	if err != nil {
		return nil, err
	}
	os.Chmod(tmp, 0o755)
	defer os.RemoveAll(tmp)
	if _, err := build(ctx, tmp, k, agent, opts); err != nil {
		return nil, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	pruneImages(filepath.Dir(dir), key, opts.Logf)
	return Open(dir)
}

// A new build removes cached images that no Cached call has used for imageMaxIdle, and all but the
// imageMaxKept most recently used.
const (
	imageMaxIdle = 3 * 24 * time.Hour
	imageMaxKept = 8
)

// pruneImages removes stale cached images (never keep), so that every agent change does not leave
// 30 MB behind for good. It runs under the cache lock. An image in use by a running VM is safe:
// QEMU has read its kernel and initrd, and each VM boots from its own copy of rootfs.img.
func pruneImages(root, keep string, logf func(string, ...any)) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() && e.Name() != keep {
			dirs = append(dirs, filepath.Join(root, e.Name()))
		}
	}
	pruneCache(dirs, "image", logf)
}

// pruneCache removes the cached entries (files or directories) of paths that nothing has used (their
// modification time) for imageMaxIdle, and all but the imageMaxKept-1 most recently used: the one
// just made or used, which the caller left out of paths, makes imageMaxKept.
func pruneCache(paths []string, what string, logf func(string, ...any)) {
	type entry struct {
		path string
		used time.Time
	}
	var entries []entry
	for _, p := range paths {
		if st, err := os.Stat(p); err == nil {
			entries = append(entries, entry{p, st.ModTime()})
		}
	}
	slices.SortFunc(entries, func(a, b entry) int { return b.used.Compare(a.used) })
	for i, e := range entries {
		if i+1 < imageMaxKept && time.Since(e.used) < imageMaxIdle {
			continue
		}
		logf("removing cached %s %s, last used %s", what, filepath.Base(e.path), e.used.Format(time.DateTime))
		os.RemoveAll(e.path)
	}
}

// lockFile takes an exclusive flock on path, waiting while ctx allows.
func lockFile(ctx context.Context, path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { unix.Flock(int(f.Fd()), unix.LOCK_UN); f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("images: lock %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, fmt.Errorf("images: waiting for %s: %w", path, ctx.Err())
		case <-timeAfter(100):
		}
	}
}

func hashFile(w io.Writer, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(w, f)
	return err
}

// agentBinary returns opts.Agent, or builds the agent from the module source into a temp file.
func agentBinary(ctx context.Context, opts BuildOptions) (string, func(), error) {
	if opts.Agent != "" {
		// Checked before anything is built: a dynamically linked agent
		// makes every boot panic ("Failed to execute /init").
		if err := guest.CheckStatic(opts.Agent); err != nil {
			return "", nil, err
		}
		return opts.Agent, func() {}, nil
	}
	tmp, err := os.MkdirTemp("", "superjolt-agent-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	out := filepath.Join(tmp, "superjolt-agent")
	if err := BuildAgent(ctx, opts.ModuleDir, out); err != nil {
		cleanup()
		return "", nil, err
	}
	return out, cleanup, nil
}

// BuildAgent builds cmd/superjolt-agent of the module in moduleDir ("" = the module around the current
// directory) as a static binary at out. The flags make the build reproducible, so an unchanged source
// gives the same bytes and the same cache key.
func BuildAgent(ctx context.Context, moduleDir, out string) error {
	goBin := lookPath("go")
	if goBin == "" {
		return errors.New("images: go toolchain not found")
	}
	if moduleDir == "" {
		gomod, err := run(ctx, "", goBin, "env", "GOMOD")
		gomod = strings.TrimSpace(gomod)
		if err != nil || gomod == "" || gomod == os.DevNull {
			return fmt.Errorf("images: not inside the superjolt module (go env GOMOD = %q, %v)", gomod, err)
		}
		moduleDir = filepath.Dir(gomod)
	}
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w",
		"-o", out, "./cmd/superjolt-agent")
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("images: build agent: %w: %s", err, b)
	}
	return nil
}

// writeInitrd writes the gzip-compressed newc initramfs: /init is the agent (init mode), with the
// guest modules and their load order under /lib/modules/superjolt, and, when initExec is set, the
// [guest.InitExecFile] naming the program to exec on the root disk (else the agent serves as PID 1).
func writeInitrd(path string, agent []byte, k *kernel, initExec string) error {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w := cpio.NewWriter(zw)
	for _, d := range []string{"dev", "proc", "sys", "newroot", "lib", "lib/modules", "lib/modules/superjolt"} {
		if err := w.Dir(d, 0o755); err != nil {
			return err
		}
	}
	if err := w.CharDev("dev/console", 0o600, 5, 1); err != nil {
		return err
	}
	if err := w.File("init", 0o755, agent); err != nil {
		return err
	}
	var order strings.Builder
	for _, m := range k.Order {
		data, err := os.ReadFile(filepath.Join(k.Dir, "modules", m+".ko"))
		if err != nil {
			return err
		}
		if err := w.File("lib/modules/superjolt/"+m+".ko", 0o644, data); err != nil {
			return err
		}
		order.WriteString(m + ".ko\n")
	}
	if err := w.File("lib/modules/superjolt/order", 0o644, []byte(order.String())); err != nil {
		return err
	}
	if initExec != "" {
		if err := w.File(strings.TrimPrefix(guest.InitExecFile, "/"), 0o644, []byte(initExec+"\n")); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}

// makeRootfs makes rootfs.img with mkfs.ext4 -d from a staging directory: nothing is mounted.
func makeRootfs(ctx context.Context, img string, agent []byte, opts BuildOptions) error {
	mkfs := lookPath("mkfs.ext4")
	if mkfs == "" {
		return errors.New("mkfs.ext4 not found (apt-get install e2fsprogs)")
	}
	stage, err := os.MkdirTemp("", "superjolt-rootfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(stage)

	dirs := []struct {
		name string
		perm os.FileMode
	}{
		{"bin", 0o755}, {"sbin", 0o755}, {"etc", 0o755}, {"tmp", 0o777 | os.ModeSticky}, {"root", 0o700},
		{"data", 0o755}, {"proc", 0o555}, {"sys", 0o555}, {"dev", 0o755}, {"run", 0o755},
		{"mnt", 0o755}, {"var", 0o755}, {"lib", 0o755},
	}
	for _, d := range dirs {
		p := filepath.Join(stage, d.name)
		if err := os.Mkdir(p, d.perm); err != nil {
			return err
		}
		if err := os.Chmod(p, d.perm); err != nil { // umask
			return err
		}
	}
	if err := copyFile(filepath.Join(stage, "bin/busybox"), opts.Busybox, 0o755); err != nil {
		return fmt.Errorf("busybox: %w (apt-get install busybox-static)", err)
	}
	list, err := run(ctx, "", opts.Busybox, "--list")
	if err != nil {
		return err
	}
	for _, applet := range strings.Fields(list) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		if err := os.Symlink("busybox", filepath.Join(stage, "bin", applet)); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(stage, "sbin/superjolt-agent"), agent, 0o755); err != nil {
		return err
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":      "root:x:0:\n",
		"etc/hostname":   "superjolt\n", // the agent sets it, or the one from superjolt.hostname
		"etc/hosts":      "127.0.0.1\tlocalhost\n127.0.1.1\tsuperjolt\n",
		"etc/os-release": "NAME=superjolt-testvm\nID=superjolt\nVERSION_ID=" + builderVersion + "\n",
		"etc/fstab":      "/dev/vda / ext4 rw 0 1\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(stage, name), []byte(content), 0o644); err != nil {
			return err
		}
	}
	os.Remove(img)
	_, err = run(ctx, "", mkfs, "-q", "-F", "-t", "ext4", "-L", "superjolt-root", "-E", "root_owner=0:0",
		"-d", stage, img, strconv.FormatInt(opts.RootfsSize>>10, 10)+"k")
	return err
}

func copyFile(dst, src string, perm os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return writeFrom(dst, in, perm)
}
