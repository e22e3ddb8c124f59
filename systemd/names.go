package systemd

import (
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/coreos/go-systemd/v22/util"
)

const (
	// Slice holds every VM unit; stopping it stops every VM.
	Slice = "superjolt.slice"
	// DaemonUnit is superjoltd's service.
	DaemonUnit = "superjoltd.service"

	unitPrefix = "superjolt-vm-"
	unitSuffix = ".service"
)

// vmIDPattern is what a VM id looks like (model ids: "vm-" and up to 32
// lower-case letters and digits).
var vmIDPattern = regexp.MustCompile(`^vm-[a-z0-9]{1,32}$`)

// CheckVMID returns an error unless vmID is a VM id that can name a unit.
func CheckVMID(vmID string) error {
	if !vmIDPattern.MatchString(vmID) {
		return fmt.Errorf("systemd: %q is not a VM id (want vm- and 1 to 32 lower-case letters or digits)", vmID)
	}
	return nil
}

// UnitName returns the name of VM vmID's unit, "superjolt-vm-<id>.service"
// ("superjolt-vm-vm-abc123.service" for vm-abc123: the id is kept whole, so
// that a search for the id finds its unit). It does not check vmID; every
// Manager method does (CheckVMID) and returns an error for a string that is
// not a VM id, so that no other unit can be named through it.
func UnitName(vmID string) string {
	return unitPrefix + vmID + unitSuffix
}

// VMIDOfUnit returns the VM id of a VM unit's name; "", false when unit is not
// the name of a VM unit.
func VMIDOfUnit(unit string) (string, bool) {
	id, ok := strings.CutPrefix(unit, unitPrefix)
	if !ok {
		return "", false
	}
	id, ok = strings.CutSuffix(id, unitSuffix)
	if !ok || CheckVMID(id) != nil {
		return "", false
	}
	return id, true
}

// unitName is UnitName for the methods that return errors.
func unitName(vmID string) (string, error) {
	if err := CheckVMID(vmID); err != nil {
		return "", err
	}
	return unitPrefix + vmID + unitSuffix, nil
}

// Booted reports whether PID 1 is systemd (it made /run/systemd/system).
func Booted() bool {
	return util.IsRunningSystemd()
}

// isRoot reports whether this process runs as root.
func isRoot() bool { return os.Geteuid() == 0 }
