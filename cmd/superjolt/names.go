package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// Names are accepted wherever an id is: `vm show web-1`, `--account
// alice`. A VM's name is unique in its account and an account's on the box
// (the daemon refuses duplicates), so a name names one object, unless two
// accounts each have a VM of that name: then the CLI lists them and asks
// for the id.

// vmID returns the id of the VM ref names: ref itself when it is a VM id,
// else the VM whose name it is.
func (o *globalOptions) vmID(ctx context.Context, ref string) (string, error) {
	if model.ValidateID(model.KindVM, ref) == nil {
		return ref, nil
	}
	if model.ValidateID(model.KindVM, strings.ToLower(ref)) == nil {
		return "", fmt.Errorf("%w: %q is not a VM id: ids are lowercase, like %s", model.ErrInvalid, ref, strings.ToLower(ref))
	}
	if model.ValidateVMName(ref) != nil {
		return "", fmt.Errorf("%w: %q is not a VM id (like vm-a1b2c3) nor a VM name (like web-1)", model.ErrInvalid, clipRef(ref))
	}
	vms, err := o.client.VMs(ctx, api.VMFilter{})
	if err != nil {
		return "", err
	}
	var found []model.VM
	for _, vm := range vms {
		if vm.Name == ref {
			found = append(found, vm)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("%w: no VM is named %s; `superjolt vm list` shows the VMs", model.ErrNotFound, ref)
	case 1:
		return found[0].ID, nil
	}
	var which []string
	for _, vm := range found {
		which = append(which, vm.ID+" (account "+vm.AccountID+")")
	}
	return "", fmt.Errorf("%w: %d VMs are named %s: %s; give the id", model.ErrConflict, len(found), ref, strings.Join(which, ", "))
}

// accountID returns the id of the account ref names: ref itself when it is
// an account id, else the account whose name it is (in any case).
func (o *globalOptions) accountID(ctx context.Context, ref string) (string, error) {
	if model.ValidateID(model.KindAccount, ref) == nil {
		return ref, nil
	}
	if model.ValidateID(model.KindAccount, strings.ToLower(ref)) == nil {
		return "", fmt.Errorf("%w: %q is not an account id: ids are lowercase, like %s", model.ErrInvalid, ref, strings.ToLower(ref))
	}
	if model.ValidateAccountName(ref) != nil {
		return "", fmt.Errorf("%w: %q is not an account id (like ac-a1b2c3) nor an account name", model.ErrInvalid, clipRef(ref))
	}
	accts, err := o.client.Accounts(ctx)
	if err != nil {
		return "", err
	}
	for _, a := range accts {
		if strings.EqualFold(a.Name, ref) {
			return a.ID, nil
		}
	}
	return "", fmt.Errorf("%w: no account is named %s; `superjolt account list` shows the accounts", model.ErrNotFound, ref)
}

// resolveVM replaces *ref, a VM's id or name, by its id.
func (o *globalOptions) resolveVM(ctx context.Context, ref *string) error {
	id, err := o.vmID(ctx, *ref)
	*ref = id
	return err
}

// resolveAccount replaces *ref, an account's id or name, by its id.
func (o *globalOptions) resolveAccount(ctx context.Context, ref *string) error {
	id, err := o.accountID(ctx, *ref)
	*ref = id
	return err
}

func clipRef(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
