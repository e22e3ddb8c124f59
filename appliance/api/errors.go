package api

import (
	"errors"
	"net/http"

	"github.com/superjolt/superjolt/appliance/model"
)

// ErrorBody is the JSON of a failed request: {"error":{"code":…,"message":…}}.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the error inside an ErrorBody.
type ErrorDetail struct {
	// Code is model.Code of the error: not_found, invalid, conflict,
	// insufficient_funds, unavailable, no_space or internal.
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error is a failed request as the client sees it. It wraps the model
// category of its Code (errors.Is(err, model.ErrConflict) works), or nothing
// for "internal".
type Error struct {
	Code    string
	Message string
	// Status is the HTTP status the daemon answered with.
	Status int
}

func (e *Error) Error() string { return e.Message }

// Unwrap returns the model category error, or nil.
func (e *Error) Unwrap() error { return model.CodeError(e.Code) }

// StatusOf returns the HTTP status for a model error code.
func StatusOf(code string) int {
	switch code {
	case "not_found":
		return http.StatusNotFound
	case "invalid":
		return http.StatusBadRequest
	case "conflict":
		return http.StatusConflict
	case "insufficient_funds":
		return http.StatusPaymentRequired
	case "unavailable":
		return http.StatusServiceUnavailable
	case "no_space":
		return http.StatusInsufficientStorage
	case "unauthenticated":
		return http.StatusUnauthorized
	case "forbidden":
		return http.StatusForbidden
	}
	return http.StatusInternalServerError
}

// codeOfStatus guesses a code from a status, for answers without an error
// body (a proxy, a 405 from the router).
func codeOfStatus(status int) string {
	switch status {
	case http.StatusNotFound:
		return "not_found"
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusRequestEntityTooLarge, http.StatusUnsupportedMediaType:
		return "invalid"
	case http.StatusConflict:
		return "conflict"
	case http.StatusPaymentRequired:
		return "insufficient_funds"
	case http.StatusServiceUnavailable, http.StatusBadGateway, http.StatusGatewayTimeout:
		return "unavailable"
	case http.StatusInsufficientStorage:
		return "no_space"
	case http.StatusUnauthorized:
		return "unauthenticated"
	case http.StatusForbidden:
		return "forbidden"
	}
	return "internal"
}

// Body returns the JSON body for err, and its status.
func Body(err error) (int, ErrorBody) {
	code := model.Code(err)
	var ae *Error
	if errors.As(err, &ae) && ae.Code != "" {
		code = ae.Code
	}
	return StatusOf(code), ErrorBody{Error: ErrorDetail{Code: code, Message: err.Error()}}
}
