package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/ext4"
	"github.com/superjolt/superjolt/guest"
)

// maxDiskGiB bounds a tier's disk size, well below what overflows an int64
// of bytes.
const maxDiskGiB = 1 << 20

// CreateVMRequest is what CreateVM needs.
type CreateVMRequest struct {
	AccountID string `json:"account_id"`
	Tier      string `json:"tier"`
	// Image defaults to the built-in image.
	Image string `json:"image,omitempty"`
	// Name defaults to the VM's id.
	Name string `json:"name,omitempty"`
	// Overcommit creates the VM even when its memory does not fit in what
	// the host has left (see capacity.go).
	Overcommit bool `json:"overcommit,omitempty"`
	// SSHKeys are OpenSSH public keys for root's authorized_keys, after
	// the account's default ones (see model.MaxSSHKeys).
	SSHKeys []string `json:"ssh_keys,omitempty"`
}

// VMFilter selects VMs; zero fields select all.
type VMFilter struct {
	AccountID string        `json:"account_id,omitempty"`
	State     model.VMState `json:"state,omitempty"`
	// NamePrefix keeps the VMs whose name starts with it.
	NamePrefix string `json:"name_prefix,omitempty"`
	// Image keeps the VMs made from the image of that name.
	Image string `json:"image,omitempty"`
}

// DestroyResult is what DestroyVM did.
type DestroyResult struct {
	VM model.VM `json:"vm"`
	// Reclaimed is true when the VM was younger than an hour and is gone
	// for good; otherwise it is in the graveyard until VM.ReclaimAt.
	Reclaimed bool `json:"reclaimed"`
}

// getVM reads a VM, with a helpful not-found error.
func getVM(tx *store.Tx, id string) (model.VM, error) {
	vm, err := tx.VM(id)
	return vm, notFoundIs(err, "VM %s does not exist (a reclaimed VM is gone for good); `superjolt vm list` shows the VMs", id)
}

// stateError says why a VM in its state cannot do what was asked, and what
// to do instead. doIt is what was asked, with its object: "back it up",
// "add a port to it".
func stateError(vm model.VM, doIt string) error {
	switch vm.State {
	case model.StateGraveyard:
		return conflictf("%s is in the graveyard (destroyed) until %s; resume it with `superjolt vm resume %s` before you %s",
			vm.ID, vm.ReclaimAt.UTC().Format(time.RFC3339), vm.ID, doIt)
	case model.StateArchived:
		return conflictf("%s is archived because its account ran out of credits; top up with `superjolt account topup %s CREDITS`, then `superjolt vm resume %s`",
			vm.ID, vm.AccountID, vm.ID)
	case model.StateCreating:
		return conflictf("%s is still being created; wait until it is running, then %s", vm.ID, doIt)
	case model.StateStopped:
		return conflictf("%s is stopped; start it with `superjolt vm start %s` first", vm.ID, vm.ID)
	default:
		return conflictf("%s is %s: cannot %s now", vm.ID, vm.State, doIt)
	}
}

// CreateVM makes a VM for an account (see SubmitCreateVM) and returns it
// once its guest agent has reported a boot id. When ctx ends first, the
// creation goes on.
func (a *Appliance) CreateVM(ctx context.Context, req CreateVMRequest) (model.VM, error) {
	o, err := a.submitCreateVM(ctx, req)
	rec, err := await(ctx, o, err)
	if err != nil {
		return model.VM{}, err
	}
	return a.VM(ctx, rec.VMID)
}

// SubmitCreateVM checks req, records the new VM (creating, with its
// address) and its operation, and returns the operation; the daemon then
// makes its disk (a writable snapshot of the image, grown to the tier's
// disk size, see ext4.Grow) and boots it. On failure nothing is left
// behind.
func (a *Appliance) SubmitCreateVM(ctx context.Context, req CreateVMRequest) (model.Operation, error) {
	return accepted(a.submitCreateVM(ctx, req))
}

