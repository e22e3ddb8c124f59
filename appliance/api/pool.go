package api

import (
	"context"
	"net/http"
)

// Pool is the answer to GET /v1/pool: how full the storage pool is and what
// uses it. Sizes are in bytes.
type Pool struct {
	// Pool names the pool: its image file, or its directory.
	Pool string `json:"pool"`
	// SizeBytes, UsedBytes and FreeBytes are for data, as df shows them;
	// used includes metadata and Btrfs's own overhead (used = size - free).
	SizeBytes int64 `json:"size_bytes"`
	UsedBytes int64 `json:"used_bytes"`
	FreeBytes int64 `json:"free_bytes"`
	// MetadataFreeBytes estimates the room left for metadata, which Btrfs
	// keeps apart from data; -1 when unknown.
	MetadataFreeBytes int64 `json:"metadata_free_bytes"`
	// ReserveBytes is the free space below which new VMs, backups and
	// restores are refused with no_space; Full says the pool is below it.
	ReserveBytes int64 `json:"reserve_bytes"`
	Full         bool  `json:"full"`
	// Images, VMs and Backups are what each kind uses, from the extent
	// maps of their files.
	Images  PoolUsage `json:"images"`
	VMs     PoolUsage `json:"vms"`
	Backups PoolUsage `json:"backups"`
}

// PoolUsage is what the subvolumes of one kind (images, VMs, backups) use.
type PoolUsage struct {
	Count int `json:"count"`
	// ReferencedBytes adds up what each references, shared data counted
	// once per subvolume sharing it.
	ReferencedBytes int64 `json:"referenced_bytes"`
	// ExclusiveBytes adds up what each holds alone: at least what deleting
	// them all would free.
	ExclusiveBytes int64 `json:"exclusive_bytes"`
}

// Pool returns how full the storage pool is and what uses it.
func (c *Client) Pool(ctx context.Context) (Pool, error) {
	var p Pool
	return p, c.do(ctx, http.MethodGet, "/v1/pool", nil, nil, &p)
}
