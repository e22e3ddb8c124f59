package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/ext4"
	"github.com/superjolt/superjolt/guest"
)

// Limits on a VM's attributes and on exec.
const (
	MaxPorts       = 64
	MaxDomains     = 32
	MaxExecTimeout = 10 * time.Minute
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
}

// VMFilter selects VMs; zero fields select all.
type VMFilter struct {
	AccountID string        `json:"account_id,omitempty"`
	State     model.VMState `json:"state,omitempty"`
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
// to do instead.
func stateError(vm model.VM, verb string) error {
	switch vm.State {
	case model.StateGraveyard:
		return conflictf("%s is in the graveyard (destroyed) until %s; resume it with `superjolt vm resume %s` before you %s it",
			vm.ID, vm.ReclaimAt.UTC().Format(time.RFC3339), vm.ID, verb)
	case model.StateArchived:
		return conflictf("%s is archived because its account ran out of credits; top up with `superjolt account topup %s CREDITS`, then `superjolt vm resume %s`",
			vm.ID, vm.AccountID, vm.ID)
	case model.StateCreating:
		return conflictf("%s is still being created; wait until it is running, then %s it", vm.ID, verb)
	case model.StateStopped:
		return conflictf("%s is stopped; start it with `superjolt vm start %s` first", vm.ID, vm.ID)
	default:
		return conflictf("%s is %s: cannot %s it now", vm.ID, vm.State, verb)
	}
}

// CreateVM makes a VM for an account: a writable snapshot of the image,
// grown to the tier's disk size (see ext4.Grow), an address from the
// subnet, a boot. It returns once the guest agent has reported a boot id.
// On failure nothing is left behind.
func (a *Appliance) CreateVM(ctx context.Context, req CreateVMRequest) (model.VM, error) {
	if err := model.ValidateID(model.KindAccount, req.AccountID); err != nil {
		return model.VM{}, err
	}
	if err := model.ValidateTierName(req.Tier); err != nil {
		return model.VM{}, err
	}
	if req.Image == "" {
		req.Image = a.image
	}
	if err := model.ValidateImageName(req.Image); err != nil {
		return model.VM{}, err
	}
	if req.Name != "" {
		if err := model.ValidateVMName(req.Name); err != nil {
			return model.VM{}, err
		}
	}
	var vm model.VM
	var tier model.Tier
	var opID string
	now := a.clock.Now()
	err := a.update(ctx, func(tx *store.Tx) error {
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
		if tier, err = tx.Tier(req.Tier); err != nil {
			return notFoundIs(err, "tier %s does not exist; `superjolt tier list` shows the tiers", req.Tier)
		}
		if _, err := tx.Image(req.Image); err != nil {
			return notFoundIs(err, "image %s does not exist; `superjolt image list` shows the images", req.Image)
		}
		id, err := tx.NewID(model.KindVM)
		if err != nil {
			return err
		}
		if opID, err = tx.NewID(model.KindOperation); err != nil {
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
		vm = model.VM{ID: id, AccountID: acct.ID, Name: name, Tier: req.Tier, Image: req.Image,
			State: model.StateCreating, IP: ip, LastIP: ip, Ports: []model.Port{}, Domains: []string{},
			CreatedAt: now, WantRunning: true, BilledUntil: now, NextBackupAt: nextBackupAt(id, now)}
		if err := tx.PutVM(vm); err != nil {
			return err
		}
		raw := fmt.Appendf(nil, `{"steps":["recorded"],"ip":%q}`, ip.String())
		return tx.PutOperation(model.Operation{ID: opID, Kind: model.OpCreate, VMID: id, State: model.OpRunning,
			Step: "recorded", StartedAt: now, Intent: raw})
	})
	if err != nil {
		return model.VM{}, categorised(err, "create the VM")
	}
	if err := a.lock(vm.ID, opID); err != nil { // cannot be held: the id is new
		return model.VM{}, err
	}
	o := &op{a: a, rec: model.Operation{ID: opID, Kind: model.OpCreate, VMID: vm.ID, State: model.OpRunning, Step: "recorded", StartedAt: now},
		in: intent{Steps: []string{"recorded"}, IP: vm.IP.String()}, log: a.log.With("op", opID, "vm", vm.ID, "kind", "create")}
	o.log.Info("creating VM", "account", vm.AccountID, "tier", vm.Tier, "image", vm.Image, "ip", vm.IP)
	a.crash("create:recorded")

	fail := func(err error) (model.VM, error) {
		a.halt(ctx, vm.ID)
		a.undoCreate(ctx, vm.ID)
		_ = o.finish(ctx, err, func(tx *store.Tx) error {
			return a.dropCreatingVM(tx, vm.ID, err)
		})
		return model.VM{}, err
	}
	dir, err := a.pool.CreateVM(ctx, vm.ID, vm.Image)
	if err != nil {
		return fail(unavailablef("cannot make the disk of %s from image %s: %v", vm.ID, vm.Image, err))
	}
	if err := o.step(ctx, "subvolume", 30, nil); err != nil {
		return fail(err)
	}
	if tier.DiskGiB > 0 && tier.DiskGiB <= maxDiskGiB {
		start := time.Now()
		grown, err := ext4.Grow(ctx, filepath.Join(dir, RootfsFile), int64(tier.DiskGiB)<<30)
		if err != nil {
			return fail(unavailablef("cannot grow the disk of %s to the %d GiB of tier %s: %v", vm.ID, tier.DiskGiB, tier.Name, err))
		}
		o.log.Info("disk sized to the tier", "disk_gib", tier.DiskGiB, "grown", grown, "took", time.Since(start))
	}
	if err := o.step(ctx, "grown", 40, nil); err != nil {
		return fail(err)
	}
	bootID, err := a.boot(ctx, vm)
	if err != nil {
		return fail(err)
	}
	a.crash("create:booted")
	err = o.finish(ctx, nil, func(tx *store.Tx) error {
		cur, err := getVM(tx, vm.ID)
		if err != nil {
			return err
		}
		cur.State, cur.BootID = model.StateRunning, bootID
		vm = cur
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, a.clock.Now(), "vm.created", vm.ID, vm.AccountID, "%s (%s, tier %s, image %s) is running at %s", vm.ID, vm.Name, vm.Tier, vm.Image, vm.IP)
	})
	if err != nil {
		return model.VM{}, err
	}
	return vm, nil
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

// VMs lists VMs, oldest first.
func (a *Appliance) VMs(ctx context.Context, f VMFilter) ([]model.VM, error) {
	if f.AccountID != "" {
		if err := model.ValidateID(model.KindAccount, f.AccountID); err != nil {
			return nil, err
		}
	}
	if f.State != "" {
		if _, err := model.ParseVMState(string(f.State)); err != nil {
			return nil, err
		}
	}
	var out []model.VM
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		out, err = tx.VMs(store.VMFilter{AccountID: f.AccountID, State: f.State})
		return err
	})
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
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

// StopVM shuts a running VM down. It keeps its address, ports, domains and
// disk, and keeps billing.
func (a *Appliance) StopVM(ctx context.Context, id string) (model.VM, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return vm, err
	}
	if vm.State != model.StateRunning {
		if vm.State == model.StateStopped {
			return vm, conflictf("%s is already stopped; start it with `superjolt vm start %s`", id, id)
		}
		return vm, stateError(vm, "stop")
	}
	o, err := a.begin(ctx, model.OpStop, id, intent{}, nil)
	if err != nil {
		return vm, err
	}
	a.halt(ctx, id)
	err = o.finish(ctx, nil, func(tx *store.Tx) error {
		var err error
		vm, err = a.setStopped(tx, id, "vm.stopped", "%s stopped; it keeps its address and disk and keeps billing", id)
		return err
	})
	return vm, err
}

