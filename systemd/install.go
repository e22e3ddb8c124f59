package systemd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	sddbus "github.com/coreos/go-systemd/v22/dbus"

	"github.com/superjolt/superjolt/guest"
)

// InstallOptions say where Install puts things. Empty fields take the
// defaults.
type InstallOptions struct {
	// From is the directory that holds the new superjoltd, superjolt and
	// superjolt-agent (required for Install).
	From string
	// BinDir is where the binaries go; /usr/local/bin by default.
	BinDir string
	// NoStart only enables superjoltd; it does not start or restart it.
	NoStart bool
	// UnitDir (/etc/systemd/system), SysusersDir (/etc/sysusers.d) and
	// TmpfilesDir (/etc/tmpfiles.d) are where the units and the
	// configuration go.
	UnitDir, SysusersDir, TmpfilesDir string
	// Progress, when set, is told each step as it is done, in words.
	Progress func(step string)
}

// Default install locations.
const (
	DefaultBinDir      = "/usr/local/bin"
	DefaultUnitDir     = "/etc/systemd/system"
	DefaultSysusersDir = "/etc/sysusers.d"
	DefaultTmpfilesDir = "/etc/tmpfiles.d"
	// StateDir is superjoltd's state (store, pool image), which uninstall
	// leaves.
	StateDir = "/var/lib/superjolt"
)

func (o InstallOptions) withDefaults() InstallOptions {
	def := func(s *string, d string) {
		if *s == "" {
			*s = d
		}
	}
	def(&o.BinDir, DefaultBinDir)
	def(&o.UnitDir, DefaultUnitDir)
	def(&o.SysusersDir, DefaultSysusersDir)
	def(&o.TmpfilesDir, DefaultTmpfilesDir)
	if o.Progress == nil {
		o.Progress = func(string) {}
	}
	return o
}

// checkHost returns an error unless this is root on a systemd host.
func checkHost(what string) error {
	if !isRoot() {
		return fmt.Errorf("%s needs root: run it with sudo", what)
	}
	if !Booted() {
		return fmt.Errorf("%s: PID 1 is not systemd (no /run/systemd/system); without systemd, run superjoltd directly", what)
	}
	return nil
}

// Install puts the binaries, superjoltd.service, superjolt.slice, the
// superjolt group and the run and state directories in place, then enables
// superjoltd and starts it, or restarts it when it runs: installing new
// binaries over a running daemon is the upgrade, and its VMs keep running.
func Install(ctx context.Context, opts InstallOptions) error {
	o := opts.withDefaults()
	if err := checkHost("superjolt install"); err != nil {
		return err
	}
	if o.From == "" {
		return errors.New("superjolt install: no directory to install the binaries from")
	}
	for _, name := range Binaries {
		if err := checkBinary(filepath.Join(o.From, name)); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(o.BinDir, 0o755); err != nil {
		return err
	}
	for _, name := range Binaries {
		src, dst := filepath.Join(o.From, name), filepath.Join(o.BinDir, name)
		if same, _ := sameFile(src, dst); same {
			o.Progress(fmt.Sprintf("%s is in place already", dst))
			continue
		}
		if err := copyFileAtomic(src, dst, 0o755); err != nil {
			return fmt.Errorf("install %s: %w", dst, err)
		}
		o.Progress("installed " + dst)
	}
	for _, f := range o.installedFiles() {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			return err
		}
		if err := writeFileAtomic(f.path, []byte(f.content), 0o644); err != nil {
			return fmt.Errorf("write %s: %w", f.path, err)
		}
		o.Progress("wrote " + f.path)
	}
	sysusers := filepath.Join(o.SysusersDir, "superjolt.conf")
	if err := run(ctx, "systemd-sysusers", sysusers); err != nil {
		return err
	}
	o.Progress("made the group superjolt (systemd-sysusers)")
	if err := run(ctx, "systemd-tmpfiles", "--create", filepath.Join(o.TmpfilesDir, "superjolt.conf")); err != nil {
		return err
	}
	o.Progress("made /run/superjolt and " + StateDir + " (systemd-tmpfiles)")

	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w", err)
	}
	unit := filepath.Join(o.UnitDir, DaemonUnit)
	if o.UnitDir == DefaultUnitDir {
		unit = DaemonUnit
	}
	if _, _, err := conn.EnableUnitFilesContext(ctx, []string{unit}, false, true); err != nil {
		return fmt.Errorf("enable %s: %w", DaemonUnit, err)
	}
	o.Progress("enabled " + DaemonUnit)
	if o.NoStart {
		return nil
	}
	state, err := conn.GetUnitPropertyContext(ctx, DaemonUnit, "ActiveState")
	if err != nil {
		return fmt.Errorf("read %s: %w", DaemonUnit, err)
	}
	done := make(chan string, 1)
	verb := "start"
	if s, _ := state.Value.Value().(string); s == "active" || s == "activating" || s == "reloading" {
		verb = "restart"
		_, err = conn.RestartUnitContext(ctx, DaemonUnit, "replace", done)
	} else {
		_ = conn.ResetFailedUnitContext(ctx, DaemonUnit) // a failed earlier run
		_, err = conn.StartUnitContext(ctx, DaemonUnit, "replace", done)
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w", verb, DaemonUnit, err)
	}
	if err := waitJob(ctx, done, verb, DaemonUnit); err != nil {
		return err
	}
	o.Progress(verb + "ed " + DaemonUnit)
	return nil
}

