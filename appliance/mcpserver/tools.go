package mcpserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/version"
)

// Options configure New.
type Options struct {
	// ReadOnly exposes only the tools that change nothing (list_vms,
	// get_vm, get_account, get_operation, list_backups).
	ReadOnly bool
	// Caller names who the server acts for, to bind confirmations to: the
	// token's id in superjoltd. Two servers sharing a Confirmer with
	// different Callers refuse each other's confirmations.
	Caller string
	// Confirmer makes the destructive tools' confirmations (nil: a new one,
	// private to this server).
	Confirmer *Confirmer
	// Logger (nil: discard).
	Logger *slog.Logger
}

// MaxWait bounds get_operation's waitSeconds.
const MaxWait = 60

// Tool names, as on the product page.
const (
	ToolListVMs      = "list_vms"
	ToolGetVM        = "get_vm"
	ToolCreateVM     = "create_vm"
	ToolGetAccount   = "get_account"
	ToolGetOperation = "get_operation"
	ToolCreateBackup = "create_backup"
	ToolListBackups  = "list_backups"
	ToolRestore      = "restore_vm_from_backup"
	ToolDeleteBackup = "delete_backup"
	ToolStopVM       = "stop_vm"
	ToolStartVM      = "start_vm"
	ToolDestroyVM    = "destroy_vm"
	ToolResumeVM     = "resume_vm"
)

// ReadTools are the tools that change nothing: all a read-only server has.
var ReadTools = []string{ToolListVMs, ToolGetVM, ToolGetAccount, ToolGetOperation, ToolListBackups}

// WriteTools are the others.
var WriteTools = []string{ToolCreateVM, ToolCreateBackup, ToolRestore, ToolDeleteBackup, ToolStopVM, ToolStartVM, ToolDestroyVM, ToolResumeVM}

// DestructiveTools are two-phase: they act only with a confirmation.
var DestructiveTools = []string{ToolRestore, ToolDeleteBackup, ToolDestroyVM}

// tools is one server's tools over b.
type tools struct {
	b      Backend
	caller string
	conf   *Confirmer
}

