package appliance

import (
	"context"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// principalKey holds a request's model.Principal in its context.
type principalKey struct{}

// WithPrincipal returns ctx acting for p. The API's remote listener sets it
// for every request made with an account token; the UNIX socket never does,
// so the operator is the zero Principal.
func WithPrincipal(ctx context.Context, p model.Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns who ctx acts for: the zero Principal (the operator)
// unless WithPrincipal said otherwise.
func PrincipalFrom(ctx context.Context) model.Principal {
	p, _ := ctx.Value(principalKey{}).(model.Principal)
	return p
}

// TenantAction is one change an account token made, as recorded by
// RecordTenantAction.
type TenantAction struct {
	// Verb is the request, e.g. "POST /v1/vms/vm-abc123/stop".
	Verb string
	// Object is the id the request was about ("" when it named none, such
	// as creating a VM: then the operation it started, if known).
	Object string
	// Status is the HTTP status it was answered with.
	Status int
}

// RecordTenantAction appends a "tenant.action" event naming the token of
// ctx's principal, its account, the object and the verb: every change made
// with a token is in the event log under the token's name. It does nothing
// for the operator.
func (a *Appliance) RecordTenantAction(ctx context.Context, act TenantAction) error {
	p := PrincipalFrom(ctx)
	if p.Operator() {
		return nil
	}
	// Not under the request's context: the change is made, its record must
	// be too, even when the client has gone.
	err := a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		return event(tx, a.clock.Now(), "tenant.action", act.Object, p.AccountID,
			"token %q (%s) of %s: %s (%d)", p.TokenName, p.TokenID, p.AccountID, act.Verb, act.Status)
	})
	return categorised(err, "record the token's action")
}
