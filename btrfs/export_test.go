//go:build linux && cgo

package btrfs

import (
	"fmt"
	"os"
	"unsafe"
)

// Quota control commands (BTRFS_QUOTA_CTL_*) the package does not use itself.
const (
	quotaCtlDisable      = 2 // BTRFS_QUOTA_CTL_DISABLE
	quotaCtlEnableSimple = 4 // BTRFS_QUOTA_CTL_ENABLE_SIMPLE_QUOTA (kernel 6.7+)
)

// SetQuotas switches the quotas of p's filesystem, for benchmarks that
// compare: "off", "full" (quota groups, what Open turns on; it waits for the
// rescan) or "simple" (simple quotas, which need kernel 6.7). Quotas are
// switched off first.
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
	if _, on, err := quotaStatus(f); err != nil {
		return err
	} else if on {
		if err := ctl(quotaCtlDisable); err != nil {
			return fmt.Errorf("disable quotas: %w", err)
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
		if err := waitRescan(f); err != nil {
			return err
		}
		return syncFS(f)
	}
	return fmt.Errorf("quota mode %q: want off, full or simple", mode)
}