// New returns the MCP server of the product page's verbs over b.
func New(b Backend, opts Options) *mcp.Server {
	t := &tools{b: b, caller: opts.Caller, conf: opts.Confirmer}
	if t.conf == nil {
		t.conf = NewConfirmer(nil)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := mcp.NewServer(&mcp.Implementation{Name: "superjolt", Title: "superjolt microVM appliance", Version: version.String()},
		&mcp.ServerOptions{Logger: log, Instructions: instructions})

	mcp.AddTool(s, &mcp.Tool{Name: ToolListVMs, Annotations: readOnly("List VMs"),
		Description: "List the VMs you can see (your account's; the operator sees every account's), with state, tier, IP and times. A VM in the graveyard or archived shows until when resume_vm can bring it back."}, t.listVMs)
	mcp.AddTool(s, &mcp.Tool{Name: ToolGetVM, Annotations: readOnly("Get a VM"),
		Description: "Show one VM by id (vm-…)."}, t.getVM)
	mcp.AddTool(s, &mcp.Tool{Name: ToolGetAccount, Annotations: readOnly("Get the account"),
		Description: "Show the account: balance in credits, what its VMs burn per hour and the runway that leaves, backup retention (scheduled backups kept per VM) and VM limit."}, t.getAccount)
	mcp.AddTool(s, &mcp.Tool{Name: ToolGetOperation, Annotations: readOnly("Follow an operation"),
		Description: "Show a long operation (op-…) returned by create_vm, create_backup, restore_vm_from_backup, delete_backup, stop_vm, start_vm, destroy_vm or resume_vm: state (running, done, failed, rolled_back, cancelled), step and progress. waitSeconds waits up to that long for it to end."}, t.getOperation)
	mcp.AddTool(s, &mcp.Tool{Name: ToolListBackups, Annotations: readOnly("List a VM's backups"),
		Description: "List every backup of a VM, newest first, with its kind (scheduled: daily, rolled off by retention; on_demand: kept until delete_backup), takenAt, sizeBytes and consistency (frozen: the guest's filesystems were frozen; crash: as after a power cut; offline: the VM was stopped)."}, t.listBackups)
	if opts.ReadOnly {
		return s
	}
	mcp.AddTool(s, &mcp.Tool{Name: ToolCreateVM, Annotations: change("Create a VM", false, false),
		Description: "Create a VM of a tier and boot it. Returns the operation; follow it with get_operation (its vm is the new VM's id)."}, t.createVM)
	mcp.AddTool(s, &mcp.Tool{Name: ToolCreateBackup, Annotations: change("Take an on-demand backup", false, false),
		Description: "Take an on-demand backup of a VM now, before a risky change. On-demand backups are kept until delete_backup. Returns the operation; follow it with get_operation."}, t.createBackup)
	mcp.AddTool(s, &mcp.Tool{Name: ToolStopVM, Annotations: change("Stop a VM", false, true),
		Description: "Stop a running VM. It stays intact and keeps billing at its tier's rate; start_vm starts it again. Returns the operation."}, t.vmVerb(ToolStopVM, Backend.StopVM))
	mcp.AddTool(s, &mcp.Tool{Name: ToolStartVM, Annotations: change("Start a VM", false, true),
		Description: "Start a stopped VM. Returns the operation."}, t.vmVerb(ToolStartVM, Backend.StartVM))
	mcp.AddTool(s, &mcp.Tool{Name: ToolResumeVM, Annotations: change("Resume a VM from the graveyard or archive", false, true),
		Description: "Bring back a VM from the graveyard (within 24 h of destroy_vm) or the archive (after a top-up). Needs an hour of runway on the balance. Returns the operation."}, t.vmVerb(ToolResumeVM, Backend.ResumeVM))
	mcp.AddTool(s, &mcp.Tool{Name: ToolRestore, Annotations: change("Restore a VM's disk from a backup", true, false),
		Description: "DESTRUCTIVE, two-phase. Rewind a VM's disk in place to a backup (same VM, id, IP, ports and domains; it reboots if running): anything written since the backup is lost. backup is a backup id, latest, yesterday or a date YYYY-MM-DD (days in timeZone, UTC by default). Call without confirm first: nothing is done, the answer says what will be lost and gives a confirm value (good for 5 minutes, for these arguments only); call again with it to restore."}, t.restore)
	mcp.AddTool(s, &mcp.Tool{Name: ToolDeleteBackup, Annotations: change("Delete an on-demand backup", true, true),
		Description: "DESTRUCTIVE, two-phase. Delete an on-demand backup for good (scheduled backups cannot be deleted: retention rolls them off). Call without confirm first: nothing is done, the answer says what will be lost and gives a confirm value (good for 5 minutes, for this backup only); call again with it to delete."}, t.deleteBackup)
	mcp.AddTool(s, &mcp.Tool{Name: ToolDestroyVM, Annotations: change("Destroy a VM", true, false),
		Description: "DESTRUCTIVE, two-phase. Destroy a VM: one older than an hour goes to the graveyard (IP and memory freed, disk and backups kept 24 h, resume_vm brings it back); a younger one is reclaimed at once with its backups. Call without confirm first: nothing is done, the answer says what will be lost and what can be undone and gives a confirm value (good for 5 minutes, for this VM only); call again with it to destroy."}, t.destroy)
	return s
}

const instructions = `superjolt runs microVMs. Every VM is backed up daily (scheduled backups, a rolling retention); create_backup takes an on-demand one before a risky change. restore_vm_from_backup rewinds a VM's disk in place; destroy_vm moves a VM older than an hour to a 24-hour graveyard, from which resume_vm brings it back. restore_vm_from_backup, delete_backup and destroy_vm are destructive and two-phase: call once without confirm to see what will be lost, show that to the user, and call again with the confirm value only if they agree. Long actions return an operation: follow it with get_operation.`

func ptr[T any](v T) *T { return &v }

func readOnly(title string) *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{Title: title, ReadOnlyHint: true, IdempotentHint: true, DestructiveHint: ptr(false), OpenWorldHint: ptr(false)}
}

