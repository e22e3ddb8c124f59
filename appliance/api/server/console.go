package server

import (
	"fmt"
	"net/http"
	"strings"
	"unicode"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// console serves POST /v1/vms/{id}/console: the serial console of a running
// VM as one full-duplex HTTP/1.1 exchange of raw bytes. The request body,
// read while the answer streams, is what the operator types; the answer
// (200, application/octet-stream, flushed as it comes) is what the guest
// writes. The end of the request body, or the client leaving, detaches.
// Refused before the 200: a VM that is not running, and a console that
// another client is attached to (409, naming it).
func (s *Server) console(w http.ResponseWriter, r *http.Request) {
	id, err := pathID(r, "id", model.KindVM)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rc := http.NewResponseController(w)
	if err := rc.EnableFullDuplex(); err != nil {
		s.fail(w, r, err)
		return
	}
	client := clientName(r.Header.Get(api.ConsoleClientHeader))
	started := false
	// A session can last for hours: a daemon shutting down ends it at once
	// instead of waiting out its grace for it.
	ctx, cancel := streamContext(r)
	defer cancel()
	err = s.app.Console(ctx, id, appliance.ConsoleIO{
		Client: client,
		In:     r.Body,
		Out: writerFunc(func(p []byte) (int, error) {
			n, err := w.Write(p)
			if err == nil {
				err = rc.Flush()
			}
			return n, err
		}),
		Attached: func() {
			started = true
			startStream(w, rc, "application/octet-stream")
		},
	})
	if !started {
		if err == nil {
			err = fmt.Errorf("%w: the console of %s closed before it was attached", model.ErrUnavailable, id)
		}
		s.fail(w, r, err)
		return
	}
	if err != nil && ctx.Err() == nil {
		s.log.Warn("api: console session ended", "vm", id, "err", err)
	}
}

// clientName is a client's description of itself, printable and short.
func clientName(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsPrint(r) {
			return r
		}
		return -1
	}, s)
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
