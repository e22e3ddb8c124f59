package server

import (
	"context"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// importImage makes an image from the request body (a tarball or a raw or
// qcow2 disk), streaming progress (see api.ImageProgress).
func (s *Server) importImage(w http.ResponseWriter, r *http.Request) {
	if err := onlyQuery(r, "name", "file"); err != nil {
		s.fail(w, r, err)
		return
	}
	name := r.URL.Query().Get("name")
	if err := model.ValidateImageName(name); err != nil {
		s.fail(w, r, invalidf("name=%q: %v", clip(name), err))
		return
	}
	if r.ContentLength > api.MaxImageBytes {
		s.fail(w, r, invalidf("the image is %d bytes, more than the %d an import takes", r.ContentLength, int64(api.MaxImageBytes)))
		return
	}
	body := http.MaxBytesReader(w, r.Body, api.MaxImageBytes)
	// Progress may be written while the body is still read (HTTP/1.1
	// otherwise closes the body at the first write of the answer).
	if err := http.NewResponseController(w).EnableFullDuplex(); err != nil {
		s.log.Debug("api: no full duplex; progress waits for the upload", "err", err)
	}
	s.streamImage(w, r, func(ctx context.Context, progress func(string)) (model.Image, error) {
		return s.app.ImportImage(ctx, appliance.ImportImageRequest{Name: name, File: r.URL.Query().Get("file")}, body, progress)
	})
}

// buildImage makes an image from a recipe, streaming progress.
func (s *Server) buildImage(w http.ResponseWriter, r *http.Request) {
	req, err := decodeRequest[api.BuildImageRequest](w, r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.streamImage(w, r, func(ctx context.Context, progress func(string)) (model.Image, error) {
		return s.app.BuildImage(ctx, appliance.BuildImageRequest{Recipe: req.Recipe, Name: req.Name, Packages: req.Packages}, progress)
	})
}

// streamImage runs make, writing each progress line as it comes and the
// result last. An error before any progress is an ordinary error answer.
func (s *Server) streamImage(w http.ResponseWriter, r *http.Request, makeImage func(ctx context.Context, progress func(string)) (model.Image, error)) {
	ctx, cancel := streamContext(r)
	defer cancel()
	var mu sync.Mutex
	started := false
	enc := json.NewEncoder(w)
	send := func(p api.ImageProgress) {
		mu.Lock()
		defer mu.Unlock()
		if !started {
			w.Header().Set("Content-Type", "application/x-ndjson")
			w.WriteHeader(http.StatusOK)
			started = true
		}
		_ = enc.Encode(p)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	im, err := makeImage(ctx, func(msg string) { send(api.ImageProgress{Progress: msg}) })
	mu.Lock()
	wasStarted := started
	mu.Unlock()
	if err != nil && !wasStarted {
		s.fail(w, r, err)
		return
	}
	if err != nil {
		_, body := api.Body(err)
		s.log.Warn("api: image failed", "path", r.URL.Path, "err", err)
		send(api.ImageProgress{Error: &body.Error})
		return
	}
	send(api.ImageProgress{Image: &im})
}

// deleteImage removes an image; VMs made from it keep their own disks.
func (s *Server) deleteImage(w http.ResponseWriter, r *http.Request) {
	im, err := s.app.DeleteImage(r.Context(), r.PathValue("name"))
	s.reply(w, r, http.StatusOK, im, err)
}