func change(title string, destructive, idempotent bool) *mcp.ToolAnnotations {
	return &mcp.ToolAnnotations{Title: title, ReadOnlyHint: false, IdempotentHint: idempotent, DestructiveHint: ptr(destructive), OpenWorldHint: ptr(false)}
}

// Inputs.

type listVMsIn struct {
	State string `json:"state,omitempty" jsonschema:"only VMs in this state: creating, running, stopped, graveyard or archived"`
}

type vmIn struct {
	VM string `json:"vm" jsonschema:"the VM's id, vm- and 6 letters or digits, e.g. vm-abc123"`
}

type accountIn struct {
	Account string `json:"account,omitempty" jsonschema:"the account's id (acct-…); only the operator, who sees several, needs to give it"`
}

type createVMIn struct {
	Tier    string `json:"tier" jsonschema:"the tier: its vCPUs, memory, disk and hourly rate (e.g. nano, small, medium, large)"`
	Name    string `json:"name,omitempty" jsonschema:"the VM's hostname; empty: one is picked"`
	Image   string `json:"image,omitempty" jsonschema:"the image to start from; empty: the built-in one"`
	Account string `json:"account,omitempty" jsonschema:"the account (acct-…) it belongs to; only the operator, who sees several, needs to give it"`
}

type operationIn struct {
	Operation   string `json:"operation" jsonschema:"the operation's id, op-…, as a tool returned it"`
	WaitSeconds int    `json:"waitSeconds,omitempty" jsonschema:"wait up to this many seconds (at most 60) for the operation to end; 0 answers at once"`
}

type restoreIn struct {
	VM       string `json:"vm" jsonschema:"the VM to restore, vm-…"`
	Backup   string `json:"backup" jsonschema:"which backup: a backup id (bk-…), latest, yesterday, or a date YYYY-MM-DD (the newest backup of that day)"`
	TimeZone string `json:"timeZone,omitempty" jsonschema:"the IANA time zone in which yesterday and dates are days, e.g. Europe/Berlin; empty: UTC"`
	Confirm  string `json:"confirm,omitempty" jsonschema:"leave empty on the first call; then the confirm value the first call returned, once the user agreed"`
}

type deleteBackupIn struct {
	Backup  string `json:"backup" jsonschema:"the on-demand backup's id, bk-…"`
	Confirm string `json:"confirm,omitempty" jsonschema:"leave empty on the first call; then the confirm value the first call returned, once the user agreed"`
}

type destroyIn struct {
	VM      string `json:"vm" jsonschema:"the VM to destroy, vm-…"`
	Confirm string `json:"confirm,omitempty" jsonschema:"leave empty on the first call; then the confirm value the first call returned, once the user agreed"`
}

// Outputs, in the product page's words.

// VMView is a VM as the tools show it.
type VMView struct {
	ID        string   `json:"id"`
	Name      string   `json:"name"`
	Account   string   `json:"account"`
	Tier      string   `json:"tier"`
	Image     string   `json:"image"`
	State     string   `json:"state"`
	IP        string   `json:"ip,omitempty"`
	Ports     []string `json:"ports,omitempty"`
	Domains   []string `json:"domains,omitempty"`
	CreatedAt string   `json:"createdAt"`
	StoppedAt string   `json:"stoppedAt,omitempty"`
	// ReclaimAt: in the graveyard or archive, when it is reclaimed for good.
	ReclaimAt string `json:"reclaimAt,omitempty"`
	Note      string `json:"note,omitempty"`
}

// BackupView is a backup as list_backups shows it.
type BackupView struct {
	ID          string `json:"id"`
	VM          string `json:"vm"`
	Kind        string `json:"kind" jsonschema:"scheduled or on_demand"`
	TakenAt     string `json:"takenAt"`
	SizeBytes   int64  `json:"sizeBytes"`
	Consistency string `json:"consistency" jsonschema:"frozen, crash or offline"`
}