func (a *Appliance) submitCreateVM(ctx context.Context, req CreateVMRequest) (*op, error) {
	if err := model.ValidateID(model.KindAccount, req.AccountID); err != nil {
		return nil, err
	}
	if err := model.ValidateTierName(req.Tier); err != nil {
		return nil, err
	}
	if req.Image == "" {
		req.Image = a.image
	}
	if err := model.ValidateImageName(req.Image); err != nil {
		return nil, err
	}
	if req.Name != "" {
		if err := model.ValidateVMName(req.Name); err != nil {
			return nil, err
		}
		if model.ValidateID(model.KindVM, req.Name) == nil {
			return nil, invalidf("VM name %q looks like a VM id, which would make `superjolt vm show %s` ambiguous; give another name", req.Name, req.Name)
		}
	}
	keys, err := model.NormalizeSSHKeys(req.SSHKeys)
	if err != nil {
		return nil, err
	}
	var vm model.VM
	var tier model.Tier
	o, err := a.begin(ctx, model.OpCreate, "", intent{}, func(tx *store.Tx, rec *model.Operation, in *intent) error {
		acct, err := getAccount(tx, req.AccountID)
		if err != nil {
			return err
		}
		if acct.Balance <= 0 {
			return fundsf("account %s has a balance of %s credits; top up with `superjolt account topup %s CREDITS` first", acct.ID, acct.Balance, acct.ID)
		}
		if err := checkVMLimit(tx, acct); err != nil {
			return err
		}
		// The account's default keys first, then the ones given now.
		if keys, err = model.MergeSSHKeys(acct.SSHKeys, keys); err != nil {
			return err
		}
		if tier, err = tx.Tier(req.Tier); err != nil {
			return notFoundIs(err, "tier %s does not exist; `superjolt tier list` shows the tiers", req.Tier)
		}
		if _, err := tx.Image(req.Image); err != nil {
			return notFoundIs(err, "image %s does not exist; `superjolt image list` shows the images", req.Image)
		}
		if req.Name != "" {
			// A VM's name is what people type (`superjolt vm show web-1`)
			// and its guest's hostname: one per name in an account.
			mine, err := tx.VMs(store.VMFilter{AccountID: acct.ID})
			if err != nil {
				return err
			}
			for _, o := range mine {
				if o.Name == req.Name {
					return conflictf("account %s already has a VM named %s (%s); give this one another name", acct.ID, req.Name, o.ID)
				}
			}
		}
		id, err := tx.NewID(model.KindVM)
		if err != nil {
			return err
		}
		if err := a.reserveMemory(tx, id, acct.ID, tier, req.Overcommit); err != nil {
			return err
		}
		ip, err := a.allocIP(tx, id, netip.Addr{})
		if err != nil {
			return err
		}
		name := req.Name
		if name == "" {
			name = id
		}
		now := a.clock.Now()
		vm = model.VM{ID: id, AccountID: acct.ID, Name: name, Tier: req.Tier, Image: req.Image,
			State: model.StateCreating, IP: ip, LastIP: ip, Ports: []model.Port{}, Domains: []string{},
			CreatedAt: now, WantRunning: true, BilledUntil: now, NextBackupAt: nextBackupAt(id, now), SSHKeys: keys}
		rec.VMID, in.IP = id, ip.String()
		return tx.PutVM(vm)
	})
	if err != nil {
		return nil, err
	}
	o.log.Info("creating VM", "account", vm.AccountID, "tier", vm.Tier, "image", vm.Image, "ip", vm.IP, "ssh_keys", len(vm.SSHKeys))
	return a.launch(o, func(ctx context.Context) error { return a.runCreate(ctx, o, vm, tier) }), nil
}

