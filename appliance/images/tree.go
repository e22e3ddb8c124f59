package images

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/superjolt/superjolt/guest"
)

// A distribution image is made from a root file system tree (an unpacked tarball, the files of an
// imported disk): the tree gets the agent and its units, and the image boots the tree's own kernel,
// with an initramfs made here whose /init is the agent: it loads the tree's virtio and vsock
// modules, mounts /dev/vda and execs the tree's /sbin/init (systemd). Everything the tree gets is
// written through an [os.Root], so no symlink in an imported tree can send a write outside it.

// Errors of a tree that cannot become an image. Each message says what to do. [BadInput] tells
// them (and the other errors of a file that cannot become an image) from a failure of the host.
var (
	ErrNoKernel  = errors.New("the image has no kernel: install one in it (Debian: linux-image-cloud-amd64; Ubuntu: linux-image-virtual) so that /boot/vmlinuz-RELEASE and /lib/modules/RELEASE are there, and import it again")
	ErrNoSystemd = errors.New("the image has no systemd (/sbin/init and /lib/systemd/systemd): superjolt runs distribution images whose init is systemd; install systemd-sysv in it, or use the built-in image")
	ErrNotAnOS   = errors.New("not a root file system: it has no /etc/os-release nor /usr/lib/os-release (pass the tarball or disk of a whole system, not a directory inside one)")
	ErrNoModules = errors.New("the image's kernel lacks what a superjolt guest needs")
)

