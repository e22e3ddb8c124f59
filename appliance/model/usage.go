package model

import "time"

// VMUsage is what the QEMU process of a running VM uses on the host, as
// sampled when it was asked for.
type VMUsage struct {
	VMID string `json:"vm_id"`
	// MemoryBytes is the resident memory of the process: the guest memory
	// it has touched, plus QEMU's own.
	MemoryBytes int64 `json:"memory_bytes"`
	// CPUPercent is the CPU time the process used since the previous
	// sample, over the time since then: 100 is one core kept busy, a VM
	// with n vCPUs goes up to n×100. The first sample of a process gives
	// its average since it started.
	CPUPercent float64 `json:"cpu_percent"`
	// CPUTime is the CPU time the VM has used since its process started.
	CPUTime time.Duration `json:"cpu_time_ns"`
	// Source says where the figures come from: "cgroup" (its systemd
	// unit's) or "proc" (its QEMU process's, when the cgroup does not tell).
	Source string `json:"source"`
}

// Where VMUsage figures come from.
const (
	UsageFromCgroup = "cgroup"
	UsageFromProc   = "proc"
)