// runCreate makes the disk of a VM recorded as creating and boots it.
func (a *Appliance) runCreate(ctx context.Context, o *op, vm model.VM, tier model.Tier) error {
	fail := func(err error) error {
		a.halt(ctx, vm.ID)
		a.undoCreate(ctx, vm.ID)
		return o.finish(err, func(tx *store.Tx) error {
			return a.dropCreatingVM(tx, vm.ID, err)
		})
	}
	dir, err := a.pool.CreateVM(ctx, vm.ID, vm.Image)
	if err != nil {
		return fail(a.noSpaceOr(ctx, err, "create a VM", unavailablef("cannot make the disk of %s from image %s: %v", vm.ID, vm.Image, err)))
	}
	if err := o.step("subvolume", 30, nil); err != nil {
		return fail(err)
	}
	if tier.DiskGiB > 0 && tier.DiskGiB <= maxDiskGiB {
		start := time.Now()
		grown, err := ext4.Grow(ctx, filepath.Join(dir, RootfsFile), int64(tier.DiskGiB)<<30)
		if err != nil {
			return fail(a.noSpaceOr(ctx, err, "create a VM (growing its disk)", unavailablef("cannot grow the disk of %s to the %d GiB of tier %s: %v", vm.ID, tier.DiskGiB, tier.Name, err)))
		}
		o.log.Info("disk sized to the tier", "disk_gib", tier.DiskGiB, "grown", grown, "took", time.Since(start))
	}
	// Only here, at create: a VM made again from a backup, restored or
	// resumed keeps what its disk holds. Part of the step "grown": the
	// disk is ready for its first boot.
	if len(vm.SSHKeys) > 0 {
		if err := ext4.AddAuthorizedKeys(ctx, filepath.Join(dir, RootfsFile), vm.SSHKeys); err != nil {
			return fail(a.noSpaceOr(ctx, err, "create a VM (writing its SSH keys)", invalidf("cannot put the SSH keys into the disk of %s (image %s): %v; create it without --ssh-key (and clear the account's default keys with `superjolt account set %s --no-ssh-keys`), or from an image with an ext4 root filesystem", vm.ID, vm.Image, err, vm.AccountID)))
		}
		o.log.Info("SSH keys written to root's authorized_keys", "keys", len(vm.SSHKeys))
	}
	if err := o.step("grown", 40, nil); err != nil {
		return fail(err)
	}
	bootID, err := a.boot(ctx, vm)
	if err != nil {
		return fail(err)
	}
	a.testPoint(ctx, "create:booted")
	return o.finish(nil, func(tx *store.Tx) error {
		cur, err := getVM(tx, vm.ID)
		if err != nil {
			return err
		}
		cur.State, cur.BootID = model.StateRunning, bootID
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.created", cur.ID, cur.AccountID, "%s (%s, tier %s, image %s) is running at %s", cur.ID, cur.Name, cur.Tier, cur.Image, cur.IP)
	})
}

// recoverCreate rolls back a create the daemon left unfinished: the disk,
// the row and the address go. A VM is wanted only once its create is done.
func (a *Appliance) recoverCreate(ctx context.Context, rec model.Operation) (recovery, error) {
	a.undoCreate(ctx, rec.VMID)
	return recovery{final: model.OpRolledBack, also: func(tx *store.Tx) error {
		return a.dropCreatingVM(tx, rec.VMID, errors.New("the daemon stopped during the creation"))
	}}, nil
}

// undoCreate removes the disk a failed or crashed create made.
func (a *Appliance) undoCreate(ctx context.Context, id string) {
	ctx = context.WithoutCancel(ctx)
	if err := a.pool.DeleteVM(ctx, id); err != nil && !isPoolNotFound(err) {
		a.log.Warn("cannot delete the disk of a VM whose creation failed", "vm", id, "err", err)
	}
	if err := a.pool.DeleteBackups(ctx, id); err != nil && !isPoolNotFound(err) {
		a.log.Warn("cannot delete the backups dir of a VM whose creation failed", "vm", id, "err", err)
	}
}

// dropCreatingVM deletes the row of a VM whose creation failed, and frees its address.
func (a *Appliance) dropCreatingVM(tx *store.Tx, id string, cause error) error {
	vm, err := tx.VM(id)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	// DeleteVM also frees the addresses (IP, LastIP) the VM still owns.
	if err := tx.DeleteVM(id); err != nil {
		return err
	}
	return event(tx, a.clock.Now(), "vm.create_failed", id, vm.AccountID, "creating %s failed and was undone: %v", id, cause)
}

