package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"golang.org/x/sys/unix"
)

// TestCLIPool: `superjolt pool` shows the real pool in text and JSON; once
// the filesystem is filled for real it says FULL, and `vm create` exits 7
// with a message naming the pool and its free space.
func TestCLIPool(t *testing.T) {
	fs := btrfstest.NewPool(t, 384<<20)
	dir := filepath.Join(fs.Root(), "superjolt")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "--pool", dir, "--clock=manual")

	p := okJSON[api.Pool](t, d, "pool")
	if p.Pool != dir || p.SizeBytes != 384<<20 || p.FreeBytes <= p.ReserveBytes || p.Full || p.UsedBytes != p.SizeBytes-p.FreeBytes {
		t.Fatalf("pool -o json = %+v", p)
	}
	image := len(images.Missing()) == 0
	if image && (p.Images.Count != 1 || p.Images.ReferencedBytes <= 0) {
		t.Errorf("pool -o json: images %+v, want the built-in one", p.Images)
	}
	out := d.ok(t, "pool")
	for _, want := range []string{"Pool:", dir, "Size:", "384 MiB", "Free:", "KIND", "images", "vms", "backups"} {
		if !strings.Contains(out, want) {
			t.Errorf("superjolt pool does not show %q:\n%s", want, out)
		}
	}

	// Fill the filesystem (outside the pool's directory, as anything else
	// on a shared Btrfs could).
	f, err := os.Create(filepath.Join(fs.Root(), "filler"))
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	_ = f.Sync()
	f.Close()

	p = okJSON[api.Pool](t, d, "pool")
	if !p.Full || p.FreeBytes >= p.ReserveBytes {
		t.Fatalf("pool -o json on a full pool = %+v", p)
	}
	if out := d.ok(t, "pool"); !strings.Contains(out, "FULL") {
		t.Errorf("superjolt pool on a full pool does not say FULL:\n%s", out)
	}
	if !image {
		t.Log("no built-in image (missing " + strings.Join(images.Missing(), ", ") + "): vm create not tried")
		return
	}
	acct := okJSON[model.Account](t, d, "account", "create", "full", "--balance", "10")
	r := d.sj(t, "vm", "create", "--account", acct.ID, "--tier", "nano")
	if r.code != exitNoSpace || !strings.Contains(r.stderr, dir) || !strings.Contains(r.stderr, "free of 384.0 MiB") ||
		!strings.Contains(r.stderr, "superjolt backup list") {
		t.Fatalf("vm create on a full pool: exit %d, stderr %q; want exit %d naming the pool and its free space", r.code, r.stderr, exitNoSpace)
	}
	if vms := okJSON[[]model.VM](t, d, "vm", "list"); len(vms) != 0 {
		t.Errorf("a refused vm create left %+v", vms)
	}
	t.Logf("vm create on a full pool: %s", strings.TrimSpace(r.stderr))
}
