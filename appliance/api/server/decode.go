package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// request is a request body type that can check itself.
type request interface {
	Validate() error
}

// portRequest is the body of POST /v1/vms/{id}/ports: a model.Port.
type portRequest model.Port

func (p portRequest) Validate() error { return model.ValidatePort(model.Port(p)) }

// decodeRequest reads r's body as a T, strictly, and validates it.
func decodeRequest[T request](w http.ResponseWriter, r *http.Request) (T, error) {
	var zero T
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return zero, invalidf("request body must be application/json, not %q", clip(ct))
		}
	}
	return decode[T](http.MaxBytesReader(w, r.Body, api.MaxRequestBytes))
}

// decode reads one JSON object from body into a T: unknown fields, trailing
// data, a wrong type or an empty body are refused with model.ErrInvalid, and
// the result must pass its Validate.
func decode[T request](body io.Reader) (T, error) {
	var v T
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		return v, decodeErr(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return v, decodeErr(err)
		}
		return v, invalidf("request body has data after its JSON object")
	}
	if err := v.Validate(); err != nil {
		return v, err
	}
	return v, nil
}

func decodeErr(err error) error {
	var (
		mbe *http.MaxBytesError
		se  *json.SyntaxError
		te  *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, model.ErrInvalid):
		return err
	case errors.Is(err, io.EOF):
		return invalidf("request body is empty: send a JSON object")
	case errors.As(err, &mbe):
		return invalidf("request body is larger than %d bytes", mbe.Limit)
	case errors.As(err, &se):
		return invalidf("request body is not valid JSON (at byte %d): %v", se.Offset, se)
	case errors.As(err, &te):
		if te.Field != "" {
			return invalidf("field %q must be a JSON %s, not %s", clip(te.Field), jsonKind(te.Type.Kind().String()), te.Value)
		}
		return invalidf("request body must be a JSON object, not %s", te.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return invalidf("request body is cut short")
	}
	// Unknown fields and other decoder complaints ("json: unknown field \"x\"").
	return invalidf("request body: %s", clip(stripJSON(err.Error())))
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice":
		return "array"
	case "struct", "map":
		return "object"
	}
	return "number"
}

func stripJSON(s string) string {
	if b, ok := bytes.CutPrefix([]byte(s), []byte("json: ")); ok {
		return string(b)
	}
	return s
}

// noBody refuses a request body on verbs that take none; an empty JSON
// object is tolerated for clients that always send one.
func noBody(w http.ResponseWriter, r *http.Request) error {
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1024))
	if s := bytes.TrimSpace(b); err != nil || len(s) > 0 && string(s) != "{}" {
		return invalidf("%s %s takes no request body", r.Method, clip(r.URL.Path))
	}
	return nil
}

// pathID returns the path value name after checking it is an id of kind k.
func pathID(r *http.Request, name string, k model.Kind) (string, error) {
	id := r.PathValue(name)
	if err := model.ValidateID(k, id); err != nil {
		return "", err
	}
	return id, nil
}

// queryBool reads ?name=1 (or true; 0, false or absent: false).
func queryBool(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "0", "false":
		return false, nil
	case "1", "true":
		return true, nil
	default:
		return false, invalidf("%s=%q: use %s=1", name, clip(v), name)
	}
}

// queryLimit reads ?limit=N (1..model.MaxListLimit), def when absent.
func queryLimit(r *http.Request, def int) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > model.MaxListLimit {
		return 0, invalidf("limit=%q: use a number from 1 to %d", clip(v), model.MaxListLimit)
	}
	return n, nil
}

// onlyQuery refuses query parameters other than names, and repeated ones.
func onlyQuery(r *http.Request, names ...string) error {
	for k, vs := range r.URL.Query() {
		ok := false
		for _, n := range names {
			ok = ok || k == n
		}
		if !ok {
			return invalidf("unknown query parameter %q (known: %v)", clip(k), names)
		}
		if len(vs) > 1 {
			return invalidf("query parameter %q given %d times", clip(k), len(vs))
		}
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", model.ErrInvalid, fmt.Sprintf(format, args...))
}

func clip(s string) string {
	const max = 40
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
