package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

func newImageCommand(o *globalOptions) *cobra.Command {
	return group("image", "Images VMs are made from: the built-in one, and distributions imported or built",
		newImageListCommand(o),
		newImageImportCommand(o),
		newImageBuildCommand(o),
		newImageRemoveCommand(o),
	)
}

func newImageListCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the images; the built-in one is there from the first start",
		Args:    args(),
		RunE: func(cmd *cobra.Command, args []string) error {
			is, err := o.client.Images(cmd.Context())
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(is)
			}
			rows := make([][]string, 0, len(is))
			for _, i := range is {
				osName, kernel := i.OS, i.Kernel
				if i.Builtin {
					osName, kernel = "built-in (busybox, the agent as init)", "Debian cloud"
				}
				rows = append(rows, []string{i.Name, dash(osName), dash(kernel), fmtBytes(i.SizeBytes), o.fmtTime(i.CreatedAt)})
			}
			return o.table([]string{"NAME", "OS", "KERNEL", "SIZE", "CREATED"}, rows)
		},
	}
}

func newImageImportCommand(o *globalOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "import NAME FILE",
		Short: "Make an image from a root file system tarball, or a raw or qcow2 disk",
		Long: `Make an image from a root file system tarball (.tar, .tar.gz, .tar.xz, .tar.zst),
a qcow2 disk or a raw disk (a partition table, or one file system). The image must
have systemd and a kernel (/boot/vmlinuz-RELEASE with /lib/modules/RELEASE): VMs boot
the image's own kernel. superjolt puts its guest agent and units in, gives each VM
its own SSH host keys and machine id, and makes the root file system ext4.
The file is sent to superjoltd; a failed import leaves nothing behind.`,
		Example: "  superjolt image import ubuntu-24.04 noble-server-cloudimg-amd64.img\n  superjolt image import alpine-edge rootfs.tar.gz",
		Args:    args("NAME", "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, path := args[0], args[1]
			if err := model.ValidateImageName(name); err != nil {
				return fmt.Errorf("%w: %v", model.ErrInvalid, err)
			}
			ctx := cmd.Context()
			// Asked first, so that a taken name does not cost an upload.
			is, err := o.client.Images(ctx)
			if err != nil {
				return err
			}
			for _, i := range is {
				if i.Name == name {
					return fmt.Errorf("%w: an image called %s exists: pick another name, or remove it first with `superjolt image rm %s`", model.ErrConflict, name, name)
				}
			}
			f, err := os.Open(path)
			if err != nil {
				return fmt.Errorf("%w: %v", model.ErrInvalid, err)
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			if !st.Mode().IsRegular() {
				return fmt.Errorf("%w: %s is not a file: pass a tarball or a disk image", model.ErrInvalid, path)
			}
			o.progress("Sending %s (%s) to superjoltd…", path, fmtBytes(st.Size()))
			up := &uploadProgress{r: f, size: st.Size(), report: func(pct int) { o.progress("sent %d%%", pct) }}
			im, err := o.client.ImportImage(ctx, name, filepath.Base(path), up, st.Size(), func(s string) { o.progress("%s", s) })
			if err != nil {
				return err
			}
			return o.printImage(im)
		},
	}
}

func newImageBuildCommand(o *globalOptions) *cobra.Command {
	var req api.BuildImageRequest
	var packages string
	c := &cobra.Command{
		Use:   "build RECIPE [--name NAME] [--packages a,b]",
		Short: "Build a distribution image from its archive (debian-12)",
		Long: `Build a distribution image from the distribution's archive. debian-12 is Debian 12
made with mmdebstrap: systemd as init, the cloud kernel, OpenSSH, superjolt's agent,
and the network the host gives each VM. --packages adds packages from the archive.
The installed system is cached, so building the same recipe and packages again
(under another name, or after image rm) skips the download.`,
		Example: "  superjolt image build debian-12\n  superjolt image build debian-12 --name pg --packages postgresql",
		Args:    args("RECIPE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Recipe = args[0]
			for _, p := range strings.Split(packages, ",") {
				if p = strings.TrimSpace(p); p != "" {
					req.Packages = append(req.Packages, p)
				}
			}
			if err := req.Validate(); err != nil {
				return err
			}
			name := req.Name
			if name == "" {
				name = req.Recipe
			}
			o.progress("Building image %s from %s (a first build downloads the packages: a minute or two)…", name, req.Recipe)
			im, err := o.client.BuildImage(cmd.Context(), req, func(s string) { o.progress("%s", s) })
			if err != nil {
				return err
			}
			return o.printImage(im)
		},
	}
	c.Flags().StringVar(&req.Name, "name", "", "the image's `name` (default: the recipe's)")
	c.Flags().StringVar(&packages, "packages", "", "more packages to install, comma-separated (`a,b`)")
	return c
}

func newImageRemoveCommand(o *globalOptions) *cobra.Command {
	var yes bool
	c := &cobra.Command{
		Use:     "rm NAME [--yes]",
		Aliases: []string{"remove"},
		Short:   "Remove an image; VMs made from it keep running with their own disks",
		Args:    args("NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := o.confirm(cmd.Context(), yes, "remove image "+name,
				"New VMs cannot be made from "+name+" any more; VMs already made from it keep their own disk, kernel and backups."); err != nil {
				return err
			}
			im, err := o.client.DeleteImage(cmd.Context(), name)
			if err != nil {
				return err
			}
			if o.json() {
				return o.printJSON(im)
			}
			fmt.Fprintf(o.stdout, "Removed image %s.\n", im.Name)
			return nil
		},
	}
	c.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return c
}

func (o *globalOptions) printImage(im model.Image) error {
	if o.json() {
		return o.printJSON(im)
	}
	fmt.Fprintf(o.stdout, "Image %s: %s, kernel %s, %s (from %s).\n", im.Name, dash(im.OS), dash(im.Kernel), fmtBytes(im.SizeBytes), dash(im.Source))
	return nil
}

// uploadProgress reports every tenth of a file read.
type uploadProgress struct {
	r      io.Reader
	size   int64
	read   atomic.Int64
	last   int
	report func(pct int)
}

func (u *uploadProgress) Read(p []byte) (int, error) {
	n, err := u.r.Read(p)
	done := u.read.Add(int64(n))
	if u.size > 0 {
		if pct := int(done*10/u.size) * 10; pct > u.last && pct < 100 {
			u.last = pct
			u.report(pct)
		}
	}
	return n, err
}
