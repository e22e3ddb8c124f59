package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// Steps returns the steps an operation of kind goes through, in order. A
// crash hook at "kind:step" fires after the step's effect happened and
// before the step is recorded in the operation's intent: the hardest point
// for recovery. A destroy within the VM's first hour goes on after "stopped"
// with "graveyard" and the steps of a reclaim.
func Steps(kind model.OpKind) []string {
	switch kind {
	case model.OpCreate:
		return []string{"recorded", "subvolume", "grown", "booted"}
	case model.OpBackup:
		return []string{"recorded", "frozen", "snapshot", "thawed", "saved", "pruned"}
	case model.OpRestore:
		return []string{"recorded", "stopped", "replaced", "booted"}
	case model.OpDestroy, model.OpArchive:
		return []string{"recorded", "stopped"}
	case model.OpReclaim:
		return []string{"recorded", "vm-deleted", "backups-deleted"}
	case model.OpDeleteBackup:
		return []string{"recorded", "row-deleted"}
	}
	return []string{"recorded"}
}

// intent is an operation's record of what it set out to do and what it did.
type intent struct {
	Steps []string `json:"steps"`
	// Backup: the kind and the consistency aimed for; Prune lists the
	// scheduled backups retention drops after it.
	BackupKind  model.BackupKind  `json:"backup_kind,omitempty"`
	Consistency model.Consistency `json:"consistency,omitempty"`
	Prune       []string          `json:"prune,omitempty"`
	// Restore: the boot id before, to know the new boot is new.
	OldBootID string `json:"old_boot_id,omitempty"`
	// Destroy: whether it reclaims at once (age < 1 h).
	Reclaim bool `json:"reclaim,omitempty"`
	// Create, resume: the address claimed.
	IP string `json:"ip,omitempty"`
}

func (in intent) did(step string) bool { return slices.Contains(in.Steps, step) }

// OperationTimeout bounds one operation, from its acceptance to its end. It
// is the daemon's deadline, not a caller's: an operation never follows the
// context of the request that asked for it.
const OperationTimeout = 15 * time.Minute

// op is an operation under way, holding its VM's lock. Once begun it
// belongs to the daemon: it runs on ctx (the appliance's life, with
// OperationTimeout) in its own goroutine (see launch), whatever happens to
// the caller, who may wait for done.
type op struct {
	a   *Appliance
	rec model.Operation
	in  intent
	log *slog.Logger
	// account is the VM's account as it was when the operation began
	// ("" when unknown), for its events: the VM may be gone by its end.
	account string

	ctx    context.Context
	cancel context.CancelFunc
	// accepted is the record as it was when the operation was accepted:
	// what Submit returns while rec goes on changing in the op's goroutine.
	accepted model.Operation
	// done is closed once the operation's end is recorded; rec is final then.
	done chan struct{}

	mu sync.Mutex
	// cancellable says whether the operation can still be cancelled
	// safely; cancelled is set by CancelOperation.
	cancellable bool
	cancelled   bool
	// frozen is how long the guest stayed frozen (backups), for logs and
	// benchmarks.
	frozen time.Duration
	// unrecorded are the steps reached and not yet written (see reach).
	unrecorded []stepDone
}

// lock takes the per-VM lock for operation opID; it fails with ErrConflict
// naming the operation that holds it.
func (a *Appliance) lock(vmID, opID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held, ok := a.locks[vmID]; ok {
		return conflictf("an operation (%s) is running on %s; wait for it: `superjolt op show %s --follow`", held, vmID, held)
	}
	a.locks[vmID] = opID
	return nil
}

func (a *Appliance) unlock(vmID, opID string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.locks[vmID] == opID {
		delete(a.locks, vmID)
	}
}

