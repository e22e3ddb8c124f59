package main

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// Exit codes; see the package documentation and `superjolt --help`.
const (
	exitOK           = 0
	exitInternal     = 1
	exitUsage        = 2
	exitNotFound     = 3
	exitConflict     = 4
	exitFunds        = 5
	exitUnavailable  = 6
	exitNoSpace      = 7
	exitAuth         = 8
	exitCancelled    = 130
	exitCodesHelpTxt = `Exit codes:
  0    success
  1    internal error
  2    invalid input or usage (bad id, amount, flag; destructive command without --yes off a terminal)
  3    not found
  4    conflict (the object's state forbids it now; clock advance on a real clock)
  5    insufficient funds
  6    unavailable (superjoltd or a guest agent cannot be reached)
  7    no space (the storage pool is full: delete backups or destroy VMs; see 'superjolt pool')
  8    not allowed (a missing, revoked or expired token; an operator's verb or a change with a read-only token)
  130  cancelled (SIGINT, or a confirmation not answered yes)
'vm exec' exits with the guest command's status when the command ran.`
)

// exitStatus is an error that carries an exit code and prints nothing: the
// guest command of `vm exec` already said what it had to.
type exitStatus int

func (e exitStatus) Error() string { return "exit status " + strconv.Itoa(int(e)) }

// exitCode maps err to the process's exit code. ran reports whether a
// command's own code ran: errors before that are cobra's complaints about
// flags, arguments or unknown commands, which are usage errors.
func exitCode(ctx context.Context, err error, ran bool) int {
	var st exitStatus
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &st):
		return int(st)
	case errors.Is(err, errNotConfirmed),
		ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ctx.Err())):
		return exitCancelled
	case errors.Is(err, model.ErrInvalid):
		return exitUsage
	case errors.Is(err, model.ErrNotFound):
		return exitNotFound
	case errors.Is(err, model.ErrConflict):
		return exitConflict
	case errors.Is(err, model.ErrInsufficientFunds):
		return exitFunds
	case errors.Is(err, model.ErrUnavailable):
		return exitUnavailable
	case errors.Is(err, model.ErrUnauthenticated), errors.Is(err, model.ErrForbidden):
		return exitAuth
	case errors.Is(err, model.ErrNoSpace):
		return exitNoSpace
	case !ran:
		return exitUsage
	}
	return exitInternal
}

// message is what the user reads for err.
func message(err error) string {
	var detached *detachedError
	if errors.As(err, &detached) {
		return detached.Error()
	}
	if errors.Is(err, context.Canceled) {
		return "cancelled"
	}
	msg := err.Error()
	// The category is in the exit code; the message need not start with it.
	for _, cat := range []error{model.ErrNotFound, model.ErrInvalid, model.ErrConflict, model.ErrInsufficientFunds, model.ErrUnavailable, model.ErrNoSpace, model.ErrUnauthenticated, model.ErrForbidden} {
		if rest, ok := strings.CutPrefix(msg, cat.Error()+": "); ok && errors.Is(err, cat) {
			return rest
		}
	}
	return msg
}

func commandPath(c *cobra.Command) string {
	if c == nil {
		return "superjolt"
	}
	return strings.TrimSpace(c.CommandPath())
}

// printError writes err to stderr as the API's JSON error body, for -o json.
func (o *globalOptions) printError(err error) {
	code := model.Code(err)
	if errors.Is(err, context.Canceled) || errors.Is(err, errNotConfirmed) {
		code = "cancelled"
	}
	_ = json.NewEncoder(o.stderr).Encode(api.ErrorBody{Error: api.ErrorDetail{Code: code, Message: message(err)}})
}
