package images

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
)

// KernelPackage is the Debian metapackage whose dependency is the guest kernel.
const KernelPackage = "linux-image-cloud-amd64"

// guestModules are the kernel modules the guest's init loads (in dependency order, worked out from each
// module's modinfo): virtio-mmio devices for microvm, the root disk, the agent's virtio-serial port,
// vsock (with its loopback transport, so the guest can test vsock on itself), and the virtio-net NIC
// (virtio_net needs net_failover, which needs failover).
var guestModules = []string{
	"virtio_ring", "virtio", "virtio_mmio", "virtio_blk", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport", "vsock_loopback",
	"failover", "net_failover", "virtio_net",
}

// kernel is an extracted guest kernel.
type kernel struct {
	Dir     string // holds vmlinuz and modules/*.ko
	Release string // uname -r in the guest, e.g. 6.1.0-56-cloud-amd64
	Package string // the Debian package it came from, name=version
	Order   []string
}

// kernelCandidate asks apt (offline, from its lists) which kernel package the metapackage points to.
func kernelCandidate(ctx context.Context) (pkg, version string, err error) {
	out, err := run(ctx, "", "apt-cache", "show", "--no-all-versions", KernelPackage)
	if err != nil {
		return "", "", err
	}
	deps := debField(out, "Depends")
	for _, d := range strings.Split(deps, ",") {
		name, ver, _ := strings.Cut(strings.TrimSpace(d), " ")
		if strings.HasPrefix(name, "linux-image-") {
			return name, strings.Trim(strings.TrimPrefix(strings.TrimSpace(ver), "(="), " )"), nil
		}
	}
	return "", "", fmt.Errorf("%s has no linux-image dependency (Depends: %q)", KernelPackage, deps)
}

// debField returns a field from control-file text (the first paragraph that has it).
func debField(control, field string) string {
	sc := bufio.NewScanner(strings.NewReader(control))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// fetchKernel returns the extracted guest kernel, downloading and extracting it into cacheDir/kernel
// once per kernel package version. When apt cannot say which version is current (no package lists
// and no way to update them), the newest kernel already extracted is used.
func fetchKernel(ctx context.Context, cacheDir string, logf func(string, ...any)) (*kernel, error) {
	kroot := filepath.Join(cacheDir, "kernel")
	pkg, ver, err := kernelCandidate(ctx)
	if err != nil || pkg == "" {
		if k, kerr := newestKernel(kroot); kerr == nil && k.hasModules(guestModules) {
			logf("apt cannot resolve %s (%v); using cached kernel %s", KernelPackage, err, k.Package)
			return k, nil
		}
		logf("apt cannot resolve %s (%v); running apt-get update", KernelPackage, err)
		if _, uerr := run(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
			return nil, fmt.Errorf("resolve %s: %v; apt-get update: %w", KernelPackage, err, uerr)
		}
		if pkg, ver, err = kernelCandidate(ctx); err != nil {
			return nil, err
		}
	}
	dir := filepath.Join(kroot, pkg+"_"+ver)
	if k, err := loadKernel(dir); err == nil && k.hasModules(guestModules) {
		return k, nil
	}

	debs := filepath.Join(cacheDir, "debs")
	if err := os.MkdirAll(debs, 0o755); err != nil {
		return nil, err
	}
	deb, err := aptDownload(ctx, debs, pkg, ver, logf)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(kroot, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(kroot, ".tmp-")
	if err != nil {
		return nil, err
	}
	os.Chmod(tmp, 0o755)
	defer os.RemoveAll(tmp)
	if err := extractKernel(ctx, deb, tmp, pkg+"="+ver); err != nil {
		return nil, err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return nil, err
	}
	os.Remove(deb) // 27 MB, and the extracted files are all we need
	return loadKernel(dir)
}

// aptDownload downloads pkg=ver into dir and returns the .deb's path. Without package lists it runs
// apt-get update once and tries again.
func aptDownload(ctx context.Context, dir, pkg, ver string, logf func(string, ...any)) (string, error) {
	want := pkg + "=" + ver
	logf("downloading %s", want)
	if _, err := run(ctx, dir, "apt-get", "download", "-q", want); err != nil {
		logf("apt-get download failed (%v); running apt-get update", err)
		if _, uerr := run(ctx, "", "apt-get", "update", "-qq"); uerr != nil {
			return "", fmt.Errorf("apt-get download %s: %v; apt-get update: %w", want, err, uerr)
		}
		if _, err := run(ctx, dir, "apt-get", "download", "-q", want); err != nil {
			return "", err
		}
	}
	matches, _ := filepath.Glob(filepath.Join(dir, pkg+"_*.deb"))
	for _, m := range matches {
		// The file name carries the version with ':' escaped as %3a.
		if strings.Contains(filepath.Base(m), "_"+strings.ReplaceAll(ver, ":", "%3a")+"_") {
			return m, nil
		}
	}
	return "", fmt.Errorf("apt-get download %s left no .deb in %s", want, dir)
}

// extractKernel reads vmlinuz and the guest modules out of a kernel .deb into dir: dpkg-deb writes the
// data tarball to a pipe and archive/tar picks the few files needed.
func extractKernel(ctx context.Context, deb, dir, pkg string) error {
	if err := os.MkdirAll(filepath.Join(dir, "modules"), 0o755); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "dpkg-deb", "--fsys-tarfile", deb)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("dpkg-deb: %w", err)
	}
	defer cmd.Wait()

	wanted := map[string]bool{}
	for _, m := range guestModules {
		wanted[m] = true
	}
	var release string
	var mods []modInfo
	tr := tar.NewReader(out)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read %s: %w", deb, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		base := filepath.Base(h.Name)
		switch {
		case strings.HasPrefix(h.Name, "./boot/vmlinuz-"):
			release = strings.TrimPrefix(base, "vmlinuz-")
			if err := writeFrom(filepath.Join(dir, "vmlinuz"), tr, 0o666); err != nil {
				return err
			}
		case strings.Contains(h.Name, "/kernel/"):
			name, comp := moduleName(base)
			if name == "" || !wanted[name] {
				continue
			}
			data, err := io.ReadAll(tr)
			if err != nil {
				return err
			}
			if data, err = decompress(ctx, data, comp); err != nil {
				return fmt.Errorf("%s: %w", base, err)
			}
			mi, err := readModInfo(data, name+".ko")
			if err != nil {
				return err
			}
			mods = append(mods, mi)
			delete(wanted, name)
			if err := os.WriteFile(filepath.Join(dir, "modules", name+".ko"), data, 0o644); err != nil {
				return err
			}
		}
	}
	// Drain and reap dpkg-deb before judging.
	io.Copy(io.Discard, out)
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("dpkg-deb --fsys-tarfile %s: %w: %s", deb, err, stderr.String())
	}
	if release == "" {
		return fmt.Errorf("%s has no /boot/vmlinuz-*", deb)
	}
	if len(wanted) > 0 {
		var missing []string
		for m := range wanted {
			missing = append(missing, m)
		}
		slices.Sort(missing)
		return fmt.Errorf("%s lacks modules %v", deb, missing)
	}
	_, err = orderModules(dir, release, pkg, mods)
	return err
}

