package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
)

// Tenant scopes an Appliance to the principal of each call's context
// (appliance.PrincipalFrom): the operator (the zero principal) passes
// through; an account token sees and acts on its own account only. It is
// what the remote listener serves (see Remote), so the check is in the
// daemon, below every route, deny by default.
//
// Tenant implements the whole Appliance interface by hand: a method added to
// Appliance does not compile here until someone writes its tenant rule.
//
// For an account token:
//
//   - another account's VM, backup, operation or account answers exactly
//     what a missing object of that id gets: a read is answered what the
//     inner appliance answers the same read about a fresh id that cannot
//     exist (the fresh id replaced by the one asked for); a change is never
//     passed on and is answered what reading the object answers (the VM's,
//     backup's, operation's or account's model.ErrNotFound). Missing and
//     foreign objects take the same path, so existence does not leak, and a
//     refused change leaves no trace in the store;
//   - lists are filtered to the token's account;
//   - a read-only token gets model.ErrForbidden for every verb that changes
//     something, before anything is looked up.
//
// The rule of each method, for an account token:
//
//	method                         rule
//	Clock                          pass (the time is no secret)
//	Capacity (GET /v1/status)      operator's: the box's capacity
//	HaltVM                         operator's: the service manager's hook
//	CreateAccount, TopUp, Adjust   operator's
//	CreateToken, Tokens,
//	RevokeToken                    operator's: a token mints no other
//	Accounts                       filtered: the token's own account
//	Account, Ledger, LedgerTotals  own account only, read
//	SetAccountSSHKeys              own account only, change
//	Tiers, Images                  read: what a VM can be made from
//	ImportImage, BuildImage,
//	DeleteImage, PoolStatus        operator's
//	SubmitCreateVM                 in the own account only, change
//	VMs, VMUsage                   filtered to the own account
//	VM, VMLogs, ConsoleLog         own VM, read
//	SubmitStop/Start/Resume/
//	DestroyVM, Exec, ExecStream,
//	Console                        own VM, change
//	AddPort, RemovePort,
//	AddDomain, RemoveDomain        operator's: host ports and domain names are
//	                               the box's namespace, shared by accounts (a
//	                               conflict would name another account's VM)
//	SubmitBackup, Backups,
//	ResolveBackup                  own VM (SubmitBackup changes)
//	Backup                         own VM's backup, read
//	ListBackups                    filtered to the own account
//	SubmitDeleteBackup             own VM's backup, change
//	SubmitRestore                  own VM and own backup, change
//	Operation, WaitOperation       own operation (of an own VM or backup), read
//	CancelOperation                own operation, change
//	Operations                     filtered to the own account
//	Events, LastEvents, WaitEvents filtered: the events whose Account is own
//	AdvanceClock                   operator's
//
// LastEvents looks for the account's events among the newest
// model.MaxListLimit events of the box only.
type Tenant struct {
	app Appliance
}

var _ Appliance = (*Tenant)(nil)

// NewTenant returns app scoped to each call's principal.
func NewTenant(app Appliance) *Tenant { return &Tenant{app: app} }

// operators refuses an operator's verb to an account token.
func operators(ctx context.Context, what string) error {
	if p := appliance.PrincipalFrom(ctx); !p.Operator() {
		return fmt.Errorf("%w: %s is the operator's: account tokens (%s) cannot", model.ErrForbidden, what, p.TokenName)
	}
	return nil
}

// changes refuses a change to a read-only token.
func changes(ctx context.Context, what string) error {
	if p := appliance.PrincipalFrom(ctx); !p.Operator() && p.ReadOnly {
		return fmt.Errorf("%w: token %q is read-only: it cannot %s", model.ErrForbidden, p.TokenName, what)
	}
	return nil
}

// renamedError is an error of the inner appliance about a fresh id, told
// about the id the caller asked for.
type renamedError struct {
	err error
	msg string
}

func (e *renamedError) Error() string { return e.msg }
func (e *renamedError) Unwrap() error { return e.err }

