//go:build linux && cgo

package testvm_test

import (
	"os/exec"
	"strings"
)

// btrfsReadOnly asks btrfs-progs, independently of the pool package, whether a subvolume is read-only.
func btrfsReadOnly(path string) (bool, error) {
	out, err := exec.Command("btrfs", "property", "get", "-ts", path, "ro").Output()
	if err != nil {
		return false, err
	}
	return strings.TrimSpace(string(out)) == "ro=true", nil
}