// BadInput says whether err is the fault of the file or tree an image was asked from, rather than
// of the host making it.
func BadInput(err error) bool {
	for _, e := range []error{ErrNoKernel, ErrNoSystemd, ErrNotAnOS, ErrNoModules, ErrUnknownFormat, ErrDamaged} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// treeFiles are written into every distribution image.
const (
	bootConfigUnitName = "superjolt-bootconfig.service"
	agentUnitName      = "superjolt-agent.service"
	// sshHostKeysDropIn makes each VM's sshd generate host keys of its own on its first boot (the
	// image's are removed: VMs made from one image must not share them).
	sshHostKeysDropIn = `# superjolt: each VM makes its own SSH host keys on its first boot.
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
`
	// consoleAutologin: superjolt vm console is the operator's, on the host; it lands in a root
	// shell as it does on the built-in image.
	consoleAutologin = `# superjolt: the serial console is reached only by the host's operator.
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 - $TERM
`
	rootFstabLine = "/dev/vda / ext4 rw,errors=remount-ro 0 1"
)

// OSInfo is what a tree's os-release says.
type OSInfo struct {
	ID         string `json:"id,omitempty"`
	VersionID  string `json:"version_id,omitempty"`
	PrettyName string `json:"pretty_name,omitempty"`
}

func (o OSInfo) String() string {
	if o.PrettyName != "" {
		return o.PrettyName
	}
	return strings.TrimSpace(o.ID + " " + o.VersionID)
}

// TreeOptions say how [FromTree] makes an image.
type TreeOptions struct {
	// Agent is a static superjolt-agent binary. Required.
	Agent string
	// Source says where the tree came from, for image.json ("debian-12 (mmdebstrap)", a file name).
	Source string
	// MinFreeBytes is the free space the root file system is given beyond the tree (before the
	// VM's disk is grown to its tier). Default 256 MiB.
	MinFreeBytes int64
	// Logf reports progress. Default: silent.
	Logf func(format string, args ...any)
}

// FromTree makes a bootable image in dir from the root file system tree at root, which it changes:
// it installs the agent (/usr/sbin/superjolt-agent, its unit and the boot configuration's, both
// enabled), removes the image's SSH host keys and machine id (each VM makes its own), points
// /etc/fstab's root at /dev/vda, and logs the serial console in as root. It then writes vmlinuz (the
// tree's kernel), initrd (the agent as /init, the tree's modules, [guest.InitExecFile] naming
// /sbin/init) and rootfs.img (ext4, made with mkfs.ext4 -d from the tree), and image.json.
func FromTree(ctx context.Context, root, dir string, opts TreeOptions) (*Image, error) {
	if opts.Logf == nil {
		opts.Logf = func(string, ...any) {}
	}
	if opts.MinFreeBytes <= 0 {
		opts.MinFreeBytes = 256 << 20
	}
	if err := guest.CheckStatic(opts.Agent); err != nil {
		return nil, err
	}
	agent, err := os.ReadFile(opts.Agent)
	if err != nil {
		return nil, fmt.Errorf("images: agent: %w", err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, err
	}
	defer r.Close()

	osInfo, err := readOSRelease(r)
	if err != nil {
		return nil, err
	}
	if !hasSystemd(r) {
		return nil, ErrNoSystemd
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	opts.Logf("reading the kernel of %s", osInfo)
	// Removed whether treeKernel succeeds or not: it fails after copying some modules when the
	// kernel lacks others.
	kernelDir := filepath.Join(dir, ".kernel")
	defer os.RemoveAll(kernelDir)
	k, err := treeKernel(ctx, r, kernelDir)
	if err != nil {
		return nil, err
	}
	opts.Logf("kernel %s, %d modules for the initramfs", k.Release, len(k.Order))

	opts.Logf("installing the agent and its units")
	if err := prepareTree(r, agent, opts.Logf); err != nil {
		return nil, fmt.Errorf("images: prepare the tree: %w", err)
	}

	used, err := treeBytes(root)
	if err != nil {
		return nil, err
	}
	size := roundUp(used+used/4+opts.MinFreeBytes, 1<<20)
	opts.Logf("making rootfs.img: %d MiB of files in a %d MiB ext4 file system", used>>20, size>>20)
	img := &Image{OS: osInfo.String(), Init: "/sbin/init", Source: opts.Source}
	return writeImage(dir, img, k, agent, func(rootfs string) error {
		return mkfsFromTree(ctx, rootfs, root, size)
	})
}

// readOSRelease reads etc/os-release, or usr/lib/os-release (its usual target).
func readOSRelease(r *os.Root) (OSInfo, error) {
	var b []byte
	var err error
	for _, p := range []string{"etc/os-release", "usr/lib/os-release"} {
		if b, err = r.ReadFile(p); err == nil {
			break
		}
	}
	if err != nil {
		return OSInfo{}, ErrNotAnOS
	}
	var o OSInfo
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), "=")
		if !ok {
			continue
		}
		if u, err := strconv.Unquote(v); err == nil {
			v = u
		} else {
			v = strings.Trim(v, `'"`)
		}
		switch k {
		case "ID":
			o.ID = v
		case "VERSION_ID":
			o.VersionID = v
		case "PRETTY_NAME":
			o.PrettyName = v
		}
	}
	return o, nil
}

