package mcpserver

import (
	"context"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/model"
)

// Backend is what the tools call: the few verbs of the appliance they need,
// already scoped to whoever the server acts for. It has two
// implementations, and only two:
//
//   - Local (in superjoltd, behind /mcp): the daemon's own server.Appliance
//     wrapped in server.Tenant, with the token's principal put in every
//     call's context. The ownership rules are Tenant's, the very code the
//     remote API runs: the tools never check ownership themselves.
//   - Client (superjolt mcp over stdio): an api.Client, over the operator's
//     UNIX socket or a remote superjoltd with one account's token, where
//     the daemon's Tenant scopes it the same way.
type Backend interface {
	// Now is the appliance's clock (its time decides graveyard or not).
	Now(ctx context.Context) (time.Time, error)
	Accounts(ctx context.Context) ([]model.Account, error)
	Account(ctx context.Context, id string) (model.Account, error)
	Tiers(ctx context.Context) ([]model.Tier, error)
	VMs(ctx context.Context, state model.VMState) ([]model.VM, error)
	VM(ctx context.Context, id string) (model.VM, error)
	CreateVM(ctx context.Context, req api.CreateVMRequest) (model.Operation, error)
	StopVM(ctx context.Context, id string) (model.Operation, error)
	StartVM(ctx context.Context, id string) (model.Operation, error)
	ResumeVM(ctx context.Context, id string) (model.Operation, error)
	DestroyVM(ctx context.Context, id string) (model.Operation, error)
	CreateBackup(ctx context.Context, vmID string) (model.Operation, error)
	Backup(ctx context.Context, id string) (model.Backup, error)
	Backups(ctx context.Context, vmID string) ([]model.Backup, error)
	DeleteBackup(ctx context.Context, id string) (model.Operation, error)
	// ResolveBackup names the backup of a VM that from says: "latest",
	// "yesterday", a date YYYY-MM-DD (days in the IANA zone tz, "" UTC) or
	// a backup id.
	ResolveBackup(ctx context.Context, vmID, from, tz string) (model.Backup, error)
	RestoreVM(ctx context.Context, vmID, backupID string) (model.Operation, error)
	Operation(ctx context.Context, id string) (model.Operation, error)
	// WaitOperation answers once the operation's step differs from step
	// or it ended, or when ctx ends (then as it is, without error).
	WaitOperation(ctx context.Context, id, step string) (model.Operation, error)
}

// Client is the Backend of `superjolt mcp`: the CLI's API client.
func Client(c *api.Client) Backend { return clientBackend{c} }

type clientBackend struct{ *api.Client }

func (c clientBackend) Now(ctx context.Context) (time.Time, error) {
	st, err := c.Status(ctx)
	if err != nil {
		// GET /v1/status is the operator's (it tells the box's capacity):
		// an account token falls back on this machine's clock, which only
		// words the preview of destroy_vm; the daemon applies the rule.
		return time.Now(), nil
	}
	return st.Now, nil
}

func (c clientBackend) VMs(ctx context.Context, state model.VMState) ([]model.VM, error) {
	return c.Client.VMs(ctx, api.VMFilter{State: state})
}

func (c clientBackend) CreateBackup(ctx context.Context, vmID string) (model.Operation, error) {
	return c.Client.CreateBackup(ctx, vmID)
}

func (c clientBackend) WaitOperation(ctx context.Context, id, step string) (model.Operation, error) {
	op, err := c.Client.WaitOperation(ctx, id, step)
	if err != nil && ctx.Err() != nil {
		// The caller's wait ended: answer the operation as it is.
		return c.Client.Operation(context.WithoutCancel(ctx), id)
	}
	return op, err
}

// Local is the Backend of superjoltd's /mcp for one principal: app scoped
// by server.Tenant, every call made with p in its context. rec (may be
// nil) records each change made with an account token, as the remote API
// does (a "tenant.action" event naming the token).
func Local(app server.Appliance, p model.Principal, rec server.ActionRecorder) Backend {
	return &localBackend{t: server.NewTenant(app), p: p, rec: rec}
}

type localBackend struct {
	t   *server.Tenant
	p   model.Principal
	rec server.ActionRecorder
}

func (l *localBackend) ctx(ctx context.Context) context.Context {
	return appliance.WithPrincipal(ctx, l.p)
}