// begin records a running operation of kind on vmID, with in as its
// intent, in the same transaction as prepare (which may check and change
// state; nil for none), holding vmID's lock. With vmID "" (create), prepare
// makes the VM and sets rec.VMID; the new id needs no lock check. The step
// "recorded" is then done. The caller's ctx bounds only the wait for the
// store: once begin returns, the operation is the daemon's, and the caller
// must launch it.
func (a *Appliance) begin(ctx context.Context, kind model.OpKind, vmID string, in intent, prepare func(tx *store.Tx, o *model.Operation, in *intent) error) (*op, error) {
	// Counted before anything is recorded, under the lock Close takes to
	// stop new operations, so that Close waits for every one it let in.
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return nil, unavailablef("superjoltd is shutting down; try again once it is back")
	}
	a.opsWG.Add(1)
	a.mu.Unlock()
	begun := false
	defer func() {
		if !begun {
			a.opsWG.Done()
		}
	}()
	// A request that goes away while its operation is being recorded must
	// not leave half a record: from here on the caller's cancellation is
	// not followed.
	ctx = context.WithoutCancel(ctx)
	var opID string
	if err := a.update(ctx, func(tx *store.Tx) error {
		id, err := tx.NewID(model.KindOperation)
		opID = id
		return err
	}); err != nil {
		return nil, categorised(err, "record the operation")
	}
	if vmID != "" {
		if err := a.lock(vmID, opID); err != nil {
			return nil, err
		}
	}
	o := &op{a: a, in: in, done: make(chan struct{})}
	o.in.Steps = []string{"recorded"}
	base := o.in
	err := a.update(ctx, func(tx *store.Tx) error {
		o.rec = model.Operation{ID: opID, Kind: kind, VMID: vmID, State: model.OpRunning, Step: "recorded",
			StartedAt: a.clock.Now()}
		o.in = base
		if prepare != nil {
			if err := prepare(tx, &o.rec, &o.in); err != nil {
				return err
			}
		}
		raw, err := json.Marshal(o.in)
		if err != nil {
			return err
		}
		o.rec.Intent = raw
		if err := tx.PutOperation(o.rec); err != nil {
			return err
		}
		o.account = vmAccount(tx, o.rec.VMID)
		return event(tx, o.rec.StartedAt, "op.started", o.rec.ID, o.account, "%s of %s started", o.rec.Kind, o.rec.VMID)
	})
	if err != nil {
		if vmID != "" {
			a.unlock(vmID, opID)
		}
		return nil, categorised(err, "start the operation")
	}
	if vmID == "" {
		if err := a.lock(o.rec.VMID, opID); err != nil { // cannot be held: the id is new
			return nil, err
		}
	}
	begun = true
	a.started(o)
	return o, nil
}

// started makes o, whose record is written, a running operation: its log,
// its context, and its place among those CancelOperation finds.
func (a *Appliance) started(o *op) {
	o.log = a.log.With("op", o.rec.ID, "vm", o.rec.VMID, "kind", string(o.rec.Kind))
	o.ctx, o.cancel = context.WithTimeout(a.life, OperationTimeout)
	o.accepted = o.rec
	a.mu.Lock()
	a.running[o.rec.ID] = o
	a.mu.Unlock()
	o.log.Info("operation started")
	a.testPoint(o.ctx, string(o.rec.Kind)+":recorded")
}

// launch runs the rest of operation o, run, in its own goroutine on the
// operation's context, and returns at once. run ends the operation with
// o.finish; if it returns without doing so, the operation is finished here
// with run's error.
func (a *Appliance) launch(o *op, run func(ctx context.Context) error) *op {
	go func() {
		defer a.opsWG.Done()
		defer o.cancel()
		err := run(o.ctx)
		select {
		case <-o.done:
		default:
			if err == nil {
				err = fmt.Errorf("%s ended without recording its end", o.rec.ID)
			}
			_ = o.finish(err, nil)
		}
	}()
	return o
}

// accepted returns what Submit methods answer: the operation as it was
// when it was accepted.
func accepted(o *op, err error) (model.Operation, error) {
	if err != nil {
		return model.Operation{}, err
	}
	return o.accepted, nil
}

// await waits for operation o to end and returns its final record, and its
// error (model.Operation.Err). When ctx ends first, the operation goes on
// and await returns ctx's error.
func await(ctx context.Context, o *op, err error) (model.Operation, error) {
	if err != nil {
		return model.Operation{}, err
	}
	select {
	case <-o.done:
		return o.rec, o.rec.Err()
	case <-ctx.Done():
		return o.accepted, ctx.Err()
	}
}

