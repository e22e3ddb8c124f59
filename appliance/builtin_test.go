package appliance

import (
	"context"
	"errors"
	"testing"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestRenamedBuiltinImage: a pool from before the built-in image was
// renamed holds it as superjolt-test, with a VM made from it. A start that
// cannot build images keeps superjolt-test as the built-in image; one that
// can builds superjolt-busybox as the built-in image, and the old image stays
// as an ordinary one, its VM running, stopping and starting again (it boots
// from its own subvolume).
func TestRenamedBuiltinImage(t *testing.T) {
	const oldName = formerDefaultImage
	e := newEnv(t, envOptions{builtinImage: oldName})
	ctx := context.Background()
	acct := e.account("early", model.Credit, 0)
	old := e.vm(acct.ID)
	if old.Image != oldName {
		t.Fatalf("a VM made before the rename has image %q, want %q", old.Image, oldName)
	}
	checkImages := func(want ...model.Image) {
		t.Helper()
		imgs, err := e.a.Images(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(imgs) != len(want) {
			t.Fatalf("images %+v, want %+v", imgs, want)
		}
		for i, im := range imgs {
			if im.Name != want[i].Name || im.Builtin != want[i].Builtin || im.SizeBytes <= 0 {
				t.Errorf("image %d: %+v, want %s builtin=%v with a size", i, im, want[i].Name, want[i].Builtin)
			}
		}
	}

	e.builtin = "" // the daemon after the rename, without what a build needs
	e.restart()
	checkImages(model.Image{Name: oldName, Builtin: true})
	if vm := e.vm(acct.ID); vm.Image != oldName {
		t.Errorf("without a build, a new VM has image %q, want %q", vm.Image, oldName)
	}

	e.build = fakeImage // and with it
	e.restart()
	want := []model.Image{{Name: DefaultImage, Builtin: true}, {Name: oldName, Builtin: false}}
	checkImages(want...)

	if vm := e.getVM(old.ID); vm.State != model.StateRunning || vm.Image != oldName {
		t.Errorf("the old VM after the rename: %s from %q, want running from %q", vm.State, vm.Image, oldName)
	}
	if _, err := e.a.StopVM(ctx, old.ID); err != nil {
		t.Fatalf("stop the old VM: %v", err)
	}
	if vm, err := e.a.StartVM(ctx, old.ID); err != nil || vm.State != model.StateRunning {
		t.Fatalf("start the old VM: %v (state %s)", err, vm.State)
	}
	if vm := e.vm(acct.ID); vm.Image != DefaultImage {
		t.Errorf("a new VM without an image has %q, want %q", vm.Image, DefaultImage)
	}
	e.checkConsistent()

	// Once built, the image is not built again.
	e.build = func(context.Context, string) error {
		t.Error("the built-in image was built again")
		return errors.New("built again")
	}
	e.reopen()
	checkImages(want...)
}
