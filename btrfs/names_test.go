package btrfs

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckName(t *testing.T) {
	long := strings.Repeat("a", maxNameLen)
	tests := []struct {
		kind nameKind
		in   string
		ok   bool
	}{
		{idName, "vm-abc123", true},
		{idName, "bk-20261129t071000-x1", true},
		{idName, long, true},
		{idName, long + "a", false},
		{idName, "", false},
		{idName, "-rf", false},
		{idName, "VM-ABC123", false},
		{idName, "vm_abc", false},
		{idName, "vm.abc", false},
		{idName, "vm/abc", false},
		{idName, "..", false},
		{idName, "vm\x00", false},
		{idName, "vm abc", false},
		{idName, "vm-é", false},
		{fileName, "debian-12.img", true},
		{fileName, "rootfs.img", true},
		{fileName, "a_b.c-d", true},
		{fileName, ".", false},
		{fileName, "..", false},
		{fileName, ".hidden", false},
		{fileName, "a..b", false},
		{fileName, "_x", false},
		{fileName, "a/b", false},
		{fileName, "../etc", false},
		{fileName, "a\x00b", false},
		{fileName, long + ".img", false},
	}
	for _, tt := range tests {
		err := checkName(tt.kind, "name", tt.in)
		if tt.ok && err != nil {
			t.Errorf("checkName(%d, %q) = %v, want ok", tt.kind, tt.in, err)
		}
		if !tt.ok && !errors.Is(err, ErrInvalidName) {
			t.Errorf("checkName(%d, %q) = %v, want ErrInvalidName", tt.kind, tt.in, err)
		}
		if !tt.ok && err != nil && !strings.Contains(err.Error(), "use 1-64 bytes") {
			t.Errorf("checkName(%d, %q) error %q does not say what is allowed", tt.kind, tt.in, err)
		}
	}
}

// FuzzPaths checks that whatever ids reach the path builders, a path comes
// back only if it is a clean path strictly inside the pool, in the directory
// the layout says, ending in exactly the given component.
func FuzzPaths(f *testing.F) {
	for _, s := range []string{
		"", ".", "..", "/", "../..", "../../etc/passwd", "a/../..", "/etc", "a\x00b", "\x00",
		"vm-abc123", "debian-12", "rootfs.img", "a..b", "...", ".hidden", "-x",
		strings.Repeat("a", 64), strings.Repeat("a", 65), strings.Repeat("../", 30),
		"vm-abc123/../../..", "trash", "VM", "a b", "\xff\xfe",
	} {
		f.Add(s, "bk-1")
		f.Add("vm-1", s)
	}
	l := layout{root: "/var/lib/superjolt/pool"}
	f.Fuzz(func(t *testing.T, a, b string) {
		check := func(kind, p string, err error, parent string, last string) {
			t.Helper()
			if err != nil {
				if !errors.Is(err, ErrInvalidName) {
					t.Fatalf("%s: error %v does not wrap ErrInvalidName", kind, err)
				}
				return
			}
			if p != filepath.Clean(p) {
				t.Fatalf("%s(%q, %q) = %q, not clean", kind, a, b, p)
			}
			if !l.contains(p) || !strings.HasPrefix(p, l.root+"/") {
				t.Fatalf("%s(%q, %q) = %q, outside the pool", kind, a, b, p)
			}
			if filepath.Dir(p) != parent || filepath.Base(p) != last {
				t.Fatalf("%s(%q, %q) = %q, want %q in %q", kind, a, b, p, last, parent)
			}
		}
		p, err := l.image(a)
		check("image", p, err, filepath.Join(l.root, imagesDir), a)
		p, err = l.vm(a)
		check("vm", p, err, filepath.Join(l.root, vmsDir), a)
		p, err = l.vmBackups(a)
		check("vmBackups", p, err, filepath.Join(l.root, backupsDir), a)
		if p, err = l.backup(a, b); err == nil {
			check("backup", p, err, filepath.Join(l.root, backupsDir, a), b)
		} else {
			check("backup", p, err, "", "")
		}
		vm := filepath.Join(l.root, vmsDir, "vm-1")
		p, err = l.file(vm, a)
		check("file", p, err, vm, a)
	})
}