// setStopped books the VM's charges so far and marks it stopped, not
// wanted running.
func (a *Appliance) setStopped(tx *store.Tx, id, evType, format string, args ...any) (model.VM, error) {
	vm, err := getVM(tx, id)
	if err != nil {
		return vm, err
	}
	now := a.clock.Now()
	if _, err := a.chargeInTx(tx, &vm, now, false); err != nil {
		return vm, err
	}
	vm.State, vm.BootID, vm.WantRunning, vm.StoppedAt = model.StateStopped, "", false, now
	if err := tx.PutVM(vm); err != nil {
		return vm, err
	}
	return vm, event(tx, now, evType, id, vm.AccountID, format, args...)
}

// StartVM boots a stopped VM and returns once its agent answers.
func (a *Appliance) StartVM(ctx context.Context, id string) (model.VM, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return vm, err
	}
	if vm.State != model.StateStopped {
		if vm.State == model.StateRunning {
			return vm, conflictf("%s is already running", id)
		}
		return vm, stateError(vm, "start")
	}
	o, err := a.begin(ctx, model.OpStart, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if cur.State != model.StateStopped {
			return stateError(cur, "start")
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
		return tx.PutVM(cur)
	})
	if err != nil {
		return vm, err
	}
	bootID, err := a.boot(ctx, vm)
	if err != nil {
		_ = o.finish(ctx, err, func(tx *store.Tx) error {
			cur, err := getVM(tx, id)
			if err != nil {
				return err
			}
			cur.WantRunning = false
			return tx.PutVM(cur)
		})
		return vm, err
	}
	err = o.finish(ctx, nil, func(tx *store.Tx) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		now := a.clock.Now()
		if _, err := a.chargeInTx(tx, &cur, now, false); err != nil {
			return err
		}
		cur.State, cur.BootID, cur.WantRunning = model.StateRunning, bootID, true
		vm = cur
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, now, "vm.started", id, cur.AccountID, "%s started (boot %s)", id, bootID)
	})
	return vm, err
}

