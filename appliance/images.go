package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Images: what VMs are made from. Each image is a read-only subvolume of the
// pool (vmlinuz, initrd, rootfs.img); a VM is a writable snapshot of it. So
// an image can be removed while VMs made from it run: each VM's disk, kernel
// and initramfs are its own (shared extents until written), its backups are
// snapshots of the VM, and nothing a VM does later (restart, restore, resume)
// reads the image again.

// ImageMaker makes distribution images; superjoltd wires package images.
// Both methods fill dir (a fresh staging subvolume) with vmlinuz, initrd
// and rootfs.img, report progress in words, and leave nothing else behind
// when they fail. An error that is the file's or the request's fault
// wraps model.ErrInvalid; any other is the host's.
type ImageMaker interface {
	// Import makes an image from a root file system tarball or a raw or
	// qcow2 disk, read from r; file is its name where it came from ("" if
	// unknown), for the record.
	Import(ctx context.Context, r io.Reader, file, dir string, progress func(string)) (ImageFacts, error)
	// Build makes the image a recipe names ("debian-12") with extra
	// packages.
	Build(ctx context.Context, recipe string, packages []string, dir string, progress func(string)) (ImageFacts, error)
	// CheckBuild says, before anything is done, why Build would refuse
	// recipe and packages.
	CheckBuild(recipe string, packages []string) error
}

// ImageFacts are what a made image says of itself.
type ImageFacts struct {
	OS     string // "Debian GNU/Linux 12 (bookworm)"
	Kernel string // the kernel release it boots
	Source string // where it came from
}

// ImportImageRequest names the image an import makes.
type ImportImageRequest struct {
	Name string `json:"name"`
	// File is the uploaded file's base name, kept as the image's source.
	File string `json:"file,omitempty"`
}

// BuildImageRequest is what BuildImage makes.
type BuildImageRequest struct {
	// Recipe is what to build ("debian-12").
	Recipe string `json:"recipe"`
	// Name defaults to Recipe.
	Name string `json:"name,omitempty"`
	// Packages are installed beyond the recipe's own.
	Packages []string `json:"packages,omitempty"`
}

// Images lists the images by name.
func (a *Appliance) Images(ctx context.Context) ([]model.Image, error) {
	var out []model.Image
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.Images()
		return err
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, categorised(err, "list images")
}

// ImportImage makes the image req.Name from the tarball or disk read from r.
// A failed import leaves nothing: no row, no subvolume.
func (a *Appliance) ImportImage(ctx context.Context, req ImportImageRequest, r io.Reader, progress func(string)) (model.Image, error) {
	if err := model.ValidateFileName(req.File); err != nil {
		return model.Image{}, invalidf("%v", err)
	}
	if err := a.checkNewImage(ctx, req.Name); err != nil {
		return model.Image{}, err
	}
	return a.makeImage(ctx, req.Name, "import", progress, func(dir string) (ImageFacts, error) {
		return a.images.Import(ctx, r, req.File, dir, progress)
	})
}

// BuildImage makes the image a recipe names, called req.Name (default: the
// recipe's name).
func (a *Appliance) BuildImage(ctx context.Context, req BuildImageRequest, progress func(string)) (model.Image, error) {
	if req.Name == "" {
		req.Name = req.Recipe
	}
	if a.images != nil {
		if err := a.images.CheckBuild(req.Recipe, req.Packages); err != nil {
			return model.Image{}, invalidf("%v", err)
		}
	}
	if err := a.checkNewImage(ctx, req.Name); err != nil {
		return model.Image{}, err
	}
	return a.makeImage(ctx, req.Name, "build", progress, func(dir string) (ImageFacts, error) {
		return a.images.Build(ctx, req.Recipe, req.Packages, dir, progress)
	})
}

// checkNewImage checks a new image's name: valid, and not taken.
func (a *Appliance) checkNewImage(ctx context.Context, name string) error {
	if a.images == nil {
		return unavailablef("this superjoltd cannot make images (its image tools are missing: run scripts/install-deps, then restart it)")
	}
	if err := model.ValidateImageName(name); err != nil {
		return invalidf("%v", err)
	}
	return a.view(ctx, func(tx *store.Tx) error {
		if _, err := tx.Image(name); err == nil {
			return conflictf("an image called %s exists: pick another name, or remove it first with `superjolt image rm %s`", name, name)
		} else if !errors.Is(err, model.ErrNotFound) {
			return err
		}
		return nil
	})
}