func checkVMLimit(tx *store.Tx, acct model.Account) error {
	vms, err := tx.VMs(store.VMFilter{AccountID: acct.ID})
	if err != nil {
		return err
	}
	live := 0
	for _, v := range vms {
		if v.State.Live() {
			live++
		}
	}
	if live >= acct.Entitlements.VMLimit {
		return conflictf("account %s already has %d live VMs, its limit; destroy one first", acct.ID, live)
	}
	return nil
}

// VMs lists VMs, oldest first (then by id): the whole of VMRows' list,
// decoded.
func (a *Appliance) VMs(ctx context.Context, f VMFilter) ([]model.VM, error) {
	if err := validateVMFilter(f); err != nil {
		return nil, err
	}
	var out []model.VM
	err := a.view(ctx, func(tx *store.Tx) error {
		if f.AccountID != "" {
			// An account that does not exist is not an empty list.
			if _, err := getAccount(tx, f.AccountID); err != nil {
				return err
			}
		}
		var err error
		out, err = tx.VMs(store.VMFilter{AccountID: f.AccountID, State: f.State, NamePrefix: f.NamePrefix, Image: f.Image})
		return err
	})
	slices.SortFunc(out, func(x, y model.VM) int { return vmBefore(x.CreatedAt, x.ID, y.CreatedAt, y.ID) })
	return out, categorised(err, "list VMs")
}

// VM returns one VM.
func (a *Appliance) VM(ctx context.Context, id string) (model.VM, error) {
	if err := model.ValidateID(model.KindVM, id); err != nil {
		return model.VM{}, err
	}
	var vm model.VM
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		vm, err = getVM(tx, id)
		return err
	})
	return vm, categorised(err, "read the VM")
}

// readVM reads a VM for an operation after validating its id.
func (a *Appliance) readVM(ctx context.Context, id string) (model.VM, error) { return a.VM(ctx, id) }

// vmAfter waits for operation o (see await) and returns its VM as it is
// then.
func (a *Appliance) vmAfter(ctx context.Context, o *op, err error) (model.VM, error) {
	rec, err := await(ctx, o, err)
	if err != nil {
		return model.VM{}, err
	}
	return a.VM(ctx, rec.VMID)
}

// StopVM shuts a running VM down (SubmitStopVM) and returns it stopped.
func (a *Appliance) StopVM(ctx context.Context, id string) (model.VM, error) {
	o, err := a.submitStopVM(ctx, id)
	return a.vmAfter(ctx, o, err)
}

// SubmitStopVM starts shutting a running VM down. It keeps its address,
// ports, domains and disk, and keeps billing.
func (a *Appliance) SubmitStopVM(ctx context.Context, id string) (model.Operation, error) {
	return accepted(a.submitStopVM(ctx, id))
}

func (a *Appliance) submitStopVM(ctx context.Context, id string) (*op, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return nil, err
	}
	if vm.State != model.StateRunning {
		if vm.State == model.StateStopped {
			return nil, conflictf("%s is already stopped; start it with `superjolt vm start %s`", id, id)
		}
		return nil, stateError(vm, "stop it")
	}
	o, err := a.begin(ctx, model.OpStop, id, intent{}, nil)
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error {
		a.halt(ctx, id)
		return o.finish(nil, func(tx *store.Tx) error {
			_, err := a.setStopped(tx, id, model.StopOperator, "vm.stopped", "%s stopped; it keeps its address and disk and keeps billing", id)
			return err
		})
	}), nil
}

// recoverStop finishes a stop: the VM's process died with the daemon.
func (a *Appliance) recoverStop(rec model.Operation) (recovery, error) {
	id := rec.VMID
	return recovery{final: model.OpDone, also: func(tx *store.Tx) error {
		vm, err := tx.VM(id)
		if err != nil || vm.State != model.StateRunning {
			return ignoreNotFound(err)
		}
		_, err = a.setStopped(tx, id, model.StopOperator, "vm.stopped", "%s stopped (finished after a restart)", id)
		return err
	}}, nil
}

