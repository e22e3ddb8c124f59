package server

import (
	"net/http"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
)

// pool serves GET /v1/pool.
func (s *Server) pool(w http.ResponseWriter, r *http.Request) {
	st, err := s.app.PoolStatus(r.Context())
	use := func(u appliance.PoolUsage) api.PoolUsage {
		return api.PoolUsage{Count: u.Count, ReferencedBytes: u.Referenced, ExclusiveBytes: u.Exclusive}
	}
	s.reply(w, r, http.StatusOK, api.Pool{Pool: st.Pool, SizeBytes: st.Size, UsedBytes: st.Used, FreeBytes: st.Free,
		MetadataFreeBytes: st.MetadataFree, ReserveBytes: st.Reserve, Full: st.Full,
		Images: use(st.Images), VMs: use(st.VMs), Backups: use(st.Backups)}, err)
}
