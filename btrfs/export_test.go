//go:build linux && cgo

package btrfs

import (
	"fmt"
	"os"
	"unsafe"
)

// Quota ioctls and commands the package does not use itself: the pool runs
// with quotas off; tests and benchmarks switch them on to compare.
const (
	iocQuotaRescanWait   = 0x942e // _IO(0x94, 46)
	quotaCtlEnable       = 1      // BTRFS_QUOTA_CTL_ENABLE
	quotaCtlEnableSimple = 4      // BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA (kernel 6.7+)
)

// SetQuotas switches the quotas of p's filesystem, for tests and benchmarks
// that compare: "off" (what the pool runs), "full" (quota groups, what
// superjolt turned on before; it waits for the rescan) or "simple" (simple
// quotas, which need kernel 6.7). Quotas are switched off first.
func SetQuotas(p *Pool, mode string) error {
	f, err := os.Open(p.root)
	if err != nil {
		return err
	}
	defer f.Close()
	ctl := func(cmd uint64) error {
		args := struct{ cmd, status uint64 }{cmd: cmd}
		return ioctlPtr(f, iocQuotaCtl, unsafe.Pointer(&args))
	}
	if on, err := QuotasOn(p); err != nil {
		return err
	} else if on {
		if err := disableQuota(f); err != nil {
			return err
		}
	}
	switch mode {
	case "off":
		return nil
	case "simple":
		if err := ctl(quotaCtlEnableSimple); err != nil {
			return fmt.Errorf("enable simple quotas: %w", err)
		}
		return syncFS(f)
	case "full":
		if err := ctl(quotaCtlEnable); err != nil {
			return fmt.Errorf("enable quotas: %w", err)
		}
		if err := ioctlPtr(f, iocQuotaRescanWait, nil); err != nil {
			return fmt.Errorf("wait for the quota rescan: %w", err)
		}
		return syncFS(f)
	}
	return fmt.Errorf("quota mode %q: want off, full or simple", mode)
}

// QuotasOn reports whether quotas (full or simple) are on for p's filesystem.
func QuotasOn(p *Pool) (bool, error) {
	f, err := os.Open(p.root)
	if err != nil {
		return false, err
	}
	defer f.Close()
	return quotaOn(f)
}