// setStopped books the VM's charges so far and marks it stopped, not
// wanted running, for the reason given (shown by `vm show` and `vm list`).
func (a *Appliance) setStopped(tx *store.Tx, id string, why model.StopReason, evType, format string, args ...any) (model.VM, error) {
	vm, err := getVM(tx, id)
	if err != nil {
		return vm, err
	}
	now := a.clock.Now()
	if _, err := a.chargeInTx(tx, &vm, now, false); err != nil {
		return vm, err
	}
	vm.State, vm.BootID, vm.WantRunning, vm.StoppedAt, vm.StopReason = model.StateStopped, "", false, now, why
	if err := tx.PutVM(vm); err != nil {
		return vm, err
	}
	return vm, event(tx, now, evType, id, vm.AccountID, format, args...)
}

// StartVM boots a stopped VM (SubmitStartVM) and returns it once its agent
// answers.
func (a *Appliance) StartVM(ctx context.Context, id string) (model.VM, error) {
	o, err := a.submitStartVM(ctx, id)
	return a.vmAfter(ctx, o, err)
}

// SubmitStartVM starts booting a stopped VM.
func (a *Appliance) SubmitStartVM(ctx context.Context, id string) (model.Operation, error) {
	return accepted(a.submitStartVM(ctx, id))
}

func (a *Appliance) submitStartVM(ctx context.Context, id string) (*op, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return nil, err
	}
	if vm.State != model.StateStopped {
		if vm.State == model.StateRunning {
			return nil, conflictf("%s is already running", id)
		}
		return nil, stateError(vm, "start it")
	}
	o, err := a.begin(ctx, model.OpStart, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if cur.State != model.StateStopped {
			return stateError(cur, "start it")
		}
		acct, err := getAccount(tx, cur.AccountID)
		if err != nil {
			return err
		}
		if acct.Balance <= 0 {
			return fundsf("account %s has a balance of %s credits; top up with `superjolt account topup %s CREDITS` first", acct.ID, acct.Balance, acct.ID)
		}
		// Wanted running from now on: a crash during the boot boots it at the next start.
		cur.WantRunning = true
		vm = cur
		return tx.PutVM(cur)
	})
	if err != nil {
		return nil, err
	}
	return a.launch(o, func(ctx context.Context) error {
		bootID, err := a.boot(ctx, vm)
		if err != nil {
			return o.finish(err, func(tx *store.Tx) error {
				cur, err := getVM(tx, id)
				if err != nil {
					return err
				}
				cur.WantRunning = false
				return tx.PutVM(cur)
			})
		}
		return o.finish(nil, func(tx *store.Tx) error {
			cur, err := getVM(tx, id)
			if err != nil {
				return err
			}
			now := a.clock.Now()
			if _, err := a.chargeInTx(tx, &cur, now, false); err != nil {
				return err
			}
			cur.State, cur.BootID, cur.WantRunning = model.StateRunning, bootID, true
			if err := tx.PutVM(cur); err != nil {
				return err
			}
			return event(tx, now, "vm.started", id, cur.AccountID, "%s started (boot %s)", id, bootID)
		})
	}), nil
}

// Exec runs a program in a running VM through its agent.
func (a *Appliance) Exec(ctx context.Context, id string, req guest.ExecRequest) (guest.ExecResult, error) {
	ag, err := a.execAgent(ctx, id, req)
	if err != nil {
		return guest.ExecResult{}, err
	}
	res, err := ag.Exec(ctx, req)
	return res, execError(id, req, err)
}

// execStreamer is an Agent that streams exec (guest.Client does).
type execStreamer interface {
	ExecStream(ctx context.Context, req guest.ExecRequest, eio guest.ExecIO) (guest.ExecResult, error)
}

var _ execStreamer = (*guest.Client)(nil)

