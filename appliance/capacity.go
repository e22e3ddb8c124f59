package appliance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Capacity: every live VM holds its tier's memory. A running VM uses it; a
// stopped one keeps it (DESIGN: a stopped VM keeps its RAM reservation), so
// that starting it never fails for lack of memory; the graveyard and the
// archive give it back. A VM is created, or resumed, only when its memory
// fits in the host's, less what is kept for the host (hostReserveMiB) and
// what the other live VMs hold. An operator may overcommit a create on
// purpose (the guests then share memory the host may not have: under
// pressure the kernel's OOM killer picks a QEMU); it is an event. vCPUs are
// shared, not held: their total is shown, not refused; so are disks, sparse
// files that take only what their guests write: what they may grow to is
// shown against the pool's size.

// hostReserveMiB is the memory kept for the host: an eighth of it, at least
// 1 GiB.
func hostReserveMiB(totalMiB int64) int64 { return max(1024, totalMiB/8) }

// hostMemoryMiB reads the host's memory from /proc/meminfo.
func hostMemoryMiB() (int64, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := bytes.Fields(sc.Bytes())
		if len(f) >= 2 && string(f[0]) == "MemTotal:" {
			kib, err := strconv.ParseInt(string(f[1]), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %w", err)
			}
			return kib / 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemTotal")
}

// accelReporter is a Hypervisor that says how guests run.
type accelReporter interface{ Accel() string }

// Capacity returns the host's memory and CPUs and what the VMs hold.
func (a *Appliance) Capacity(ctx context.Context) (model.Capacity, error) {
	var c model.Capacity
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		c, err = a.capacity(tx)
		return err
	})
	if err != nil {
		return c, categorised(err, "read the capacity")
	}
	if sp, err := a.pool.Space(ctx); err == nil {
		c.PoolBytes, c.PoolUsedBytes = sp.Size, sp.Used
	} else {
		a.log.Warn("cannot read the pool's size", "err", err)
	}
	return c, nil
}

// capacity sums what the live VMs hold, in tx.
func (a *Appliance) capacity(tx *store.Tx) (model.Capacity, error) {
	c := model.Capacity{Accel: "none", MemoryMiB: a.hostMiB, ReserveMiB: hostReserveMiB(a.hostMiB), CPUs: runtime.NumCPU()}
	if r, ok := a.hv.(accelReporter); ok {
		c.Accel = r.Accel()
	}
	tiers := map[string]model.Tier{}
	err := tx.ForEachVM(func(vm model.VM) error {
		if !vm.State.Live() && vm.State != model.StateCreating {
			return nil
		}
		t, ok := tiers[vm.Tier]
		if !ok {
			var err error
			if t, err = tx.Tier(vm.Tier); err != nil {
				return fmt.Errorf("tier %s of %s: %w", vm.Tier, vm.ID, err)
			}
			tiers[vm.Tier] = t
		}
		c.ReservedMiB += int64(t.MemoryMiB)
		c.VCPUs += t.VCPUs
		c.DiskGiB += int64(t.DiskGiB)
		c.LiveVMs++
		return nil
	})
	return c, err
}

// reserveMemory checks, in tx, that a VM of tier fits in what the host
// has left. With overcommit it lets it through, with an event, and says so.
func (a *Appliance) reserveMemory(tx *store.Tx, vmID, accountID string, tier model.Tier, overcommit bool) error {
	c, err := a.capacity(tx)
	if err != nil {
		return err
	}
	need := int64(tier.MemoryMiB)
	if need <= c.FreeMiB() {
		return nil
	}
	what := fmt.Sprintf("%s needs %s of memory (tier %s) but the host has %s left: %s in all, %s kept for the host, %s held by %s (stopped VMs keep theirs)",
		vmID, fmtMiB(need), tier.Name, fmtMiB(max(c.FreeMiB(), 0)), fmtMiB(c.MemoryMiB), fmtMiB(c.ReserveMiB), fmtMiB(c.ReservedMiB), model.Count(c.LiveVMs, "live VM"))
	if !overcommit {
		return conflictf("%s; destroy a VM to free memory, pick a smaller tier, or create it anyway with --overcommit", what)
	}
	return event(tx, a.clock.Now(), "vm.overcommitted", vmID, accountID, "%s; created anyway (--overcommit): under memory pressure the host's OOM killer may end a guest", what)
}

// fmtMiB formats MiB for messages: "512 MiB", "1.5 GiB".
func fmtMiB(mib int64) string {
	if mib >= 1024 && mib%1024 == 0 {
		return fmt.Sprintf("%d GiB", mib/1024)
	}
	if mib >= 1024 {
		return fmt.Sprintf("%.1f GiB", float64(mib)/1024)
	}
	return fmt.Sprintf("%d MiB", mib)
}