// OperationView is an operation as the tools show it.
type OperationView struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	VM         string `json:"vm,omitempty"`
	Backup     string `json:"backup,omitempty"`
	State      string `json:"state"`
	Step       string `json:"step"`
	Progress   int    `json:"progress"`
	Error      string `json:"error,omitempty"`
	StartedAt  string `json:"startedAt"`
	FinishedAt string `json:"finishedAt,omitempty"`
	Next       string `json:"next,omitempty"`
}

type vmsOut struct {
	VMs []VMView `json:"vms"`
}

type backupsOut struct {
	VM      string       `json:"vm"`
	Backups []BackupView `json:"backups" jsonschema:"newest first"`
}

type accountOut struct {
	ID              string  `json:"id"`
	Name            string  `json:"name"`
	Balance         string  `json:"balance" jsonschema:"in credits"`
	BalanceMicro    int64   `json:"balanceMicro" jsonschema:"in micro-credits"`
	BurnPerHour     string  `json:"burnPerHour" jsonschema:"what the account's billing VMs cost per hour, in credits"`
	RunwayHours     float64 `json:"runwayHours,omitempty" jsonschema:"hours the balance lasts at that burn; absent when nothing bills"`
	Runway          string  `json:"runway"`
	BackupRetention int     `json:"backupRetention" jsonschema:"scheduled backups kept per VM"`
	VMLimit         int     `json:"vmLimit"`
}

// Preview is the first phase's answer of a destructive tool.
type Preview struct {
	Action    string      `json:"action" jsonschema:"what the confirmed call will do"`
	Lost      string      `json:"lost" jsonschema:"what will be lost"`
	Undo      string      `json:"undo" jsonschema:"what can be undone, and how"`
	Confirm   string      `json:"confirm" jsonschema:"pass this as confirm, with the same arguments, to act"`
	ExpiresAt string      `json:"confirmExpiresAt"`
	VM        *VMView     `json:"vmDetails,omitempty"`
	Backup    *BackupView `json:"backupDetails,omitempty"`
}

