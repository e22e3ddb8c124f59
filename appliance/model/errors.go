package model

import (
	"errors"
	"fmt"
)

// The error categories. Errors returned by the appliance wrap exactly one of
// them (errors.Is works), with a message that says what to do next.
var (
	// ErrNotFound: the object does not exist (or no longer does).
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request itself is wrong (bad id, name, amount, flag).
	ErrInvalid = errors.New("invalid")
	// ErrConflict: the request is well formed but the object's state forbids it
	// now (double destroy, a restore while another operation runs).
	ErrConflict = errors.New("conflict")
	// ErrInsufficientFunds: the account's balance does not allow it.
	ErrInsufficientFunds = errors.New("insufficient funds")
	// ErrUnavailable: a part the request needs (a guest agent, the VMM) did not
	// answer; trying again later may work.
	ErrUnavailable = errors.New("unavailable")
	// ErrNoSpace: the storage pool is full; the message names it and says how
	// much is free. Freeing space (deleting backups, destroying VMs) and
	// trying again works.
	ErrNoSpace = errors.New("no space")
	// ErrUnauthenticated: the request carries no valid credential (a
	// missing, malformed, unknown, revoked or expired token).
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrForbidden: the credential is valid but may not do this (an
	// operator's verb asked with an account token, a change asked with a
	// read-only one). Another account's objects are ErrNotFound instead:
	// their existence does not leak.
	ErrForbidden = errors.New("forbidden")
)

// HasCategory reports whether err wraps one of the categories above; an
// error without one is an internal error.
func HasCategory(err error) bool {
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return true
		}
	}
	return false
}

// categories pairs each category with its Code, in the order Code checks
// them.
var categories = [...]struct {
	err  error
	code string
}{
	{ErrNotFound, "not_found"},
	{ErrInvalid, "invalid"},
	{ErrConflict, "conflict"},
	{ErrInsufficientFunds, "insufficient_funds"},
	{ErrUnavailable, "unavailable"},
	{ErrNoSpace, "no_space"},
	{ErrUnauthenticated, "unauthenticated"},
	{ErrForbidden, "forbidden"},
}

// CodedError is an error that crossed a boundary as a code and a message
// (an operation's record, the API's JSON): it wraps the category of its
// code (errors.Is works), or nothing for "internal", and reads as Message.
type CodedError struct {
	Code    string
	Message string
}

func (e *CodedError) Error() string { return e.Message }

// Unwrap returns the category error of the code, or nil.
func (e *CodedError) Unwrap() error { return CodeError(e.Code) }

// Code is the stable, machine-readable name of an error category, as the API
// sends it and scripts match on it: "internal" for an error of none.
func Code(err error) string {
	if err == nil {
		return ""
	}
	for _, c := range categories {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return "internal"
}

// CodeError returns the category error for a Code, or nil for an unknown code
// (and for "internal"). Clients use it to rebuild a wrapped error from the
// API's JSON.
func CodeError(code string) error {
	for _, c := range categories {
		if c.code == code {
			return c.err
		}
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