// DestroyVM destroys a running or stopped VM. A VM at least an hour old
// goes to the graveyard: its process and address are freed, its disk and
// backups kept until ReclaimAt (24 h), and ResumeVM brings it back. A
// younger one is reclaimed at once: nothing is left.
func (a *Appliance) DestroyVM(ctx context.Context, id string) (DestroyResult, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return DestroyResult{VM: vm}, err
	}
	switch vm.State {
	case model.StateRunning, model.StateStopped:
	case model.StateGraveyard:
		return DestroyResult{VM: vm}, conflictf("%s is already destroyed: it is in the graveyard until %s; `superjolt vm resume %s` brings it back",
			id, vm.ReclaimAt.UTC().Format(time.RFC3339), id)
	default:
		return DestroyResult{VM: vm}, stateError(vm, "destroy")
	}
	reclaim := a.since(vm.CreatedAt) < GraveyardAge
	o, err := a.begin(ctx, model.OpDestroy, id, intent{Reclaim: reclaim}, nil)
	if err != nil {
		return DestroyResult{VM: vm}, err
	}
	a.halt(ctx, id)
	if err := o.step(ctx, "stopped", 50, nil); err != nil {
		return DestroyResult{VM: vm}, o.finish(ctx, err, nil)
	}
	err = o.finish(ctx, nil, func(tx *store.Tx) error {
		var err error
		vm, err = a.toGraveyard(tx, id, reclaim)
		return err
	})
	if err != nil {
		return DestroyResult{VM: vm}, err
	}
	if !reclaim {
		return DestroyResult{VM: vm}, nil
	}
	if err := a.reclaim(ctx, id); err != nil {
		// The VM is in the graveyard with ReclaimAt now: the reaper finishes.
		return DestroyResult{VM: vm}, err
	}
	return DestroyResult{VM: vm, Reclaimed: true}, nil
}

// toGraveyard books the final charge of a VM, frees its address and puts
// it in the graveyard, until now + RecoveryWindow (or now, when it is to be
// reclaimed at once). WantRunning keeps the state a resume returns to.
func (a *Appliance) toGraveyard(tx *store.Tx, id string, reclaimNow bool) (model.VM, error) {
	vm, err := getVM(tx, id)
	if err != nil {
		return vm, err
	}
	if !vm.State.Live() {
		return vm, nil // already done (recovery)
	}
	now := a.clock.Now()
	if _, err := a.chargeInTx(tx, &vm, now, true); err != nil {
		return vm, err
	}
	if vm.IP.IsValid() {
		if err := releaseIP(tx, vm.IP, id); err != nil {
			return vm, err
		}
		vm.LastIP, vm.IP = vm.IP, netip.Addr{}
	}
	wasRunning := vm.State == model.StateRunning
	vm.State, vm.BootID, vm.DestroyedAt = model.StateGraveyard, "", now
	vm.WantRunning = wasRunning
	vm.ReclaimAt = now.Add(RecoveryWindow)
	msg := fmt.Sprintf("%s destroyed: in the graveyard until %s; `superjolt vm resume %s` brings it back", id, vm.ReclaimAt.UTC().Format(time.RFC3339), id)
	if reclaimNow {
		vm.ReclaimAt = now
		msg = fmt.Sprintf("%s destroyed within its first hour: reclaimed at once", id)
	}
	if err := tx.PutVM(vm); err != nil {
		return vm, err
	}
	return vm, event(tx, now, "vm.destroyed", id, vm.AccountID, "%s", msg)
}

