package main

import (
	"bytes"
	"testing"

	"github.com/superjolt/superjolt/appliance/api"
)

// TestPrintPool: the text form of `superjolt pool`, for a pool with room
// and for a full one.
func TestPrintPool(t *testing.T) {
	const MiB = 1 << 20
	p := api.Pool{
		Pool: "/var/lib/superjolt/pool.img", SizeBytes: 512 * MiB, UsedBytes: 500 * MiB, FreeBytes: 12 * MiB,
		MetadataFreeBytes: 26 * MiB, ReserveBytes: 8 * MiB,
		Images:  api.PoolUsage{Count: 1, ReferencedBytes: 270 * MiB, ExclusiveBytes: 260 * MiB},
		VMs:     api.PoolUsage{Count: 2, ReferencedBytes: 600 * MiB, ExclusiveBytes: 180 * MiB},
		Backups: api.PoolUsage{Count: 5, ReferencedBytes: 1500 * MiB, ExclusiveBytes: 40 * MiB},
	}
	tests := []struct {
		name string
		full bool
		free int64
		want string
	}{
		{"room", false, 12 * MiB, `Pool:           /var/lib/superjolt/pool.img
Size:           512 MiB
Used:           500 MiB (97.7%)
Free:           12 MiB
Metadata free:  26 MiB

KIND     COUNT  REFERENCED  EXCLUSIVE
images   1      270 MiB     260 MiB
vms      2      600 MiB     180 MiB
backups  5      1.5 GiB     40 MiB
`},
		{"full", true, 0, `Pool:           /var/lib/superjolt/pool.img
Size:           512 MiB
Used:           500 MiB (97.7%)
Free:           0 B (FULL: below the 8.0 MiB reserve; new VMs, backups and restores are refused)
Metadata free:  26 MiB

KIND     COUNT  REFERENCED  EXCLUSIVE
images   1      270 MiB     260 MiB
vms      2      600 MiB     180 MiB
backups  5      1.5 GiB     40 MiB
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			o := &globalOptions{stdout: &out}
			p := p
			p.Full, p.FreeBytes = tt.full, tt.free
			if err := o.printPool(p); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", out.String(), tt.want)
			}
		})
	}
}
