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
)

// Code is the stable, machine-readable name of an error category, as the API
// sends it and scripts match on it.
func Code(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrInvalid):
		return "invalid"
	case errors.Is(err, ErrConflict):
		return "conflict"
	case errors.Is(err, ErrInsufficientFunds):
		return "insufficient_funds"
	case errors.Is(err, ErrUnavailable):
		return "unavailable"
	case errors.Is(err, ErrNoSpace):
		return "no_space"
	default:
		return "internal"
	}
}

// CodeError returns the category error for a Code, or nil for an unknown code.
// Clients use it to rebuild a wrapped error from the API's JSON.
func CodeError(code string) error {
	switch code {
	case "not_found":
		return ErrNotFound
	case "invalid":
		return ErrInvalid
	case "conflict":
		return ErrConflict
	case "insufficient_funds":
		return ErrInsufficientFunds
	case "unavailable":
		return ErrUnavailable
	case "no_space":
		return ErrNoSpace
	}
	return nil
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}