// ResumeVM brings a VM back from the graveyard (to the state it was in:
// running or stopped) or from the archive (running, once the account's
// balance is positive). It gets its address back when still free, else a
// new one.
func (a *Appliance) ResumeVM(ctx context.Context, id string) (model.VM, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return vm, err
	}
	if vm.State != model.StateGraveyard && vm.State != model.StateArchived {
		return vm, conflictf("%s is %s, not in the graveyard or archived: nothing to resume", id, vm.State)
	}
	now := a.clock.Now()
	var wantRunning bool
	o, err := a.begin(ctx, model.OpResume, id, intent{}, func(tx *store.Tx, _ *model.Operation, _ *intent) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		if cur.State != model.StateGraveyard && cur.State != model.StateArchived {
			return conflictf("%s is %s, not in the graveyard or archived: nothing to resume", id, cur.State)
		}
		acct, err := getAccount(tx, cur.AccountID)
		if err != nil {
			return err
		}
		if acct.Balance <= 0 {
			return fundsf("account %s has a balance of %s credits; top up with `superjolt account topup %s CREDITS`, then resume %s",
				acct.ID, acct.Balance, acct.ID, id)
		}
		if err := checkVMLimit(tx, acct); err != nil {
			return err
		}
		ip, err := a.allocIP(tx, id, cur.LastIP)
		if err != nil {
			return err
		}
		wantRunning = cur.WantRunning || cur.State == model.StateArchived
		from := cur.State
		cur.State, cur.IP, cur.LastIP = model.StateStopped, ip, ip
		cur.ReclaimAt, cur.WantRunning, cur.BilledUntil = time.Time{}, wantRunning, now
		if cur.NextBackupAt.Before(now) {
			cur.NextBackupAt = nextBackupAt(id, now)
		}
		if !wantRunning {
			cur.StoppedAt = now
		}
		vm = cur
		if err := tx.PutVM(cur); err != nil {
			return err
		}
		return event(tx, now, "vm.resumed", id, cur.AccountID, "%s resumed from %s at %s", id, from, ip)
	})
	if err != nil {
		return vm, err
	}
	if !wantRunning {
		return vm, o.finish(ctx, nil, nil)
	}
	bootID, err := a.boot(ctx, vm)
	if err != nil {
		_ = o.finish(ctx, err, func(tx *store.Tx) error {
			_, err := a.setStopped(tx, id, "vm.boot_failed", "%s was resumed but did not boot; try `superjolt vm start %s`", id, id)
			return err
		})
		return vm, err
	}
	err = o.finish(ctx, nil, func(tx *store.Tx) error {
		cur, err := getVM(tx, id)
		if err != nil {
			return err
		}
		cur.State, cur.BootID = model.StateRunning, bootID
		vm = cur
		return tx.PutVM(cur)
	})
	return vm, err
}

// Exec runs a program in a running VM through its agent.
func (a *Appliance) Exec(ctx context.Context, id string, req guest.ExecRequest) (guest.ExecResult, error) {
	vm, err := a.readVM(ctx, id)
	if err != nil {
		return guest.ExecResult{}, err
	}
	if req.Path == "" {
		return guest.ExecResult{}, invalidf("no program to run: give a command, like `superjolt vm exec %s -- uname -a`", id)
	}
	if req.Timeout < 0 || req.Timeout > MaxExecTimeout {
		return guest.ExecResult{}, invalidf("exec timeout %s is out of range: 0 (the default) to %s", req.Timeout, MaxExecTimeout)
	}
	if vm.State != model.StateRunning {
		return guest.ExecResult{}, stateError(vm, "exec in")
	}
	ag := a.agent(id)
	if ag == nil {
		return guest.ExecResult{}, unavailablef("%s has no running process right now (it may be restarting); try again in a moment", id)
	}
	res, err := ag.Exec(ctx, req)
	if err != nil {
		var ae *guest.AgentError
		if errors.As(err, &ae) {
			return res, invalidf("the agent of %s could not run %s: %v", id, req.Path, err)
		}
		return res, unavailablef("the agent of %s did not answer: %v; try again", id, err)
	}
	return res, nil
}