// allowCancel marks the operation as one that can be cancelled safely
// until it calls pointOfNoReturn.
func (o *op) allowCancel() {
	o.mu.Lock()
	o.cancellable = true
	o.mu.Unlock()
}

// pointOfNoReturn ends the time when the operation can be cancelled: it
// returns errCancelled when it was cancelled before.
func (o *op) pointOfNoReturn() error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.cancellable = false
	if o.cancelled {
		return errCancelled
	}
	return nil
}

// errCancelled ends an operation as model.OpCancelled.
var errCancelled = errors.New("cancelled on request")

// step records that step is done (after giving the crash hook its chance),
// optionally with more changes in the same transaction, with an op.step
// event: a follower of the event stream sees each step as it is recorded.
func (o *op) step(step string, progress int, also func(tx *store.Tx) error) error {
	o.reach(step, progress)
	return o.record(also)
}

// reach notes that step is done, after giving the crash hook its chance,
// without writing it: record (or recordIn, in a transaction shared with
// other operations) writes every step reached since the last write. A crash
// between the two leaves the step unrecorded, which recovery must allow
// for, as it does for a crash at the hook.
func (o *op) reach(step string, progress int) {
	o.a.testPoint(o.ctx, string(o.rec.Kind)+":"+step)
	o.in.Steps = append(o.in.Steps, step)
	o.rec.Step, o.rec.Progress = step, progress
	o.unrecorded = append(o.unrecorded, stepDone{step, progress})
}

// stepDone is a step reached and not yet written.
type stepDone struct {
	name     string
	progress int
}

// record writes the steps reached since the last write, with more changes
// (also, nil for none) in the same transaction.
func (o *op) record(also func(tx *store.Tx) error) error {
	// Recorded even when the operation's deadline has passed: the store
	// must say what was done.
	err := o.a.update(context.WithoutCancel(o.ctx), func(tx *store.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		return o.recordIn(tx)
	})
	if err != nil {
		return categorised(err, "record step "+o.rec.Step)
	}
	o.recorded()
	return nil
}

// recordIn writes the operation's record in tx, with an op.step event per
// step reached since the last write; once tx is committed, call recorded.
func (o *op) recordIn(tx *store.Tx) error {
	raw, _ := json.Marshal(o.in)
	o.rec.Intent = raw
	if err := tx.PutOperation(o.rec); err != nil {
		return err
	}
	now := o.a.clock.Now()
	for _, s := range o.unrecorded {
		if err := event(tx, now, "op.step", o.rec.ID, o.account, "%s of %s: %s (%d%%)", o.rec.Kind, o.rec.VMID, s.name, s.progress); err != nil {
			return err
		}
	}
	return nil
}

// recorded notes that the steps reached are written.
func (o *op) recorded() {
	for _, s := range o.unrecorded {
		o.log.Debug("operation step done", "step", s.name)
	}
	o.unrecorded = nil
}

// finish ends the operation: done when err is nil, cancelled when err is
// errCancelled, failed otherwise, with final changes made in the same
// transaction (also may be nil). It releases the VM lock and wakes those
// who wait for the operation. It returns err, or the error of recording the
// end.
func (o *op) finish(err error, also func(tx *store.Tx) error) error {
	a := o.a
	defer o.release()
	err = o.end(err)
	// The network follows before the end is recorded: whoever waits for
	// the operation may act on the VM the moment it reads "done".
	o.leaveNetwork()
	uerr := a.update(context.WithoutCancel(o.ctx), func(tx *store.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		return o.endIn(tx)
	})
	return o.ended(err, uerr)
}

// end sets the operation's final state from err (see finish) and returns
// err as the operation reports it.
func (o *op) end(err error) error {
	o.rec.FinishedAt = o.a.clock.Now()
	o.rec.State = model.OpDone
	o.rec.Progress = 100
	switch {
	case errors.Is(err, errCancelled):
		o.rec.State, o.rec.Progress = model.OpCancelled, 0
	case err != nil:
		err = categorised(err, string(o.rec.Kind)+" of "+o.rec.VMID)
		o.rec.State = model.OpFailed
		o.rec.Error = err.Error()
		o.rec.ErrorCode = model.Code(err)
	}
	raw, _ := json.Marshal(o.in)
	o.rec.Intent = raw
	return err
}

