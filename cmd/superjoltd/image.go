package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"golang.org/x/sys/unix"
)

// buildImage returns the appliance's BuildImage: it fills dir with the
// built-in image (vmlinuz, initrd, rootfs.img) made by package images from
// Debian's cloud kernel, busybox and the guest agent. The image is built
// once into images' cache and copied from there (sparse), so a fresh state
// directory does not pay for a second build.
func buildImage(agent string, log *slog.Logger) func(ctx context.Context, dir string) error {
	return func(ctx context.Context, dir string) error {
		if agent == "" {
			agent = besideExecutable("superjolt-agent")
		}
		img, err := images.Cached(ctx, images.BuildOptions{
			Agent: agent,
			Logf: func(format string, args ...any) {
				log.Info("built-in image: " + fmt.Sprintf(format, args...))
			},
		})
		if err != nil {
			return fmt.Errorf("build the built-in image: %w", err)
		}
		for _, f := range []string{images.KernelFile, images.InitrdFile, images.RootfsFile} {
			if err := images.CopyDisk(filepath.Join(dir, f), filepath.Join(img.Dir, f)); err != nil {
				return fmt.Errorf("copy the built-in image's %s: %w", f, err)
			}
		}
		return nil
	}
}

// besideExecutable returns name in superjoltd's own directory when it is
// there (bin/superjolt-agent next to bin/superjoltd), else "": images then
// builds the agent from the source tree.
func besideExecutable(name string) string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	p := filepath.Join(filepath.Dir(exe), name)
	if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
		return p
	}
	return ""
}

// imageMaker makes distribution images with package images (see
// appliance.ImageMaker). Uploads and unpacked trees are staged in tmpDir,
// on the state directory's file system rather than a small /tmp.
type imageMaker struct {
	agent  string // the static agent; "" = beside superjoltd, else built from the source
	tmpDir string
	log    *slog.Logger
}

var _ appliance.ImageMaker = (*imageMaker)(nil)

// newImageMaker returns the daemon's image maker, after removing what an
// import or build that the daemon died in left in tmpDir.
func newImageMaker(agent, tmpDir string, log *slog.Logger) *imageMaker {
	if err := os.RemoveAll(tmpDir); err != nil {
		log.Warn("cannot clear the image staging directory", "dir", tmpDir, "err", err)
	}
	return &imageMaker{agent: agent, tmpDir: tmpDir, log: log}
}

// agentBinary returns the static agent to put in images, and makes tmpDir.
func (m *imageMaker) agentBinary(ctx context.Context) (string, func(), error) {
	if err := os.MkdirAll(m.tmpDir, 0o700); err != nil {
		return "", nil, err
	}
	if agent := cmp.Or(m.agent, besideExecutable("superjolt-agent")); agent != "" {
		return agent, func() {}, nil
	}
	tmp, err := os.MkdirTemp(m.tmpDir, "agent-")
	if err != nil {
		return "", nil, err
	}
	out := filepath.Join(tmp, "superjolt-agent")
	if err := images.BuildAgent(ctx, "", out); err != nil {
		os.RemoveAll(tmp)
		return "", nil, fmt.Errorf("no superjolt-agent beside superjoltd, and it cannot be built here: %w", err)
	}
	return out, func() { os.RemoveAll(tmp) }, nil
}

func (m *imageMaker) Import(ctx context.Context, r io.Reader, file, dir string, progress func(string)) (appliance.ImageFacts, error) {
	agent, done, err := m.agentBinary(ctx)
	if err != nil {
		return appliance.ImageFacts{}, err
	}
	defer done()
	f, err := os.CreateTemp(m.tmpDir, "upload-")
	if err != nil {
		return appliance.ImageFacts{}, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, r)
	if err != nil {
		return appliance.ImageFacts{}, fmt.Errorf("receive the file: %w", err)
	}
	if err := f.Close(); err != nil {
		return appliance.ImageFacts{}, err
	}
	progress(fmt.Sprintf("received %d MiB", n>>20))
	// Unpacking takes about the file's size again (more for a compressed
	// tarball): refuse now rather than fill the host's disk half-way.
	var st unix.Statfs_t
	if err := unix.Statfs(m.tmpDir, &st); err == nil {
		if free := int64(st.Bavail) * st.Bsize; free < 3*n {
			return appliance.ImageFacts{}, fmt.Errorf("%w: importing a %d MiB file needs about %d MiB free beside superjoltd's state (%s), and %d MiB are", model.ErrNoSpace, n>>20, 3*n>>20, m.tmpDir, free>>20)
		}
	}
	img, err := images.Import(ctx, f.Name(), dir, images.ImportOptions{Agent: agent, Name: cmp.Or(file, "the upload"), TempDir: m.tmpDir, Logf: m.logf(progress)})
	if err != nil {
		return appliance.ImageFacts{}, badInput(err)
	}
	format, _ := images.DetectFormat(f.Name())
	return appliance.ImageFacts{OS: img.OS, Kernel: img.KernelRelease, Source: cmp.Or(file, "an upload") + " (" + string(format) + ")"}, nil
}

func (m *imageMaker) CheckBuild(recipe string, packages []string) error {
	if _, err := images.RecipeNamed(recipe); err != nil {
		return err
	}
	return images.CheckPackages(packages)
}

func (m *imageMaker) Build(ctx context.Context, recipe string, packages []string, dir string, progress func(string)) (appliance.ImageFacts, error) {
	rec, err := images.RecipeNamed(recipe)
	if err != nil {
		return appliance.ImageFacts{}, err
	}
	agent, done, err := m.agentBinary(ctx)
	if err != nil {
		return appliance.ImageFacts{}, err
	}
	defer done()
	img, err := images.BuildDebian(ctx, dir, images.DebianOptions{
		Recipe: rec, Packages: packages, Agent: agent, TempDir: m.tmpDir, Logf: m.logf(progress),
	})
	if err != nil {
		return appliance.ImageFacts{}, err
	}
	source := recipe + " (mmdebstrap)"
	if len(packages) > 0 {
		source = recipe + " (mmdebstrap) + " + strings.Join(packages, ",")
	}
	return appliance.ImageFacts{OS: img.OS, Kernel: img.KernelRelease, Source: source}, nil
}

// badInput marks the errors that are the imported file's fault as
// model.ErrInvalid, keeping their message.
func badInput(err error) error {
	if images.BadInput(err) {
		return invalidError{err}
	}
	return err
}

type invalidError struct{ error }

func (e invalidError) Unwrap() []error { return []error{e.error, model.ErrInvalid} }

// logf reports a step both in the log and to the caller.
func (m *imageMaker) logf(progress func(string)) func(string, ...any) {
	return func(format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		m.log.Info("image: " + msg)
		progress(msg)
	}
}
