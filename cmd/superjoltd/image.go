package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/superjolt/superjolt/appliance/images"
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