// changed records a change that succeeded.
func (l *localBackend) changed(ctx context.Context, verb, object string, op model.Operation, err error) (model.Operation, error) {
	if err == nil && l.rec != nil {
		if object == "" {
			object = op.ID
		}
		_ = l.rec.RecordTenantAction(l.ctx(ctx), appliance.TenantAction{Verb: "MCP " + verb, Object: object, Status: 200})
	}
	return op, err
}

func (l *localBackend) Now(context.Context) (time.Time, error) { return l.t.Clock().Now(), nil }

func (l *localBackend) Accounts(ctx context.Context) ([]model.Account, error) {
	return l.t.Accounts(l.ctx(ctx))
}

func (l *localBackend) Account(ctx context.Context, id string) (model.Account, error) {
	return l.t.Account(l.ctx(ctx), id)
}

func (l *localBackend) Tiers(ctx context.Context) ([]model.Tier, error) { return l.t.Tiers(l.ctx(ctx)) }

func (l *localBackend) VMs(ctx context.Context, state model.VMState) ([]model.VM, error) {
	return l.t.VMs(l.ctx(ctx), appliance.VMFilter{State: state})
}

func (l *localBackend) VM(ctx context.Context, id string) (model.VM, error) {
	return l.t.VM(l.ctx(ctx), id)
}

func (l *localBackend) CreateVM(ctx context.Context, req api.CreateVMRequest) (model.Operation, error) {
	op, err := l.t.SubmitCreateVM(l.ctx(ctx), appliance.CreateVMRequest{AccountID: req.AccountID, Tier: req.Tier,
		Image: req.Image, Name: req.Name, SSHKeys: req.SSHKeys})
	return l.changed(ctx, "create_vm", op.VMID, op, err)
}

func (l *localBackend) StopVM(ctx context.Context, id string) (model.Operation, error) {
	op, err := l.t.SubmitStopVM(l.ctx(ctx), id)
	return l.changed(ctx, "stop_vm", id, op, err)
}

func (l *localBackend) StartVM(ctx context.Context, id string) (model.Operation, error) {
	op, err := l.t.SubmitStartVM(l.ctx(ctx), id)
	return l.changed(ctx, "start_vm", id, op, err)
}

func (l *localBackend) ResumeVM(ctx context.Context, id string) (model.Operation, error) {
	op, err := l.t.SubmitResumeVM(l.ctx(ctx), id)
	return l.changed(ctx, "resume_vm", id, op, err)
}

func (l *localBackend) DestroyVM(ctx context.Context, id string) (model.Operation, error) {
	op, err := l.t.SubmitDestroyVM(l.ctx(ctx), id)
	return l.changed(ctx, "destroy_vm", id, op, err)
}

func (l *localBackend) CreateBackup(ctx context.Context, vmID string) (model.Operation, error) {
	op, err := l.t.SubmitBackup(l.ctx(ctx), vmID)
	return l.changed(ctx, "create_backup", vmID, op, err)
}

func (l *localBackend) Backup(ctx context.Context, id string) (model.Backup, error) {
	return l.t.Backup(l.ctx(ctx), id)
}

func (l *localBackend) Backups(ctx context.Context, vmID string) ([]model.Backup, error) {
	return l.t.Backups(l.ctx(ctx), vmID)
}

func (l *localBackend) DeleteBackup(ctx context.Context, id string) (model.Operation, error) {
	op, err := l.t.SubmitDeleteBackup(l.ctx(ctx), id)
	return l.changed(ctx, "delete_backup", id, op, err)
}

func (l *localBackend) ResolveBackup(ctx context.Context, vmID, from, tz string) (model.Backup, error) {
	loc, err := api.LoadZone(tz)
	if err != nil {
		return model.Backup{}, err
	}
	return l.t.ResolveBackup(l.ctx(ctx), vmID, from, loc)
}

func (l *localBackend) RestoreVM(ctx context.Context, vmID, backupID string) (model.Operation, error) {
	op, err := l.t.SubmitRestore(l.ctx(ctx), vmID, backupID)
	return l.changed(ctx, "restore_vm_from_backup", vmID, op, err)
}

func (l *localBackend) Operation(ctx context.Context, id string) (model.Operation, error) {
	return l.t.Operation(l.ctx(ctx), id)
}

func (l *localBackend) WaitOperation(ctx context.Context, id, step string) (model.Operation, error) {
	op, err := l.t.WaitOperation(l.ctx(ctx), id, step)
	if err != nil && ctx.Err() != nil {
		return l.t.Operation(l.ctx(context.WithoutCancel(ctx)), id)
	}
	return op, err
}