// asMissing answers what call answers for a fresh id of kind k, one that
// does not exist, with the fresh id in an error told as id: what a request
// on another account's object gets, so that it cannot tell the object from
// a missing one.
func asMissing[T any](k model.Kind, id string, call func(fresh string) (T, error)) (T, error) {
	fresh := model.NewID(k)
	v, err := call(fresh)
	if err != nil {
		err = &renamedError{err: err, msg: strings.ReplaceAll(err.Error(), fresh, id)}
	}
	return v, err
}

// tenant returns the principal when it is an account token's.
func tenant(ctx context.Context) (model.Principal, bool) {
	p := appliance.PrincipalFrom(ctx)
	return p, !p.Operator()
}

// ownVM reports whether the VM id exists and is the principal's account's.
func (t *Tenant) ownVM(ctx context.Context, p model.Principal, id string) (bool, error) {
	vm, err := t.app.VM(ctx, id)
	if errors.Is(err, model.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return vm.AccountID == p.AccountID, nil
}

func (t *Tenant) ownBackup(ctx context.Context, p model.Principal, id string) (bool, error) {
	b, err := t.app.Backup(ctx, id)
	if errors.Is(err, model.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.ownVM(ctx, p, b.VMID)
}

func (t *Tenant) ownOp(ctx context.Context, p model.Principal, id string) (bool, error) {
	op, err := t.app.Operation(ctx, id)
	if errors.Is(err, model.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return t.opOwned(ctx, p, op)
}

func (t *Tenant) opOwned(ctx context.Context, p model.Principal, op model.Operation) (bool, error) {
	switch {
	case op.VMID != "":
		return t.ownVM(ctx, p, op.VMID)
	case op.BackupID != "":
		return t.ownBackup(ctx, p, op.BackupID)
	}
	return false, nil
}

// onVM runs call on the VM id when ctx may read it, or answers as if it did
// not exist; changeVM is onVM for a change.
func onVM[T any](t *Tenant, ctx context.Context, id string, call func(id string) (T, error)) (T, error) {
	return scoped(t, ctx, model.KindVM, id, t.ownVM, false, call)
}

func changeVM[T any](t *Tenant, ctx context.Context, id string, call func(id string) (T, error)) (T, error) {
	return scoped(t, ctx, model.KindVM, id, t.ownVM, true, call)
}

// on runs call on the object id of kind k when own says it is the
// principal's account's, or answers as if it did not exist.
func on[T any](t *Tenant, ctx context.Context, k model.Kind, id string, own func(context.Context, model.Principal, string) (bool, error), call func(id string) (T, error)) (T, error) {
	return scoped(t, ctx, k, id, own, false, call)
}

// change is on for a call that changes something.
func change[T any](t *Tenant, ctx context.Context, k model.Kind, id string, own func(context.Context, model.Principal, string) (bool, error), call func(id string) (T, error)) (T, error) {
	return scoped(t, ctx, k, id, own, true, call)
}

// scoped runs call on id for the operator, or for a token whose account
// owns it. Otherwise a read is answered what the inner appliance answers
// the same call about a fresh id (asMissing), and a change, which is never
// passed on (even about a fresh id, a verb may leave a trace, such as a
// reserved operation id), is answered what reading the object answers
// about a fresh id. Missing and foreign objects go the same way, so the
// answers cannot tell them apart.
func scoped[T any](t *Tenant, ctx context.Context, k model.Kind, id string, own func(context.Context, model.Principal, string) (bool, error), changes bool, call func(id string) (T, error)) (T, error) {
	p, ok := tenant(ctx)
	if !ok {
		return call(id)
	}
	var zero T
	if err := model.ValidateID(k, id); err != nil {
		// No object has a malformed id: say so, as the appliance would.
		return zero, err
	}
	mine, err := own(ctx, p, id)
	if err != nil {
		return zero, err
	}
	if mine {
		return call(id)
	}
	if changes {
		_, err := asMissing(k, id, func(fresh string) (struct{}, error) { return struct{}{}, t.get(ctx, k, fresh) })
		if err == nil {
			err = fmt.Errorf("%w: %s does not exist", model.ErrNotFound, id)
		}
		return zero, err
	}
	return asMissing(k, id, call)
}

// get reads the object id of kind k, for its error.
func (t *Tenant) get(ctx context.Context, k model.Kind, id string) error {
	var err error
	switch k {
	case model.KindVM:
		_, err = t.app.VM(ctx, id)
	case model.KindBackup:
		_, err = t.app.Backup(ctx, id)
	case model.KindOperation:
		_, err = t.app.Operation(ctx, id)
	case model.KindAccount:
		_, err = t.app.Account(ctx, id)
	default:
		err = fmt.Errorf("%w: %s does not exist", model.ErrNotFound, id)
	}
	return err
}

// Clock passes through.
func (t *Tenant) Clock() clock.Clock { return t.app.Clock() }

func (t *Tenant) VMLogs(ctx context.Context, id string, lines int, follow bool, w io.Writer) error {
	_, err := onVM(t, ctx, id, func(id string) (struct{}, error) { return struct{}{}, t.app.VMLogs(ctx, id, lines, follow, w) })
	return err
}

func (t *Tenant) HaltVM(ctx context.Context, id string) (model.VM, error) {
	if err := operators(ctx, "halting a VM for the service manager"); err != nil {
		return model.VM{}, err
	}
	return t.app.HaltVM(ctx, id)
}

func (t *Tenant) Capacity(ctx context.Context) (model.Capacity, error) {
	if err := operators(ctx, "the box's status and capacity"); err != nil {
		return model.Capacity{}, err
	}
	return t.app.Capacity(ctx)
}

func (t *Tenant) CreateAccount(ctx context.Context, req appliance.CreateAccountRequest) (model.Account, error) {
	if err := operators(ctx, "opening an account"); err != nil {
		return model.Account{}, err
	}
	return t.app.CreateAccount(ctx, req)
}

func (t *Tenant) Accounts(ctx context.Context) ([]model.Account, error) {
	as, err := t.app.Accounts(ctx)
	if p, ok := tenant(ctx); ok {
		as = slices.DeleteFunc(as, func(a model.Account) bool { return a.ID != p.AccountID })
	}
	return as, err
}

// ownAccount reports whether id is the principal's account.
func ownAccount(_ context.Context, p model.Principal, id string) (bool, error) {
	return id == p.AccountID, nil
}

func (t *Tenant) Account(ctx context.Context, id string) (model.Account, error) {
	return on(t, ctx, model.KindAccount, id, ownAccount, func(id string) (model.Account, error) { return t.app.Account(ctx, id) })
}

// Account tokens are the operator's to make, list and revoke: a token
// cannot mint another, nor see its siblings.

func (t *Tenant) CreateToken(ctx context.Context, req appliance.CreateTokenRequest) (model.Token, string, error) {
	if err := operators(ctx, "making account tokens"); err != nil {
		return model.Token{}, "", err
	}
	return t.app.CreateToken(ctx, req)
}

func (t *Tenant) Tokens(ctx context.Context, accountID string) ([]model.Token, error) {
	if err := operators(ctx, "listing account tokens"); err != nil {
		return nil, err
	}
	return t.app.Tokens(ctx, accountID)
}

func (t *Tenant) RevokeToken(ctx context.Context, id string) (model.Token, error) {
	if err := operators(ctx, "revoking account tokens"); err != nil {
		return model.Token{}, err
	}
	return t.app.RevokeToken(ctx, id)
}

func (t *Tenant) TopUp(ctx context.Context, id string, amount model.Micro) (model.Account, error) {
	if err := operators(ctx, "topping up an account"); err != nil {
		return model.Account{}, err
	}
	return t.app.TopUp(ctx, id, amount)
}

func (t *Tenant) Adjust(ctx context.Context, id string, amount model.Micro, reason string) (model.Account, error) {
	if err := operators(ctx, "adjusting a balance"); err != nil {
		return model.Account{}, err
	}
	return t.app.Adjust(ctx, id, amount, reason)
}

func (t *Tenant) SetAccountSSHKeys(ctx context.Context, id string, keys []string) (model.Account, error) {
	if err := changes(ctx, "set the account's SSH keys"); err != nil {
		return model.Account{}, err
	}
	return change(t, ctx, model.KindAccount, id, ownAccount, func(id string) (model.Account, error) { return t.app.SetAccountSSHKeys(ctx, id, keys) })
}

func (t *Tenant) Ledger(ctx context.Context, accountID string, limit int) ([]model.LedgerEntry, error) {
	return on(t, ctx, model.KindAccount, accountID, ownAccount, func(id string) ([]model.LedgerEntry, error) { return t.app.Ledger(ctx, id, limit) })
}

func (t *Tenant) LedgerTotals(ctx context.Context, accountID string) (model.LedgerTotals, error) {
	return on(t, ctx, model.KindAccount, accountID, ownAccount, func(id string) (model.LedgerTotals, error) { return t.app.LedgerTotals(ctx, id) })
}

// Tiers may be read: a tenant chooses one for a VM.
func (t *Tenant) Tiers(ctx context.Context) ([]model.Tier, error) { return t.app.Tiers(ctx) }

// Images may be read: a tenant chooses one for a VM.
func (t *Tenant) Images(ctx context.Context) ([]model.Image, error) { return t.app.Images(ctx) }

func (t *Tenant) ImportImage(ctx context.Context, req appliance.ImportImageRequest, r io.Reader, progress func(string)) (model.Image, error) {
	if err := operators(ctx, "importing an image"); err != nil {
		return model.Image{}, err
	}
	return t.app.ImportImage(ctx, req, r, progress)
}

func (t *Tenant) BuildImage(ctx context.Context, req appliance.BuildImageRequest, progress func(string)) (model.Image, error) {
	if err := operators(ctx, "building an image"); err != nil {
		return model.Image{}, err
	}
	return t.app.BuildImage(ctx, req, progress)
}

func (t *Tenant) DeleteImage(ctx context.Context, name string) (model.Image, error) {
	if err := operators(ctx, "deleting an image"); err != nil {
		return model.Image{}, err
	}
	return t.app.DeleteImage(ctx, name)
}

func (t *Tenant) PoolStatus(ctx context.Context) (appliance.PoolStatus, error) {
	if err := operators(ctx, "the storage pool"); err != nil {
		return appliance.PoolStatus{}, err
	}
	return t.app.PoolStatus(ctx)
}

func (t *Tenant) SubmitCreateVM(ctx context.Context, req appliance.CreateVMRequest) (model.Operation, error) {
	if err := changes(ctx, "create a VM"); err != nil {
		return model.Operation{}, err
	}
	if p, ok := tenant(ctx); ok && req.AccountID == "" {
		req.AccountID = p.AccountID
	}
	return change(t, ctx, model.KindAccount, req.AccountID, ownAccount, func(id string) (model.Operation, error) {
		r := req
		r.AccountID = id
		return t.app.SubmitCreateVM(ctx, r)
	})
}

func (t *Tenant) VMs(ctx context.Context, f appliance.VMFilter) ([]model.VM, error) {
	return tenantVMs(t, ctx, f, func(f appliance.VMFilter) ([]model.VM, error) { return t.app.VMs(ctx, f) })
}

func (t *Tenant) VMRows(ctx context.Context, f appliance.VMFilter, pg appliance.Page) (appliance.Rows, error) {
	return tenantVMs(t, ctx, f, func(f appliance.VMFilter) (appliance.Rows, error) { return t.app.VMRows(ctx, f, pg) })
}

// tenantVMs runs a list of VMs for the operator as it is, and for a token
// on its own account's VMs only (another account's are as if it did not
// exist), every page of it.
func tenantVMs[T any](t *Tenant, ctx context.Context, f appliance.VMFilter, list func(appliance.VMFilter) (T, error)) (T, error) {
	p, ok := tenant(ctx)
	if !ok {
		return list(f)
	}
	if f.AccountID == "" {
		f.AccountID = p.AccountID
	}
	return on(t, ctx, model.KindAccount, f.AccountID, ownAccount, func(id string) (T, error) {
		g := f
		g.AccountID = id
		return list(g)
	})
}

func (t *Tenant) VMUsage(ctx context.Context) ([]model.VMUsage, error) {
	us, err := t.app.VMUsage(ctx)
	p, ok := tenant(ctx)
	if !ok || err != nil {
		return us, err
	}
	mine, err := t.ownVMs(ctx, p)
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(us, func(u model.VMUsage) bool { return !mine[u.VMID] }), nil
}

// ownVMs returns the ids of the stored VMs of p's account.
func (t *Tenant) ownVMs(ctx context.Context, p model.Principal) (map[string]bool, error) {
	vms, err := t.app.VMs(ctx, appliance.VMFilter{AccountID: p.AccountID})
	if err != nil {
		return nil, err
	}
	mine := make(map[string]bool, len(vms))
	for _, vm := range vms {
		mine[vm.ID] = true
	}
	return mine, nil
}

func (t *Tenant) VM(ctx context.Context, id string) (model.VM, error) {
	return onVM(t, ctx, id, func(id string) (model.VM, error) { return t.app.VM(ctx, id) })
}

func (t *Tenant) vmVerb(ctx context.Context, id, what string, fn func(context.Context, string) (model.Operation, error)) (model.Operation, error) {
	if err := changes(ctx, what); err != nil {
		return model.Operation{}, err
	}
	return changeVM(t, ctx, id, func(id string) (model.Operation, error) { return fn(ctx, id) })
}

func (t *Tenant) SubmitStopVM(ctx context.Context, id string) (model.Operation, error) {
	return t.vmVerb(ctx, id, "stop a VM", t.app.SubmitStopVM)
}

func (t *Tenant) SubmitStartVM(ctx context.Context, id string) (model.Operation, error) {
	return t.vmVerb(ctx, id, "start a VM", t.app.SubmitStartVM)
}

func (t *Tenant) SubmitResumeVM(ctx context.Context, id string) (model.Operation, error) {
	return t.vmVerb(ctx, id, "resume a VM", t.app.SubmitResumeVM)
}

func (t *Tenant) SubmitDestroyVM(ctx context.Context, id string) (model.Operation, error) {
	return t.vmVerb(ctx, id, "destroy a VM", t.app.SubmitDestroyVM)
}

func (t *Tenant) Exec(ctx context.Context, id string, req guest.ExecRequest) (guest.ExecResult, error) {
	if err := changes(ctx, "run a program in a VM"); err != nil {
		return guest.ExecResult{}, err
	}
	return changeVM(t, ctx, id, func(id string) (guest.ExecResult, error) { return t.app.Exec(ctx, id, req) })
}

func (t *Tenant) ExecStream(ctx context.Context, id string, req guest.ExecRequest, eio guest.ExecIO) (guest.ExecResult, error) {
	if err := changes(ctx, "run a program in a VM"); err != nil {
		return guest.ExecResult{}, err
	}
	return changeVM(t, ctx, id, func(id string) (guest.ExecResult, error) { return t.app.ExecStream(ctx, id, req, eio) })
}

func (t *Tenant) Console(ctx context.Context, id string, cio appliance.ConsoleIO) error {
	if err := changes(ctx, "attach to a VM's console"); err != nil {
		return err
	}
	_, err := changeVM(t, ctx, id, func(id string) (struct{}, error) { return struct{}{}, t.app.Console(ctx, id, cio) })
	return err
}

func (t *Tenant) ConsoleLog(ctx context.Context, id string, n int) ([]string, error) {
	return onVM(t, ctx, id, func(id string) ([]string, error) { return t.app.ConsoleLog(ctx, id, n) })
}

func (t *Tenant) AddPort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := operators(ctx, "publishing a host port"); err != nil {
		return model.VM{}, err
	}
	return t.app.AddPort(ctx, id, p)
}

func (t *Tenant) RemovePort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := operators(ctx, "removing a host port"); err != nil {
		return model.VM{}, err
	}
	return t.app.RemovePort(ctx, id, p)
}

func (t *Tenant) AddDomain(ctx context.Context, id, domain string, port uint16) (model.VM, error) {
	if err := operators(ctx, "giving a VM a domain"); err != nil {
		return model.VM{}, err
	}
	return t.app.AddDomain(ctx, id, domain, port)
}

func (t *Tenant) RemoveDomain(ctx context.Context, id, domain string) (model.VM, error) {
	if err := operators(ctx, "removing a VM's domain"); err != nil {
		return model.VM{}, err
	}
	return t.app.RemoveDomain(ctx, id, domain)
}

func (t *Tenant) SubmitBackup(ctx context.Context, vmID string) (model.Operation, error) {
	return t.vmVerb(ctx, vmID, "take a backup", t.app.SubmitBackup)
}

func (t *Tenant) Backup(ctx context.Context, id string) (model.Backup, error) {
	return on(t, ctx, model.KindBackup, id, t.ownBackup, func(id string) (model.Backup, error) { return t.app.Backup(ctx, id) })
}

func (t *Tenant) Backups(ctx context.Context, vmID string) ([]model.Backup, error) {
	return onVM(t, ctx, vmID, func(id string) ([]model.Backup, error) { return t.app.Backups(ctx, id) })
}

func (t *Tenant) ListBackups(ctx context.Context, f appliance.BackupFilter) ([]model.Backup, error) {
	return tenantBackups(t, ctx, f, func(f appliance.BackupFilter) ([]model.Backup, error) { return t.app.ListBackups(ctx, f) })
}

func (t *Tenant) BackupRows(ctx context.Context, f appliance.BackupFilter, pg appliance.Page) (appliance.Rows, error) {
	return tenantBackups(t, ctx, f, func(f appliance.BackupFilter) (appliance.Rows, error) { return t.app.BackupRows(ctx, f, pg) })
}

// tenantBackups runs a list of backups for the operator as it is, and for
// a token on its own account's VMs' backups only, every page of it.
func tenantBackups[T any](t *Tenant, ctx context.Context, f appliance.BackupFilter, list func(appliance.BackupFilter) (T, error)) (T, error) {
	p, ok := tenant(ctx)
	if !ok {
		return list(f)
	}
	if f.VMID != "" {
		bs, err := onVM(t, ctx, f.VMID, func(id string) (T, error) {
			g := f
			g.VMID = id
			g.AccountID = ""
			return list(g)
		})
		if err != nil || f.AccountID == "" {
			return bs, err
		}
	}
	if f.AccountID == "" {
		f.AccountID = p.AccountID
	}
	return on(t, ctx, model.KindAccount, f.AccountID, ownAccount, func(id string) (T, error) {
		g := f
		g.AccountID = id
		return list(g)
	})
}

func (t *Tenant) SubmitDeleteBackup(ctx context.Context, backupID string) (model.Operation, error) {
	if err := changes(ctx, "delete a backup"); err != nil {
		return model.Operation{}, err
	}
	return change(t, ctx, model.KindBackup, backupID, t.ownBackup, func(id string) (model.Operation, error) { return t.app.SubmitDeleteBackup(ctx, id) })
}

func (t *Tenant) ResolveBackup(ctx context.Context, vmID, from string, loc *time.Location) (model.Backup, error) {
	return onVM(t, ctx, vmID, func(id string) (model.Backup, error) { return t.app.ResolveBackup(ctx, id, from, loc) })
}

func (t *Tenant) SubmitRestore(ctx context.Context, vmID, backupID string) (model.Operation, error) {
	if err := changes(ctx, "restore a VM"); err != nil {
		return model.Operation{}, err
	}
	return changeVM(t, ctx, vmID, func(vmID string) (model.Operation, error) {
		return change(t, ctx, model.KindBackup, backupID, t.ownBackup, func(id string) (model.Operation, error) {
			return t.app.SubmitRestore(ctx, vmID, id)
		})
	})
}

func (t *Tenant) Operation(ctx context.Context, id string) (model.Operation, error) {
	return on(t, ctx, model.KindOperation, id, t.ownOp, func(id string) (model.Operation, error) { return t.app.Operation(ctx, id) })
}

func (t *Tenant) Operations(ctx context.Context, f appliance.OpFilter) ([]model.Operation, error) {
	p, ok := tenant(ctx)
	if !ok {
		return t.app.Operations(ctx, f)
	}
	if f.VMID != "" {
		return onVM(t, ctx, f.VMID, func(id string) ([]model.Operation, error) {
			g := f
			g.VMID = id
			return t.app.Operations(ctx, g)
		})
	}
	limit := f.Limit
	if limit <= 0 || limit > model.MaxListLimit {
		limit = model.MaxListLimit
	}
	f.Limit = model.MaxListLimit
	ops, err := t.app.Operations(ctx, f)
	if err != nil {
		return nil, err
	}
	out := ops[:0]
	for _, op := range ops {
		mine, err := t.opOwned(ctx, p, op)
		if err != nil {
			return nil, err
		}
		if mine && len(out) < limit {
			out = append(out, op)
		}
	}
	return out, nil
}

func (t *Tenant) WaitOperation(ctx context.Context, id, step string) (model.Operation, error) {
	return on(t, ctx, model.KindOperation, id, t.ownOp, func(id string) (model.Operation, error) { return t.app.WaitOperation(ctx, id, step) })
}

func (t *Tenant) CancelOperation(ctx context.Context, id string) (model.Operation, error) {
	if err := changes(ctx, "cancel an operation"); err != nil {
		return model.Operation{}, err
	}
	return change(t, ctx, model.KindOperation, id, t.ownOp, func(id string) (model.Operation, error) { return t.app.CancelOperation(ctx, id) })
}

// ownEvents keeps the events of p's account.
func ownEvents(p model.Principal, es []model.Event) []model.Event {
	return slices.DeleteFunc(es, func(e model.Event) bool { return e.Account != p.AccountID })
}

func (t *Tenant) Events(ctx context.Context, afterSeq uint64, limit int) ([]model.Event, error) {
	p, ok := tenant(ctx)
	if !ok {
		return t.app.Events(ctx, afterSeq, limit)
	}
	if limit <= 0 {
		limit = DefaultEventLimit
	}
	limit = min(limit, model.MaxListLimit)
	var out []model.Event
	for len(out) < limit {
		es, err := t.app.Events(ctx, afterSeq, model.MaxListLimit)
		if err != nil {
			return nil, err
		}
		if len(es) == 0 {
			break
		}
		afterSeq = es[len(es)-1].Seq
		out = append(out, ownEvents(p, es)...)
		if len(es) < model.MaxListLimit {
			break
		}
	}
	return out[:min(len(out), limit)], nil
}

func (t *Tenant) LastEvents(ctx context.Context, n int) ([]model.Event, error) {
	p, ok := tenant(ctx)
	if !ok {
		return t.app.LastEvents(ctx, n)
	}
	if n <= 0 {
		n = DefaultEventLimit
	}
	es, err := t.app.LastEvents(ctx, model.MaxListLimit)
	if err != nil {
		return nil, err
	}
	es = ownEvents(p, es)
	return es[max(0, len(es)-n):], nil
}

func (t *Tenant) WaitEvents(ctx context.Context, afterSeq uint64) ([]model.Event, error) {
	p, ok := tenant(ctx)
	if !ok {
		return t.app.WaitEvents(ctx, afterSeq)
	}
	for {
		es, err := t.app.WaitEvents(ctx, afterSeq)
		if err != nil || len(es) == 0 {
			return es, err
		}
		afterSeq = es[len(es)-1].Seq
		if es = ownEvents(p, es); len(es) > 0 {
			return es, nil
		}
	}
}

func (t *Tenant) AdvanceClock(ctx context.Context, d time.Duration) (time.Time, error) {
	if err := operators(ctx, "advancing the clock"); err != nil {
		return time.Time{}, err
	}
	return t.app.AdvanceClock(ctx, d)
}
