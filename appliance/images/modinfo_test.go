package images

import (
	"slices"
	"strings"
	"testing"
)

func TestLoadOrder(t *testing.T) {
	m := func(name string, deps ...string) modInfo { return modInfo{Name: name, Depends: deps} }
	tests := []struct {
		name    string
		mods    []modInfo
		want    []string
		wantErr string
	}{
		{
			name: "microvm virtio stack given backwards",
			mods: []modInfo{
				m("virtio_console", "virtio", "virtio_ring"),
				m("virtio_blk", "virtio", "virtio_ring"),
				m("virtio_mmio", "virtio", "virtio_ring"),
				m("virtio"),
				m("virtio_ring"),
			},
			want: []string{"virtio", "virtio_ring", "virtio_console", "virtio_blk", "virtio_mmio"},
		},
		{
			name: "vsock chain",
			mods: []modInfo{
				m("vsock_loopback", "vmw_vsock_virtio_transport_common", "vsock"),
				m("vmw_vsock_virtio_transport_common", "vsock"),
				m("vsock"),
			},
			want: []string{"vsock", "vmw_vsock_virtio_transport_common", "vsock_loopback"},
		},
		{name: "missing dependency", mods: []modInfo{m("a", "b")}, wantErr: "a needs b"},
		{name: "cycle", mods: []modInfo{m("a", "b"), m("b", "a")}, wantErr: "cycle"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := loadOrder(tt.mods)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("order = %v, want %v", got, tt.want)
			}
		})
	}
}