// ExecStream runs a program in a running VM through its agent, passing its
// output to eio as it comes and eio.Stdin to it. When ctx ends (the caller
// went away, or pressed Ctrl-C) the program is interrupted, then killed;
// see guest.Client.ExecStream.
func (a *Appliance) ExecStream(ctx context.Context, id string, req guest.ExecRequest, eio guest.ExecIO) (guest.ExecResult, error) {
	ag, err := a.execAgent(ctx, id, req)
	if err != nil {
		return guest.ExecResult{}, err
	}
	es, ok := ag.(execStreamer)
	if !ok {
		return guest.ExecResult{}, unavailablef("the agent of %s cannot stream exec", id)
	}
	res, err := es.ExecStream(ctx, req, eio)
	if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return res, err
	}
	return res, execError(id, req, err)
}

// execAgent checks an exec request and returns the agent of the VM.
func (a *Appliance) execAgent(ctx context.Context, id string, req guest.ExecRequest) (Agent, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return nil, err
	}
	if req.Path == "" {
		return nil, invalidf("no program to run: give a command, like `superjolt vm exec %s -- uname -a`", id)
	}
	if req.Timeout < 0 || req.Timeout > model.MaxExecTimeout {
		return nil, invalidf("exec timeout %s is out of range: 0 (the %s default) to %s", req.Timeout, guest.DefaultExecTimeout, model.MaxExecTimeout)
	}
	if vm.State != model.StateRunning {
		return nil, stateError(vm, "exec in it")
	}
	ag := a.agent(id)
	if ag == nil {
		return nil, unavailablef("%s has no running process right now (it may be restarting); try again in a moment", id)
	}
	return ag, nil
}

// execError maps an agent's exec error to the appliance's categories.
func execError(id string, req guest.ExecRequest, err error) error {
	if err == nil {
		return nil
	}
	var ae *guest.AgentError
	if errors.As(err, &ae) {
		return invalidf("the agent of %s could not run %s: %v", id, req.Path, err)
	}
	return unavailablef("the agent of %s did not answer: %v; try again", id, err)
}

// AddPort forwards a host port to the VM: an attribute of the VM, kept
// across stop, start, restore and the graveyard, freed on reclaim. A host
// port (with its protocol) is held by one VM: a second claim is a conflict
// naming the holder. (The forward carries traffic once the networking of
// issue 10 lands; until then it is recorded only.)
func (a *Appliance) AddPort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := model.ValidatePort(p); err != nil {
		return model.VM{}, err
	}
	if p.GuestPort == p.Number {
		p.GuestPort = 0
	}
	return a.editVM(ctx, id, "add a port to it", func(tx *store.Tx, vm *model.VM) (string, error) {
		if i := slices.IndexFunc(vm.Ports, func(q model.Port) bool { return q.Host() == p.Host() }); i >= 0 {
			return "", conflictf("%s already forwards host port %s (as %s); remove it first to change it", id, p.Host(), vm.Ports[i])
		}
		if len(vm.Ports) >= model.MaxPorts {
			return "", conflictf("%s already has %d ports, the most allowed; remove one first", id, model.MaxPorts)
		}
		if slices.ContainsFunc(a.reserved, func(q model.Port) bool { return q.Host() == p.Host() }) {
			return "", conflictf("host port %s is superjoltd's own (its proxy for the VMs' domains listens there); pick another host port, or attach a domain instead", p.Host())
		}
		var holder model.VM
		if err := tx.ForEachVM(func(o model.VM) error {
			if o.ID != id && slices.ContainsFunc(o.Ports, func(q model.Port) bool { return q.Host() == p.Host() }) {
				holder = o
			}
			return nil
		}); err != nil {
			return "", err
		}
		if holder.ID != "" {
			return "", conflictf("host port %s is held by %s (%s, %s); a host port goes to one VM: remove it there first (`superjolt vm ports rm %s %s`) or pick another",
				p.Host(), holder.ID, holder.Name, holder.State, holder.ID, p.Host())
		}
		vm.Ports = append(vm.Ports, p)
		slices.SortFunc(vm.Ports, func(x, y model.Port) int {
			if x.Number != y.Number {
				return int(x.Number) - int(y.Number)
			}
			return cmpString(x.Proto, y.Proto)
		})
		return fmt.Sprintf("port %s forwarded to %s", p, id), nil
	})
}