// orderModules checks that mods were built for release, puts them in load order (guestModules'
// order where dependencies allow) and writes dir/kernel.info.
func orderModules(dir, release, pkg string, mods []modInfo) (*kernel, error) {
	for _, m := range mods {
		if !strings.HasPrefix(m.Vermagic, release+" ") {
			return nil, fmt.Errorf("module %s is built for %q, the kernel is %s", m.Name, m.Vermagic, release)
		}
	}
	slices.SortStableFunc(mods, func(a, b modInfo) int {
		return slices.Index(guestModules, a.Name) - slices.Index(guestModules, b.Name)
	})
	order, err := loadOrder(mods)
	if err != nil {
		return nil, err
	}
	meta := "release=" + release + "\npackage=" + pkg + "\norder=" + strings.Join(order, ",") + "\n"
	if err := os.WriteFile(filepath.Join(dir, "kernel.info"), []byte(meta), 0o644); err != nil {
		return nil, err
	}
	return &kernel{Dir: dir, Release: release, Package: pkg, Order: order}, nil
}

// moduleName splits "virtio_blk.ko.xz" into ("virtio_blk", "xz"). It returns "" for other files.
func moduleName(base string) (name, compression string) {
	for _, comp := range []string{"", ".xz", ".zst", ".gz"} {
		if n, ok := strings.CutSuffix(base, ".ko"+comp); ok {
			return n, strings.TrimPrefix(comp, ".")
		}
	}
	return "", ""
}

// decompress undoes a module's compression with the matching tool, so that the guest's init can
// hand a plain .ko to finit_module.
func decompress(ctx context.Context, data []byte, comp string) ([]byte, error) {
	if comp == "" {
		return data, nil
	}
	tool := map[string]string{"xz": "xz", "zst": "zstd", "gz": "gzip"}[comp]
	cmd := exec.CommandContext(ctx, tool, "-dc")
	cmd.Stdin = bytes.NewReader(data)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s -dc: %w: %s (install %s)", tool, err, stderr.String(), tool)
	}
	return out.Bytes(), nil
}

// writeFrom writes what r yields to path, created with perm (before the umask) or truncated.
func writeFrom(path string, r io.Reader, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// loadKernel reads an extracted kernel's kernel.info.
func loadKernel(dir string) (*kernel, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kernel.info"))
	if err != nil {
		return nil, err
	}
	k := &kernel{Dir: dir}
	for _, line := range strings.Split(string(b), "\n") {
		key, v, _ := strings.Cut(line, "=")
		switch key {
		case "release":
			k.Release = v
		case "package":
			k.Package = v
		case "order":
			k.Order = strings.Split(v, ",")
		}
	}
	if k.Release == "" || len(k.Order) == 0 {
		return nil, fmt.Errorf("%s: incomplete kernel.info", dir)
	}
	return k, nil
}

// hasModules says whether the extracted kernel holds every module of want: a kernel extracted before
// a module joined guestModules must be extracted again.
func (k *kernel) hasModules(want []string) bool {
	for _, m := range want {
		if !slices.Contains(k.Order, m) {
			return false
		}
	}
	return true
}

// newestKernel returns the most recently extracted kernel under root.
func newestKernel(root string) (*kernel, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var best *kernel
	var bestTime int64
	for _, e := range entries {
		k, err := loadKernel(filepath.Join(root, e.Name()))
		if err != nil {
			continue
		}
		if info, err := e.Info(); err == nil && (best == nil || info.ModTime().UnixNano() > bestTime) {
			best, bestTime = k, info.ModTime().UnixNano()
		}
	}
	if best == nil {
		return nil, errors.New("no cached kernel")
	}
	return best, nil
}

// run runs a program (never a shell) and returns its standard output.
func run(ctx context.Context, dir, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}