// Uninstall stops every VM (superjolt.slice, while the daemon still runs to
// shut their guests down) and superjoltd, disables it and removes what
// Install put in place. It leaves the state in /var/lib/superjolt and the
// superjolt group.
func Uninstall(ctx context.Context, opts InstallOptions) error {
	o := opts.withDefaults()
	if err := checkHost("superjolt install --uninstall"); err != nil {
		return err
	}
	conn, err := sddbus.NewSystemdConnectionContext(ctx)
	if err != nil {
		return fmt.Errorf("connect to systemd: %w", err)
	}
	defer conn.Close()
	for _, unit := range []string{Slice, DaemonUnit} {
		done := make(chan string, 1)
		if _, err := conn.StopUnitContext(ctx, unit, "replace", done); err != nil {
			if !isNoSuchUnit(err) {
				return fmt.Errorf("stop %s: %w", unit, err)
			}
		} else if err := waitJob(ctx, done, "stop", unit); err != nil {
			return err
		}
		o.Progress("stopped " + unit)
	}
	if _, err := conn.DisableUnitFilesContext(ctx, []string{DaemonUnit}, false); err != nil && !isNoSuchUnit(err) {
		return fmt.Errorf("disable %s: %w", DaemonUnit, err)
	}
	o.Progress("disabled " + DaemonUnit)
	var paths []string
	for _, f := range o.installedFiles() {
		paths = append(paths, f.path)
	}
	for _, name := range Binaries {
		paths = append(paths, filepath.Join(o.BinDir, name))
	}
	for _, p := range paths {
		if err := os.Remove(p); err == nil {
			o.Progress("removed " + p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := conn.ReloadContext(ctx); err != nil {
		return fmt.Errorf("systemctl daemon-reload: %w", err)
	}
	_ = conn.ResetFailedUnitContext(ctx, DaemonUnit)
	o.Progress("left the state in " + StateDir + " (remove it to delete every VM, backup and account) and the group superjolt")
	return nil
}

// checkBinary returns an error unless path is an executable file, and, for
// the agent, statically linked: it runs inside guests that lack the host's
// libraries.
func checkBinary(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("superjolt install: %w (build them with make build)", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("superjolt install: %s is not an executable file", path)
	}
	if filepath.Base(path) != "superjolt-agent" {
		return nil
	}
	if err := guest.CheckStatic(path); err != nil {
		return fmt.Errorf("superjolt install: %w", err)
	}
	return nil
}

// sameFile reports whether a and b are the same file.
func sameFile(a, b string) (bool, error) {
	fa, err := os.Stat(a)
	if err != nil {
		return false, err
	}
	fb, err := os.Stat(b)
	if err != nil {
		return false, err
	}
	return os.SameFile(fa, fb), nil
}

// copyFileAtomic copies src to dst through a temporary file in dst's
// directory, synced and renamed over dst: a running program's file is
// replaced, never rewritten, and a crash leaves the old or the new one.
func copyFileAtomic(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return replaceFile(dst, mode, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

func writeFileAtomic(dst string, data []byte, mode os.FileMode) error {
	return replaceFile(dst, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

func replaceFile(dst string, mode os.FileMode, write func(io.Writer) error) (err error) {
	dir := filepath.Dir(dst)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(dst)+".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		d.Close()
	}
	return nil
}

// run runs a command; its output is in the error when it fails.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
