// Package pending stands in for the appliance's request types until package
// appliance compiles; the server imports it under the name appliance.
package pending

import "github.com/superjolt/superjolt/appliance/model"

type CreateAccountRequest struct {
	Name            string
	Balance         model.Micro
	BackupRetention int
}

type CreateVMRequest struct{ AccountID, Tier, Image, Name string }

type VMFilter struct {
	AccountID string
	State     model.VMState
}

type DestroyResult struct {
	VM        model.VM
	Reclaimed bool
}