// hasSystemd says whether the tree boots systemd: /sbin/init is there (a link, whatever it points
// at) and so is systemd itself.
func hasSystemd(r *os.Root) bool {
	if _, err := r.Lstat("sbin/init"); err != nil {
		return false
	}
	for _, p := range []string{"lib/systemd/systemd", "usr/lib/systemd/systemd"} {
		if _, err := r.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// treeKernel finds the tree's kernel (the newest /boot/vmlinuz-RELEASE with /lib/modules/RELEASE)
// and copies it and the guest modules, uncompressed, into dir (see kernel).
func treeKernel(ctx context.Context, r *os.Root, dir string) (*kernel, error) {
	entries, err := fs.ReadDir(r.FS(), "boot")
	if err != nil {
		return nil, ErrNoKernel
	}
	var releases []string
	for _, e := range entries {
		rel, ok := strings.CutPrefix(e.Name(), "vmlinuz-")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if _, err := r.Stat(path.Join("lib/modules", rel)); err == nil {
			releases = append(releases, rel)
		}
	}
	if len(releases) == 0 {
		return nil, ErrNoKernel
	}
	slices.SortFunc(releases, compareRelease)
	release := releases[len(releases)-1]

	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return nil, err
	}
	vmlinuz, err := r.Open(path.Join("boot", "vmlinuz-"+release))
	if err != nil {
		return nil, err
	}
	err = writeFrom(filepath.Join(dir, "vmlinuz"), vmlinuz, 0o644)
	vmlinuz.Close()
	if err != nil {
		return nil, err
	}

	modDir := path.Join("lib/modules", release)
	builtin := map[string]bool{}
	if b, err := r.ReadFile(path.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if name, _ := moduleName(path.Base(l)); name != "" {
				builtin[strings.ReplaceAll(name, "-", "_")] = true
			}
		}
	}
	wanted := map[string]bool{}
	for _, m := range guestModules {
		if !builtin[m] {
			wanted[m] = true
		}
	}
	var mods []modInfo
	err = fs.WalkDir(r.FS(), path.Join(modDir, "kernel"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		name, comp := moduleName(d.Name())
		if name == "" || !wanted[strings.ReplaceAll(name, "-", "_")] {
			return nil
		}
		data, err := r.ReadFile(p)
		if err != nil {
			return err
		}
		if data, err = decompress(ctx, data, comp); err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
		mi, err := readModInfo(data, name+".ko")
		if err != nil {
			return err
		}
		delete(wanted, mi.Name)
		mods = append(mods, mi)
		return os.WriteFile(filepath.Join(dir, "modules", mi.Name+".ko"), data, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("images: kernel modules of %s: %w", release, err)
	}
	if len(wanted) > 0 {
		missing := make([]string, 0, len(wanted))
		for m := range wanted {
			missing = append(missing, m)
		}
		slices.Sort(missing)
		return nil, fmt.Errorf("%w: kernel %s has neither built in nor as modules %s (virtio-mmio, virtio disk, console and net, vsock): install a kernel built for VMs (Debian: linux-image-cloud-amd64)", ErrNoModules, release, strings.Join(missing, ", "))
	}
	k, err := orderModules(dir, release, "image kernel "+release, mods)
	if err != nil {
		return nil, err
	}
	return k, nil
}

// compareRelease orders kernel releases by their numeric parts (6.1.0-9 before 6.1.0-10).
func compareRelease(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' || r == '+' || r == '_' })
	}
	pa, pb := split(a), split(b)
	for i := 0; i < len(pa) && i < len(pb); i++ {
		na, ea := strconv.Atoi(pa[i])
		nb, eb := strconv.Atoi(pb[i])
		if ea == nil && eb == nil {
			if na != nb {
				return na - nb
			}
			continue
		}
		if c := strings.Compare(pa[i], pb[i]); c != 0 {
			return c
		}
	}
	return len(pa) - len(pb)
}

// prepareTree installs the agent and what a VM made from the tree needs (see FromTree).
func prepareTree(r *os.Root, agent []byte, logf func(string, ...any)) error {
	write := func(name string, data []byte, perm os.FileMode) error {
		if err := r.MkdirAll(path.Dir(name), 0o755); err != nil {
			return err
		}
		// A link in the tree's place is replaced, never written through.
		if fi, err := r.Lstat(name); err == nil && !fi.Mode().IsRegular() {
			if err := r.Remove(name); err != nil {
				return err
			}
		}
		if err := r.WriteFile(name, data, perm); err != nil {
			return err
		}
		return r.Chmod(name, perm)
	}
	enable := func(unit, target string) error {
		link := path.Join("etc/systemd/system", target+".wants", unit)
		if err := r.MkdirAll(path.Dir(link), 0o755); err != nil {
			return err
		}
		r.Remove(link)
		return r.Symlink("/etc/systemd/system/"+unit, link)
	}
	agentPath := strings.TrimPrefix(guest.AgentPath, "/")
	if err := write(agentPath, agent, 0o755); err != nil {
		return err
	}
	for _, u := range []struct{ name, text string }{
		{agentUnitName, guest.AgentUnit},
		{bootConfigUnitName, guest.BootConfigUnit},
	} {
		if err := write(path.Join("etc/systemd/system", u.name), []byte(u.text), 0o644); err != nil {
			return err
		}
		if err := enable(u.name, "sysinit.target"); err != nil {
			return err
		}
	}
	if err := write("etc/systemd/system/serial-getty@ttyS0.service.d/superjolt.conf", []byte(consoleAutologin), 0o644); err != nil {
		return err
	}
	if _, err := r.Stat("usr/sbin/sshd"); err == nil {
		for _, unit := range []string{"ssh.service", "sshd.service"} {
			if err := write(path.Join("etc/systemd/system", unit+".d", "superjolt-host-keys.conf"), []byte(sshHostKeysDropIn), 0o644); err != nil {
				return err
			}
		}
		keys, _ := fs.Glob(r.FS(), "etc/ssh/ssh_host_*")
		for _, k := range keys {
			if err := r.Remove(k); err != nil {
				return err
			}
		}
		logf("removed %d SSH host key files: each VM makes its own", len(keys))
	}
	// An empty machine id: systemd makes one on each VM's first boot and keeps it.
	if err := write("etc/machine-id", nil, 0o444); err != nil {
		return err
	}
	if fi, err := r.Lstat("var/lib/dbus/machine-id"); err == nil && fi.Mode().IsRegular() {
		r.Remove("var/lib/dbus/machine-id")
	}
	fstab, err := r.ReadFile("etc/fstab")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return write("etc/fstab", []byte(rewriteFstab(string(fstab))), 0o644)
}

// rewriteFstab points the root entry at the VM's disk, /dev/vda, and comments out the entries of
// other block devices (a VM has one disk): swap, /boot, /boot/efi of the machine the image came
// from would fail the boot.
func rewriteFstab(fstab string) string {
	var b strings.Builder
	b.WriteString("# superjolt: the VM's disk is /dev/vda; entries of other disks are commented out.\n")
	b.WriteString(rootFstabLine + "\n")
	for _, line := range strings.Split(strings.TrimRight(fstab, "\n"), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			if line != "" && !strings.HasPrefix(line, "# superjolt:") {
				b.WriteString(line + "\n")
			}
			continue
		}
		if line == rootFstabLine {
			continue
		}
		disk := strings.HasPrefix(f[0], "/dev/") || strings.Contains(f[0], "UUID=") || strings.Contains(f[0], "LABEL=")
		if disk || (len(f) > 1 && f[1] == "/") {
			b.WriteString("#" + line + "\n")
			continue
		}
		b.WriteString(line + "\n")
	}
	return b.String()
}

// treeBytes is the space the tree's files take (their blocks, as du counts them).
func treeBytes(root string) (int64, error) {
	out, err := run(context.Background(), "", "du", "-s", "-x", "--block-size=1", root)
	if err != nil {
		return 0, err
	}
	f := strings.Fields(out)
	if len(f) == 0 {
		return 0, fmt.Errorf("du %s: no answer", root)
	}
	return strconv.ParseInt(f[0], 10, 64)
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }

// mkfsFromTree makes an ext4 file system of size bytes at img holding the tree (mkfs.ext4 -d:
// nothing is mounted; owners, modes, links, devices and extended attributes are kept).
func mkfsFromTree(ctx context.Context, img, tree string, size int64) error {
	mkfs := lookPath("mkfs.ext4")
	if mkfs == "" {
		return errors.New("mkfs.ext4 not found (apt-get install e2fsprogs)")
	}
	os.Remove(img)
	_, err := run(ctx, "", mkfs, "-q", "-F", "-t", "ext4", "-L", "superjolt-root",
		"-d", tree, img, strconv.FormatInt(size>>10, 10)+"k")
	return err
}