// agent returns the agent client of a running VM, or nil.
func (a *Appliance) agent(id string) Agent {
	a.mu.Lock()
	defer a.mu.Unlock()
	if mc := a.machines[id]; mc != nil {
		return mc.m.Agent()
	}
	return nil
}

// AddPort opens a port of the VM (an attribute of the VM, kept across stop,
// start and restore, freed on reclaim).
func (a *Appliance) AddPort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := model.ValidatePort(p); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "add a port to", func(tx *store.Tx, vm *model.VM) (string, error) {
		if slices.Contains(vm.Ports, p) {
			return "", conflictf("%s already has port %s", id, p)
		}
		if len(vm.Ports) >= MaxPorts {
			return "", conflictf("%s already has %d ports, the most allowed; remove one first", id, MaxPorts)
		}
		vm.Ports = append(vm.Ports, p)
		slices.SortFunc(vm.Ports, func(x, y model.Port) int {
			if x.Number != y.Number {
				return int(x.Number) - int(y.Number)
			}
			return cmpString(x.Proto, y.Proto)
		})
		return fmt.Sprintf("port %s opened on %s", p, id), nil
	})
}

// RemovePort closes a port of the VM.
func (a *Appliance) RemovePort(ctx context.Context, id string, p model.Port) (model.VM, error) {
	if err := model.ValidatePort(p); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "remove a port from", func(tx *store.Tx, vm *model.VM) (string, error) {
		i := slices.Index(vm.Ports, p)
		if i < 0 {
			return "", notFoundf("%s has no port %s; `superjolt vm show %s` lists its ports", id, p, id)
		}
		vm.Ports = slices.Delete(vm.Ports, i, i+1)
		return fmt.Sprintf("port %s closed on %s", p, id), nil
	})
}

// AddDomain attaches a DNS name to the VM. A domain belongs to one VM at most.
func (a *Appliance) AddDomain(ctx context.Context, id, domain string) (model.VM, error) {
	if err := model.ValidateDomain(domain); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "add a domain to", func(tx *store.Tx, vm *model.VM) (string, error) {
		if slices.Contains(vm.Domains, domain) {
			return "", conflictf("%s already has domain %s", id, domain)
		}
		if len(vm.Domains) >= MaxDomains {
			return "", conflictf("%s already has %d domains, the most allowed; remove one first", id, MaxDomains)
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
		return fmt.Sprintf("domain %s attached to %s", domain, id), nil
	})
}

// RemoveDomain detaches a DNS name from the VM.
func (a *Appliance) RemoveDomain(ctx context.Context, id, domain string) (model.VM, error) {
	if err := model.ValidateDomain(domain); err != nil {
		return model.VM{}, err
	}
	return a.editVM(ctx, id, "remove a domain from", func(tx *store.Tx, vm *model.VM) (string, error) {
		i := slices.Index(vm.Domains, domain)
		if i < 0 {
			return "", notFoundf("%s has no domain %s; `superjolt vm show %s` lists its domains", id, domain, id)
		}
		vm.Domains = slices.Delete(vm.Domains, i, i+1)
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

// boot launches the VM's process under the appliance's life and starts its
// supervisor. It returns the new boot id.
func (a *Appliance) boot(ctx context.Context, vm model.VM) (string, error) {
	var tier model.Tier
	if err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		tier, err = tx.Tier(vm.Tier)
		return err
	}); err != nil {
		return "", categorised(notFoundIs(err, "tier %s of %s no longer exists", vm.Tier, vm.ID), "read the tier")
	}
	dir, err := a.pool.VMPath(vm.ID)
	if err != nil {
		return "", categorised(err, "find the disk")
	}
	spec := MachineSpec{ID: vm.ID, VCPUs: tier.VCPUs, MemoryMiB: tier.MemoryMiB,
		Kernel: filepath.Join(dir, KernelFile), Initrd: filepath.Join(dir, InitrdFile), Rootfs: filepath.Join(dir, RootfsFile),
		RunDir: a.vmRunDir(vm.ID)}
	bctx, cancel := context.WithTimeout(ctx, a.bootMax)
	defer cancel()
	m, err := a.hv.Launch(a.life, bctx, spec)
	if err != nil {
		return "", unavailablef("%s did not boot: %v; its console log is in %s", vm.ID, err, spec.RunDir)
	}
	mc := &machine{m: m, bootID: m.BootID(), done: make(chan struct{})}
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		_ = m.Kill()
		return "", unavailablef("the appliance is shutting down; %s was not started", vm.ID)
	}
	a.machines[vm.ID] = mc
	a.wg.Add(1)
	a.mu.Unlock()
	go a.supervise(vm.ID, mc)
	a.log.Info("VM booted", "vm", vm.ID, "boot_id", mc.bootID)
	return mc.bootID, nil
}