// endIn writes the operation's end (set by end) in tx, with its event and
// the events of steps reached and not yet written.
func (o *op) endIn(tx *store.Tx) error {
	if err := o.recordIn(tx); err != nil {
		return err
	}
	msg := fmt.Sprintf("%s of %s: %s", o.rec.Kind, o.rec.VMID, o.rec.State)
	if o.rec.Error != "" {
		msg += ": " + o.rec.Error
	}
	return event(tx, o.rec.FinishedAt, "op."+string(o.rec.State), o.rec.ID, o.account, "%s", msg)
}

// ended logs the end of the operation, given err (from end) and uerr, the
// error of writing it; it returns what finish returns.
func (o *op) ended(err, uerr error) error {
	if uerr != nil {
		// The store did not take the end: the record still says running,
		// and the next start recovers it.
		o.rec.State, o.rec.Error, o.rec.ErrorCode = model.OpFailed, "cannot record the end: "+uerr.Error(), "internal"
		o.log.Error("cannot record the end of an operation; the next start recovers it", "err", uerr)
		return categorised(uerr, "record the end of "+o.rec.ID)
	}
	o.recorded()
	switch {
	case o.rec.State == model.OpCancelled:
		o.log.Info("operation cancelled")
		return err
	case err != nil:
		o.log.Warn("operation failed", "err", err)
		return err
	}
	o.log.Info("operation done", "took", o.rec.FinishedAt.Sub(o.rec.StartedAt))
	return nil
}

// release gives up the VM lock and wakes those who wait for the
// operation: its end is final.
func (o *op) release() {
	a := o.a
	a.unlock(o.rec.VMID, o.rec.ID)
	a.mu.Lock()
	delete(a.running, o.rec.ID)
	a.mu.Unlock()
	close(o.done)
}

// vmAccount returns the account of VM id as tx sees it, or "" when there is
// no such VM (yet or any more): for events, which name it when known.
func vmAccount(tx *store.Tx, id string) string {
	if id == "" {
		return ""
	}
	vm, err := tx.VM(id)
	if err != nil {
		return ""
	}
	return vm.AccountID
}

// leaveNetwork takes a VM that leaves the host with the operation
// (graveyard, archive, reclaim, a create undone) off the network: its TAP
// goes and the firewall is rebuilt without it. A VM that comes onto the
// host is put on it when it boots (see boot).
func (o *op) leaveNetwork() {
	leaves := false
	switch o.rec.Kind {
	case model.OpDestroy, model.OpArchive, model.OpReclaim:
		leaves = o.rec.State == model.OpDone
	case model.OpCreate:
		leaves = o.rec.State != model.OpDone // undone: the VM never was
	}
	if leaves && o.rec.VMID != "" {
		o.a.dropTAP(o.rec.VMID)
		o.a.syncNetwork(o.ctx, o.rec.VMID)
	}
}

// waitOps waits until no operation runs, or ctx ends.
func (a *Appliance) waitOps(ctx context.Context) error {
	done := make(chan struct{})
	go func() { a.opsWG.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Operation returns an operation by id.
func (a *Appliance) Operation(ctx context.Context, id string) (model.Operation, error) {
	if err := model.ValidateID(model.KindOperation, id); err != nil {
		return model.Operation{}, err
	}
	var o model.Operation
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		o, err = tx.Operation(id)
		return err
	})
	if err != nil {
		return o, categorised(notFoundIs(err, "operation %s does not exist; `superjolt op list` shows recent ones", id), "read the operation")
	}
	return o, nil
}

// OpFilter selects operations; zero fields select all.
type OpFilter struct {
	VMID    string `json:"vm_id,omitempty"`
	Running bool   `json:"running,omitempty"`
	// Limit caps how many are returned, newest first (0: model.MaxListLimit).
	Limit int `json:"limit,omitempty"`
}

