package model

// Capacity is the host's memory and CPUs and what the VMs hold of them.
type Capacity struct {
	// Accel is how guests run: "kvm", "tcg" (software emulation, slower),
	// or "none" when there is no VMM.
	Accel string `json:"accel"`
	// MemoryMiB is the host's memory; ReserveMiB of it is kept for the host
	// itself (the daemon, QEMU's own overhead, the page cache).
	MemoryMiB  int64 `json:"memory_mib"`
	ReserveMiB int64 `json:"reserve_mib"`
	// ReservedMiB is the memory live VMs hold: a running VM uses it and a
	// stopped one keeps it, so that it can start again.
	ReservedMiB int64 `json:"reserved_mib"`
	// CPUs are the host's; VCPUs the live VMs' (not reserved: they share).
	CPUs  int `json:"cpus"`
	VCPUs int `json:"vcpus"`
	// LiveVMs counts the VMs that hold memory.
	LiveVMs int `json:"live_vms"`
	// DiskGiB is what the live VMs' disks may grow to (sparse: they take
	// only what their guests write); PoolBytes is the pool's size and
	// PoolUsedBytes what of it is used (as df shows them; `superjolt pool`
	// says what uses it).
	DiskGiB       int64 `json:"disk_gib"`
	PoolBytes     int64 `json:"pool_bytes"`
	PoolUsedBytes int64 `json:"pool_used_bytes"`
}

// DisksOvercommitted reports whether the live VMs' disks could outgrow the
// pool if every guest filled its disk.
func (c Capacity) DisksOvercommitted() bool { return c.PoolBytes > 0 && c.DiskGiB<<30 > c.PoolBytes }

// FreeMiB is what a new VM can still reserve (negative when overcommitted).
func (c Capacity) FreeMiB() int64 { return c.MemoryMiB - c.ReserveMiB - c.ReservedMiB }