// halt stops the VM's process, if it has one, and waits until it is gone.
func (a *Appliance) halt(ctx context.Context, id string) {
	a.mu.Lock()
	mc := a.machines[id]
	delete(a.machines, id)
	a.mu.Unlock()
	if mc == nil {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	if err := mc.m.Shutdown(sctx); err != nil {
		a.log.Warn("VM did not shut down; killing it", "vm", id, "err", err)
		_ = mc.m.Kill()
	}
	<-mc.done
}

// supervise waits for a VM's process to exit. An exit nobody asked for
// (the guest powered itself off, QEMU crashed) marks the VM stopped.
func (a *Appliance) supervise(id string, mc *machine) {
	defer a.wg.Done()
	err := mc.m.Wait(a.life)
	if a.life.Err() != nil {
		_ = mc.m.Kill()
	}
	a.mu.Lock()
	expected := a.machines[id] != mc || a.closing
	if !expected {
		delete(a.machines, id)
	}
	a.mu.Unlock()
	close(mc.done)
	if expected {
		return
	}
	a.log.Warn("VM process exited on its own", "vm", id, "err", err)
	uerr := a.update(a.life, func(tx *store.Tx) error {
		vm, err := getVM(tx, id)
		if err != nil || vm.State != model.StateRunning || vm.BootID != mc.bootID {
			return err
		}
		_, err = a.setStopped(tx, id, "vm.exited", "%s exited on its own (the guest powered off or its process died); start it with `superjolt vm start %s`", id, id)
		return err
	})
	if uerr != nil && !errors.Is(uerr, model.ErrNotFound) {
		a.log.Warn("cannot record that a VM exited", "vm", id, "err", uerr)
	}
}

// allocIP claims an address of the subnet for vmID: prefer when it is free,
// else the lowest free one. The network address, the first host (the
// gateway) and the broadcast address are never given.
func (a *Appliance) allocIP(tx *store.Tx, vmID string, prefer netip.Addr) (netip.Addr, error) {
	free := func(ip netip.Addr) (bool, error) {
		owner, err := tx.IPOwner(ip)
		if errors.Is(err, model.ErrNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		return owner == "" || owner == vmID, nil
	}
	gateway := a.subnet.Addr().Next()
	usable := func(ip netip.Addr) bool {
		return a.subnet.Contains(ip) && ip != a.subnet.Addr() && ip != gateway && a.subnet.Contains(ip.Next())
	}
	if prefer.IsValid() && usable(prefer) {
		ok, err := free(prefer)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return prefer, tx.ClaimIP(prefer, vmID)
		}
	}
	for ip := gateway.Next(); usable(ip); ip = ip.Next() {
		ok, err := free(ip)
		if err != nil {
			return netip.Addr{}, err
		}
		if ok {
			return ip, tx.ClaimIP(ip, vmID)
		}
	}
	return netip.Addr{}, conflictf("no free address left in %s; destroy a VM or give the daemon a larger subnet", a.subnet)
}

// releaseIP frees ip if vmID holds it.
func releaseIP(tx *store.Tx, ip netip.Addr, vmID string) error {
	owner, err := tx.IPOwner(ip)
	if errors.Is(err, model.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if owner != vmID {
		return nil
	}
	return tx.ReleaseIP(ip)
}