var pastTense = map[string]string{"import": "imported", "build": "built"}

// makeImage fills a new image subvolume and records it.
func (a *Appliance) makeImage(ctx context.Context, name, how string, progress func(string), fill func(dir string) (ImageFacts, error)) (model.Image, error) {
	if progress == nil {
		progress = func(string) {}
	}
	start := a.clock.Now()
	var facts ImageFacts
	var fillErr error
	err := a.pool.CreateImage(ctx, name, func(dir string) error {
		facts, fillErr = fill(dir)
		return fillErr
	})
	switch {
	case err == nil:
	case ctx.Err() != nil:
		return model.Image{}, ctx.Err()
	case errors.Is(fillErr, model.ErrInvalid), errors.Is(fillErr, model.ErrNoSpace):
		// The file's or the recipe's fault, or no room to unpack it: the
		// message says what to do.
		return model.Image{}, fmt.Errorf("%s image %s: %w", how, name, fillErr)
	case fillErr != nil:
		return model.Image{}, a.noSpaceOr(ctx, err, how+" image "+name, unavailablef("%s image %s: %v", how, name, fillErr))
	default:
		return model.Image{}, a.noSpaceOr(ctx, err, how+" image "+name, unavailablef("%s image %s: %v", how, name, err))
	}
	im := model.Image{Name: name, CreatedAt: a.clock.Now(), OS: facts.OS, Kernel: facts.Kernel, Source: facts.Source}
	if p, err := a.pool.ImagePath(name); err == nil {
		if u, err := a.pool.Usage(ctx, p); err == nil {
			im.SizeBytes = u.Referenced
		}
	}
	err = a.update(ctx, func(tx *store.Tx) error {
		if err := tx.PutImage(im); err != nil {
			return err
		}
		return event(tx, im.CreatedAt, "image."+pastTense[how], name, "", "image %s %s: %s, kernel %s, from %s, %d MiB",
			name, pastTense[how], facts.OS, facts.Kernel, facts.Source, im.SizeBytes>>20)
	})
	if err != nil {
		// No row for it: take the subvolume back too.
		if derr := a.pool.DeleteImage(context.WithoutCancel(ctx), name); derr != nil {
			a.log.Error("image made but not recorded; delete its subvolume by hand", "image", name, "err", derr)
		}
		return model.Image{}, categorised(err, how+" image "+name)
	}
	a.log.Info("image made", "image", name, "how", how, "os", facts.OS, "kernel", facts.Kernel, "took", a.clock.Now().Sub(start))
	progress(fmt.Sprintf("image %s is ready", name))
	return im, nil
}

// DeleteImage removes an image. VMs made from it keep running and keep
// everything they have (see the top of this file); new VMs cannot be made
// from it. The built-in image stays.
func (a *Appliance) DeleteImage(ctx context.Context, name string) (model.Image, error) {
	if err := model.ValidateImageName(name); err != nil {
		return model.Image{}, invalidf("%v", err)
	}
	var im model.Image
	var users int
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		if im, err = tx.Image(name); err != nil {
			return notFoundIs(err, "image %s does not exist; `superjolt image list` shows the images", name)
		}
		if im.Builtin {
			return conflictf("image %s is the built-in image: it stays (VMs are made from it when no image is named)", name)
		}
		vms, err := tx.VMs(store.VMFilter{})
		if err != nil {
			return err
		}
		for _, vm := range vms {
			if vm.Image == name {
				users++
			}
		}
		return nil
	})
	if err != nil {
		return model.Image{}, categorised(err, "remove image "+name)
	}
	if err := a.pool.DeleteImage(ctx, name); err != nil {
		return model.Image{}, a.noSpaceOr(ctx, err, "remove image "+name, fmt.Errorf("remove image %s: %w", name, err))
	}
	err = a.update(ctx, func(tx *store.Tx) error {
		if err := tx.DeleteImage(name); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "image.removed", name, "", "image %s removed; the %d VMs made from it keep their own disks", name, users)
	})
	return im, categorised(err, "remove image "+name)
}