// Operations lists operations, newest first.
func (a *Appliance) Operations(ctx context.Context, f OpFilter) ([]model.Operation, error) {
	if f.VMID != "" {
		if err := model.ValidateID(model.KindVM, f.VMID); err != nil {
			return nil, err
		}
	}
	if f.Limit < 0 || f.Limit > model.MaxListLimit {
		return nil, invalidf("cannot list %d operations: give a limit from 1 to %d", f.Limit, model.MaxListLimit)
	}
	limit := f.Limit
	if limit == 0 {
		limit = model.MaxListLimit
	}
	var out []model.Operation
	err := a.view(ctx, func(tx *store.Tx) error {
		var err error
		if f.Running {
			out, err = tx.UnfinishedOperations()
		} else {
			out, err = tx.Operations()
		}
		return err
	})
	if err != nil {
		return nil, categorised(err, "list operations")
	}
	if f.VMID != "" {
		out = slices.DeleteFunc(out, func(o model.Operation) bool { return o.VMID != f.VMID })
	}
	slices.SortFunc(out, func(x, y model.Operation) int {
		if c := y.StartedAt.Compare(x.StartedAt); c != 0 {
			return c
		}
		return strings.Compare(y.ID, x.ID)
	})
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// WaitOperation returns operation id once it differs from what the caller
// last saw, step (its Step while running), or has ended; or, when ctx ends
// first, as it is then (with no error: a follower asks again). A follower
// passes the Step of the last answer to see every step as it is recorded.
func (a *Appliance) WaitOperation(ctx context.Context, id, step string) (model.Operation, error) {
	for {
		// Take the wake channel before reading, so that a change between
		// the read and the wait is not missed.
		a.evMu.Lock()
		wake := a.evWake
		a.evMu.Unlock()
		o, err := a.Operation(context.WithoutCancel(ctx), id)
		if err != nil || o.State.Finished() || o.Step != step {
			return o, err
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return o, nil
		case <-a.life.Done():
			return o, unavailablef("superjoltd is shutting down; follow %s again once it is back: `superjolt op show %s --follow`", id, id)
		}
	}
}

// CancelOperation cancels a running operation where that is safe (a backup
// before its snapshot: nothing is left of it) and waits for it to end; it
// refuses, saying why, where it is not.
func (a *Appliance) CancelOperation(ctx context.Context, id string) (model.Operation, error) {
	rec, err := a.Operation(ctx, id)
	if err != nil {
		return rec, err
	}
	if rec.State.Finished() {
		return rec, conflictf("%s has already ended (%s); nothing to cancel", id, rec.State)
	}
	a.mu.Lock()
	o := a.running[id]
	a.mu.Unlock()
	if o == nil {
		return rec, conflictf("%s is being recovered after a restart; it cannot be cancelled, it ends by itself", id)
	}
	o.mu.Lock()
	ok := o.cancellable
	if ok {
		o.cancelled = true
	}
	o.mu.Unlock()
	if !ok {
		why := "stopping it half-way would leave its VM neither as it was nor as asked"
		if rec.Kind == model.OpBackup {
			why = "its snapshot is taken, so all that is left is to record it"
		}
		return rec, conflictf("%s (%s of %s) cannot be cancelled safely: %s; it ends by itself, follow it with `superjolt op show %s --follow`",
			id, rec.Kind, rec.VMID, why, id)
	}
	o.cancel()
	o.log.Info("operation cancel requested")
	final, err := await(ctx, o, nil)
	if errors.Is(err, model.ErrConflict) && final.State == model.OpCancelled {
		err = nil
	}
	return final, err
}

// notFoundIs rewrites a store ErrNotFound as a message with a hint.
func notFoundIs(err error, format string, args ...any) error {
	if errors.Is(err, model.ErrNotFound) {
		return notFoundf(format, args...)
	}
	return err
}

// stepsIn formats steps for logs.
func stepsIn(in intent) string { return strings.Join(in.Steps, ",") }

// since returns the time since t on the appliance clock.
func (a *Appliance) since(t time.Time) time.Duration { return a.clock.Now().Sub(t) }