// RemovePort stops forwarding a host port to the VM; p names it by its
// host port (a guest port in p, if any, must match).
func (a *Appliance) RemovePort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := model.ValidatePort(p); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "remove a port from it", func(tx *store.Tx, vm *model.VM) (string, error) {
		i := slices.IndexFunc(vm.Ports, func(q model.Port) bool { return q.Host() == p.Host() })
		if i < 0 || p.GuestPort != 0 && vm.Ports[i].Guest() != p.Guest() {
			return "", notFoundf("%s has no port %s; `superjolt vm show %s` lists its ports", id, p, id)
		}
		p = vm.Ports[i]
		vm.Ports = slices.Delete(vm.Ports, i, i+1)
		return fmt.Sprintf("port %s no longer forwarded to %s", p, id), nil
	})
}

// AddDomain attaches a DNS name to the VM, proxied to its port (0:
// model.DefaultDomainPort). A domain belongs to one VM at most.
func (a *Appliance) AddDomain(ctx context.Context, id, domain string, port uint16) (model.VM, error) {
	domain = model.NormalizeDomain(domain)
	if err := model.ValidateDomain(domain); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "add a domain to it", func(tx *store.Tx, vm *model.VM) (string, error) {
		if slices.Contains(vm.Domains, domain) {
			return "", conflictf("%s already has domain %s", id, domain)
		}
		if len(vm.Domains) >= model.MaxDomains {
			return "", conflictf("%s already has %d domains, the most allowed; remove one first", id, model.MaxDomains)
		}
		var holder string
		if err := tx.ForEachVM(func(o model.VM) error {
			if o.ID != id && slices.Contains(o.Domains, domain) {
				holder = o.ID
			}
			return nil
		}); err != nil {
			return "", err
		}
		if holder != "" {
			return "", conflictf("domain %s is attached to %s; remove it there first: `superjolt vm domains rm %s %s`", domain, holder, holder, domain)
		}
		vm.Domains = append(vm.Domains, domain)
		slices.Sort(vm.Domains)
		if port != 0 && port != model.DefaultDomainPort {
			if vm.DomainPorts == nil {
				vm.DomainPorts = map[string]uint16{}
			}
			vm.DomainPorts[domain] = port
		}
		return fmt.Sprintf("domain %s attached to %s (its port %d)", domain, id, vm.DomainPort(domain)), nil
	})
}

// RemoveDomain detaches a DNS name from the VM.
func (a *Appliance) RemoveDomain(ctx context.Context, id, domain string) (model.VM, error) {
	domain = model.NormalizeDomain(domain)
	if err := model.ValidateDomain(domain); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "remove a domain from it", func(tx *store.Tx, vm *model.VM) (string, error) {
		i := slices.Index(vm.Domains, domain)
		if i < 0 {
			return "", notFoundf("%s has no domain %s; `superjolt vm show %s` lists its domains", id, domain, id)
		}
		vm.Domains = slices.Delete(vm.Domains, i, i+1)
		delete(vm.DomainPorts, domain)
		return fmt.Sprintf("domain %s detached from %s", domain, id), nil
	})
}

// editVM changes a live VM's attributes in one transaction.
func (a *Appliance) editVM(ctx context.Context, id, verb string, fn func(tx *store.Tx, vm *model.VM) (string, error)) (model.VM, error) {
	if err := model.ValidateID(model.KindVM, id); err != nil {
		return model.VM{}, err
	}
	var vm model.VM
	err := a.update(ctx, func(tx *store.Tx) error {
		var err error
		if vm, err = getVM(tx, id); err != nil {
			return err
		}
		if vm.State != model.StateRunning && vm.State != model.StateStopped {
			return stateError(vm, verb)
		}
		msg, err := fn(tx, &vm)
		if err != nil {
			return err
		}
		if err := tx.PutVM(vm); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.updated", id, vm.AccountID, "%s", msg)
	})
	if err == nil {
		a.syncNetwork(ctx) // its forwards changed
	}
	return vm, categorised(err, "update the VM")
}

func cmpString(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