type destructiveOut struct {
	// Done is false on the first phase: nothing was changed.
	Done bool `json:"done" jsonschema:"false: nothing was done yet, see preview; true: the operation started"`
	// Declined: the user was asked (MCP elicitation) and said no.
	Declined  bool           `json:"declined,omitempty" jsonschema:"the user was asked and declined: nothing was done"`
	Preview   *Preview       `json:"preview,omitempty"`
	Operation *OperationView `json:"operation,omitempty"`
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func vmView(vm model.VM) VMView {
	v := VMView{ID: vm.ID, Name: vm.Name, Account: vm.AccountID, Tier: vm.Tier, Image: vm.Image, State: string(vm.State),
		Domains: vm.Domains, CreatedAt: ts(vm.CreatedAt), ReclaimAt: ts(vm.ReclaimAt)}
	if vm.IP.IsValid() {
		v.IP = vm.IP.String()
	}
	for _, p := range vm.Ports {
		v.Ports = append(v.Ports, fmt.Sprint(p))
	}
	if vm.State == model.StateStopped {
		v.StoppedAt = ts(vm.StoppedAt)
	}
	switch vm.State {
	case model.StateGraveyard:
		v.Note = "destroyed: in the graveyard until " + ts(vm.ReclaimAt) + "; resume_vm brings it back until then"
	case model.StateArchived:
		v.Note = "archived when the balance ran out: top up, then resume_vm brings it back until " + ts(vm.ReclaimAt)
	case model.StateStopped:
		v.Note = "stopped: still billing at its tier's rate; start_vm starts it"
	}
	return v
}

func backupView(b model.Backup) BackupView {
	return BackupView{ID: b.ID, VM: b.VMID, Kind: string(b.Kind), TakenAt: ts(b.TakenAt), SizeBytes: b.SizeBytes, Consistency: string(b.Consistency)}
}

func opView(op model.Operation) OperationView {
	v := OperationView{ID: op.ID, Kind: string(op.Kind), VM: op.VMID, Backup: op.BackupID, State: string(op.State), Step: op.Step,
		Progress: op.Progress, Error: op.Error, StartedAt: ts(op.StartedAt), FinishedAt: ts(op.FinishedAt)}
	if op.State == model.OpRunning {
		v.Next = fmt.Sprintf("under way: follow it with get_operation {\"operation\": %q, \"waitSeconds\": 30}", op.ID)
	}
	return v
}

// Handlers.

func (t *tools) listVMs(ctx context.Context, _ *mcp.CallToolRequest, in listVMsIn) (*mcp.CallToolResult, vmsOut, error) {
	var st model.VMState
	if in.State != "" {
		s, err := model.ParseVMState(in.State)
		if err != nil {
			return nil, vmsOut{}, err
		}
		st = s
	}
	vms, err := t.b.VMs(ctx, st)
	if err != nil {
		return nil, vmsOut{}, err
	}
	out := vmsOut{VMs: []VMView{}}
	for _, vm := range vms {
		out.VMs = append(out.VMs, vmView(vm))
	}
	return nil, out, nil
}

func (t *tools) getVM(ctx context.Context, _ *mcp.CallToolRequest, in vmIn) (*mcp.CallToolResult, VMView, error) {
	vm, err := t.b.VM(ctx, in.VM)
	if err != nil {
		return nil, VMView{}, err
	}
	return nil, vmView(vm), nil
}

// account returns the account id asked for, or the only one the caller
// sees.
func (t *tools) account(ctx context.Context, id string) (model.Account, error) {
	if id != "" {
		return t.b.Account(ctx, id)
	}
	accts, err := t.b.Accounts(ctx)
	if err != nil {
		return model.Account{}, err
	}
	switch len(accts) {
	case 1:
		return accts[0], nil
	case 0:
		return model.Account{}, fmt.Errorf("%w: there is no account yet", model.ErrNotFound)
	}
	ids := make([]string, 0, len(accts))
	for _, a := range accts {
		ids = append(ids, a.ID+" ("+a.Name+")")
	}
	return model.Account{}, fmt.Errorf("%w: say which account: %s", model.ErrInvalid, strings.Join(ids, ", "))
}

func (t *tools) getAccount(ctx context.Context, _ *mcp.CallToolRequest, in accountIn) (*mcp.CallToolResult, accountOut, error) {
	a, err := t.account(ctx, in.Account)
	if err != nil {
		return nil, accountOut{}, err
	}
	tiers, err := t.b.Tiers(ctx)
	if err != nil {
		return nil, accountOut{}, err
	}
	rate := map[string]model.Micro{}
	for _, tr := range tiers {
		rate[tr.Name] = tr.RatePerHour
	}
	vms, err := t.b.VMs(ctx, "")
	if err != nil {
		return nil, accountOut{}, err
	}
	var burn model.Micro
	for _, vm := range vms {
		if vm.AccountID == a.ID && vm.State.Bills() {
			burn += rate[vm.Tier]
		}
	}
	out := accountOut{ID: a.ID, Name: a.Name, Balance: a.Balance.String(), BalanceMicro: int64(a.Balance), BurnPerHour: burn.String(),
		BackupRetention: a.Entitlements.BackupRetention, VMLimit: a.Entitlements.VMLimit}
	if burn > 0 {
		out.RunwayHours = float64(a.Balance) / float64(burn)
		d := time.Duration(out.RunwayHours * float64(time.Hour)).Truncate(time.Minute)
		out.Runway = fmt.Sprintf("%s at %s credits an hour (%d d %d h); at zero the VMs are archived", d, burn, int(d.Hours())/24, int(d.Hours())%24)
	} else {
		out.Runway = "nothing bills now: no running or stopped VM"
	}
	return nil, out, nil
}

func (t *tools) getOperation(ctx context.Context, _ *mcp.CallToolRequest, in operationIn) (*mcp.CallToolResult, OperationView, error) {
	if in.WaitSeconds < 0 || in.WaitSeconds > MaxWait {
		return nil, OperationView{}, fmt.Errorf("%w: waitSeconds %d: wait 0 to %d seconds", model.ErrInvalid, in.WaitSeconds, MaxWait)
	}
	op, err := t.b.Operation(ctx, in.Operation)
	if err != nil {
		return nil, OperationView{}, err
	}
	if in.WaitSeconds > 0 {
		wctx, cancel := context.WithTimeout(ctx, time.Duration(in.WaitSeconds)*time.Second)
		defer cancel()
		for op.State == model.OpRunning && wctx.Err() == nil {
			next, err := t.b.WaitOperation(wctx, op.ID, op.Step)
			if err != nil {
				return nil, OperationView{}, err
			}
			op = next
		}
	}
	return nil, opView(op), nil
}

func (t *tools) listBackups(ctx context.Context, _ *mcp.CallToolRequest, in vmIn) (*mcp.CallToolResult, backupsOut, error) {
	bs, err := t.b.Backups(ctx, in.VM)
	if err != nil {
		return nil, backupsOut{}, err
	}
	slices.SortStableFunc(bs, func(a, b model.Backup) int { return b.TakenAt.Compare(a.TakenAt) })
	out := backupsOut{VM: in.VM, Backups: []BackupView{}}
	for _, b := range bs {
		out.Backups = append(out.Backups, backupView(b))
	}
	return nil, out, nil
}

func (t *tools) createVM(ctx context.Context, _ *mcp.CallToolRequest, in createVMIn) (*mcp.CallToolResult, OperationView, error) {
	if in.Tier == "" {
		return nil, OperationView{}, fmt.Errorf("%w: give a tier", model.ErrInvalid)
	}
	tiers, err := t.b.Tiers(ctx)
	if err != nil {
		return nil, OperationView{}, err
	}
	if !slices.ContainsFunc(tiers, func(tr model.Tier) bool { return tr.Name == in.Tier }) {
		names := make([]string, 0, len(tiers))
		for _, tr := range tiers {
			names = append(names, fmt.Sprintf("%s (%d vCPU, %d MiB, %d GiB, %s credits/h)", tr.Name, tr.VCPUs, tr.MemoryMiB, tr.DiskGiB, tr.RatePerHour))
		}
		return nil, OperationView{}, fmt.Errorf("%w: tier %q is unknown: use one of %s", model.ErrNotFound, clip(in.Tier), strings.Join(names, ", "))
	}
	a, err := t.account(ctx, in.Account)
	if err != nil {
		return nil, OperationView{}, err
	}
	req := api.CreateVMRequest{AccountID: a.ID, Tier: in.Tier, Image: in.Image, Name: in.Name}
	if err := req.Validate(); err != nil {
		return nil, OperationView{}, err
	}
	op, err := t.b.CreateVM(ctx, req)
	if err != nil {
		return nil, OperationView{}, err
	}
	return nil, opView(op), nil
}

func (t *tools) createBackup(ctx context.Context, _ *mcp.CallToolRequest, in vmIn) (*mcp.CallToolResult, OperationView, error) {
	op, err := t.b.CreateBackup(ctx, in.VM)
	if err != nil {
		return nil, OperationView{}, err
	}
	return nil, opView(op), nil
}

func (t *tools) vmVerb(_ string, verb func(Backend, context.Context, string) (model.Operation, error)) mcp.ToolHandlerFor[vmIn, OperationView] {
	return func(ctx context.Context, _ *mcp.CallToolRequest, in vmIn) (*mcp.CallToolResult, OperationView, error) {
		op, err := verb(t.b, ctx, in.VM)
		if err != nil {
			return nil, OperationView{}, err
		}
		return nil, opView(op), nil
	}
}

// twoPhase runs a destructive tool. With confirm, it redeems it for
// bound and acts. Without, it changes nothing and answers the preview with
// a confirmation for bound; unless the client can ask its user (it
// declared MCP elicitation when it initialized, as over stdio; the
// stateless HTTP endpoint never knows): then the answer is an input
// request (multi round-trip, SEP-2322; the SDK turns it into
// elicitation/create for older clients) showing the user the preview, and
// the client's retry carries the user's answer and, as its request state,
// a confirmation bound like the other (under another name, so neither
// stands for the other). Yes acts; no answers that nothing was done, with
// no confirmation to go around the user.
func (t *tools) twoPhase(ctx context.Context, req *mcp.CallToolRequest, tool, confirm string, bound any,
	preview func() (Preview, error), act func() (model.Operation, error)) (*mcp.CallToolResult, destructiveOut, error) {
	if confirm != "" {
		if err := t.conf.Redeem(confirm, t.caller, tool, bound); err != nil {
			return nil, destructiveOut{}, err
		}
		return t.act(act)
	}
	if req != nil && req.Params != nil && req.Params.RequestState != "" {
		if err := t.conf.Redeem(req.Params.RequestState, t.caller, tool+elicited, bound); err != nil {
			return nil, destructiveOut{}, err
		}
		if r, ok := req.Params.InputResponses[elicitID].(*mcp.ElicitResult); ok && r.Action == "accept" && r.Content["confirm"] == true {
			return t.act(act)
		}
		p, err := preview()
		if err != nil {
			return nil, destructiveOut{}, err
		}
		return nil, destructiveOut{Declined: true, Preview: &p}, nil
	}
	p, err := preview()
	if err != nil {
		return nil, destructiveOut{}, err
	}
	if canElicit(req) {
		tok, _ := t.conf.Issue(t.caller, tool+elicited, bound)
		return &mcp.CallToolResult{RequestState: tok, InputRequests: mcp.InputRequestMap{elicitID: &mcp.ElicitParams{
			Message: p.Action + "\n\nLost: " + p.Lost + "\n\nUndo: " + p.Undo,
			RequestedSchema: map[string]any{
				"type": "object",
				"properties": map[string]any{
					"confirm": map[string]any{"type": "boolean", "title": "Go ahead", "description": "yes: do it now; no: nothing is done"},
				},
				"required": []string{"confirm"},
			},
		}}}, destructiveOut{}, nil
	}
	tok, exp := t.conf.Issue(t.caller, tool, bound)
	p.Confirm, p.ExpiresAt = tok, ts(exp)
	return nil, destructiveOut{Preview: &p}, nil
}

// The elicitation's input request id, and what its confirmations are
// bound to besides the tool.
const (
	elicitID = "confirm"
	elicited = "#elicitation"
)

// canElicit reports whether the client said it can ask its user.
func canElicit(req *mcp.CallToolRequest) bool {
	if req == nil || req.Session == nil {
		return false
	}
	ip := req.Session.InitializeParams()
	return ip != nil && ip.Capabilities != nil && ip.Capabilities.Elicitation != nil
}

func (t *tools) act(act func() (model.Operation, error)) (*mcp.CallToolResult, destructiveOut, error) {
	op, err := act()
	if err != nil {
		return nil, destructiveOut{}, err
	}
	ov := opView(op)
	return nil, destructiveOut{Done: true, Operation: &ov}, nil
}

func (t *tools) restore(ctx context.Context, req *mcp.CallToolRequest, in restoreIn) (*mcp.CallToolResult, destructiveOut, error) {
	var zero destructiveOut
	if in.Backup == "" {
		return nil, zero, fmt.Errorf("%w: say which backup: a backup id, latest, yesterday or a date YYYY-MM-DD", model.ErrInvalid)
	}
	vm, err := t.b.VM(ctx, in.VM)
	if err != nil {
		return nil, zero, err
	}
	b, err := t.b.ResolveBackup(ctx, vm.ID, in.Backup, in.TimeZone)
	if err != nil {
		return nil, zero, err
	}
	// Bound: the arguments as given and what they mean now.
	bound := struct{ VM, Backup, TimeZone, Resolved string }{vm.ID, in.Backup, in.TimeZone, b.ID}
	return t.twoPhase(ctx, req, ToolRestore, in.Confirm, bound, func() (Preview, error) {
		bv, vv := backupView(b), vmView(vm)
		reboot := ""
		if vm.State == model.StateRunning {
			reboot = " It is running: it is stopped and booted again on the restored disk."
		}
		return Preview{
			Action: fmt.Sprintf("Rewind the disk of %s (%s) to backup %s, a %s backup taken at %s (%s).%s Same VM: same id, IP, ports and domains.",
				vm.ID, vm.Name, b.ID, b.Kind, ts(b.TakenAt), b.Consistency, reboot),
			Lost: fmt.Sprintf("Anything written to %s's disk since %s is lost.", vm.ID, ts(b.TakenAt)),
			Undo: fmt.Sprintf("A restore cannot be undone by itself. To keep the current disk, call create_backup on %s first (and wait for it with get_operation): you can restore that on-demand backup later. The backups, %s included, are kept.", vm.ID, b.ID),
			VM:   &vv, Backup: &bv,
		}, nil
	}, func() (model.Operation, error) { return t.b.RestoreVM(ctx, vm.ID, b.ID) })
}

func (t *tools) deleteBackup(ctx context.Context, req *mcp.CallToolRequest, in deleteBackupIn) (*mcp.CallToolResult, destructiveOut, error) {
	var zero destructiveOut
	b, err := t.b.Backup(ctx, in.Backup)
	if err != nil {
		return nil, zero, err
	}
	if b.Kind == model.Scheduled {
		return nil, zero, fmt.Errorf("%w: %s is a scheduled backup: it cannot be deleted; retention rolls scheduled backups off (see get_account's backupRetention)", model.ErrConflict, b.ID)
	}
	bound := struct{ Backup string }{b.ID}
	return t.twoPhase(ctx, req, ToolDeleteBackup, in.Confirm, bound, func() (Preview, error) {
		bv := backupView(b)
		return Preview{
			Action: fmt.Sprintf("Delete on-demand backup %s of %s, taken at %s.", b.ID, b.VMID, ts(b.TakenAt)),
			Lost:   fmt.Sprintf("The backup itself: %s's disk as it was at %s can no longer be restored (%d bytes freed).", b.VMID, ts(b.TakenAt), b.SizeBytes),
			Undo:   "Nothing: a deleted backup is gone for good. The VM and its other backups are not touched.",
			Backup: &bv,
		}, nil
	}, func() (model.Operation, error) { return t.b.DeleteBackup(ctx, b.ID) })
}

func (t *tools) destroy(ctx context.Context, req *mcp.CallToolRequest, in destroyIn) (*mcp.CallToolResult, destructiveOut, error) {
	var zero destructiveOut
	vm, err := t.b.VM(ctx, in.VM)
	if err != nil {
		return nil, zero, err
	}
	bound := struct{ VM string }{vm.ID}
	return t.twoPhase(ctx, req, ToolDestroyVM, in.Confirm, bound, func() (Preview, error) {
		now, err := t.b.Now(ctx)
		if err != nil {
			return Preview{}, err
		}
		bs, err := t.b.Backups(ctx, vm.ID)
		if err != nil {
			return Preview{}, err
		}
		vv := vmView(vm)
		p := Preview{Action: fmt.Sprintf("Destroy %s (%s, %s, created %s).", vm.ID, vm.Name, vm.State, ts(vm.CreatedAt)), VM: &vv}
		if age := now.Sub(vm.CreatedAt); age >= appliance.GraveyardAge {
			p.Lost = fmt.Sprintf("Right away: its IP address and memory, and it stops running and billing. After 24 h, at about %s: everything, its disk and its %d backups, for good.",
				ts(now.Add(appliance.RecoveryWindow)), len(bs))
			p.Undo = fmt.Sprintf("It goes to the graveyard: resume_vm %s brings it back, disk and backups intact, until about %s (the balance must cover an hour of its rate).",
				vm.ID, ts(now.Add(appliance.RecoveryWindow)))
		} else {
			p.Lost = fmt.Sprintf("Everything, at once and for good: %s is younger than an hour (created %s ago), so it skips the graveyard; its disk and its %d backups are reclaimed.",
				vm.ID, age.Truncate(time.Second), len(bs))
			p.Undo = "Nothing: no graveyard, no resume_vm. If anything on it is still needed, stop here."
		}
		return p, nil
	}, func() (model.Operation, error) { return t.b.DestroyVM(ctx, vm.ID) })
}

// clip shortens what a caller sent, for an error message.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// IsConfirmation reports whether err is a refused confirmation.
func IsConfirmation(err error) bool { return errors.Is(err, ErrConfirmation) }
