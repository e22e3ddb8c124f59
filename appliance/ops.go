package appliance

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
)

// CrashEnv names the environment variable that makes the process SIGKILL
// itself at one step of one kind of operation, for crash tests of the real
// daemon: SUPERJOLT_TEST_CRASH_AT=backup:snapshot kills it right after the
// snapshot of a backup is taken and before that is recorded. The steps are
// the Step values operations go through (see the *Steps constants).
const CrashEnv = "SUPERJOLT_TEST_CRASH_AT"

// Steps of each operation kind, in order. A crash hook at "kind:step"
// fires after the step's effect happened and before the step is recorded
// in the operation's intent: the hardest point for recovery.
var (
	CreateSteps  = []string{"recorded", "subvolume", "grown", "booted"}
	BackupSteps  = []string{"recorded", "frozen", "snapshot", "thawed", "saved", "pruned"}
	RestoreSteps = []string{"recorded", "stopped", "replaced", "booted"}
	DestroySteps = []string{"recorded", "stopped"}
	ReclaimSteps = []string{"recorded", "vm-deleted", "backups-deleted"}
	ArchiveSteps = []string{"recorded", "stopped"}
)

func envCrashHook() func(string) {
	at := os.Getenv(CrashEnv)
	if at == "" {
		return nil
	}
	return func(step string) {
		if step == at {
			slog.Default().Warn("test crash point reached: killing the process", "step", step)
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // never returns
		}
	}
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

// op is an operation under way, holding its VM's lock.
type op struct {
	a   *Appliance
	rec model.Operation
	in  intent
	log *slog.Logger
}

// lock takes the per-VM lock for operation opID; it fails with ErrConflict
// naming the operation that holds it.
func (a *Appliance) lock(vmID, opID string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if held, ok := a.locks[vmID]; ok {
		if model.KindOf(held) != model.KindOperation {
			return conflictf("%s is busy (%s); try again in a moment", vmID, held)
		}
		return conflictf("an operation (%s) is running on %s; wait for it: `superjolt op show %s`", held, vmID, held)
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

// begin takes vmID's lock and records a running operation of kind, with in
// as its intent, in the same transaction as prepare (which may check and
// change state; nil for none). The step "recorded" is then done.
func (a *Appliance) begin(ctx context.Context, kind model.OpKind, vmID string, in intent, prepare func(tx *store.Tx, o *model.Operation, in *intent) error) (*op, error) {
	var opID string
	if err := a.update(ctx, func(tx *store.Tx) error {
		id, err := tx.NewID(model.KindOperation)
		opID = id
		return err
	}); err != nil {
		return nil, categorised(err, "record the operation")
	}
	if err := a.lock(vmID, opID); err != nil {
		return nil, err
	}
	o := &op{a: a, in: in, log: a.log.With("op", opID, "vm", vmID, "kind", string(kind))}
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
		return tx.PutOperation(o.rec)
	})
	if err != nil {
		a.unlock(vmID, opID)
		return nil, categorised(err, "start the operation")
	}
	o.log.Info("operation started")
	a.crash(string(kind) + ":recorded")
	return o, nil
}

// crash calls the crash hook, if any, for "kind:step".
func (a *Appliance) crash(step string) {
	if a.crashAt != nil {
		a.crashAt(step)
	}
}

// step records that step is done (after giving the crash hook its chance),
// optionally with more changes in the same transaction.
func (o *op) step(ctx context.Context, step string, progress int, also func(tx *store.Tx) error) error {
	o.a.crash(string(o.rec.Kind) + ":" + step)
	o.in.Steps = append(o.in.Steps, step)
	raw, _ := json.Marshal(o.in)
	o.rec.Intent, o.rec.Step, o.rec.Progress = raw, step, progress
	err := o.a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		return tx.PutOperation(o.rec)
	})
	if err != nil {
		return categorised(err, "record step "+step)
	}
	o.log.Debug("operation step done", "step", step)
	return nil
}

// finish ends the operation: done when err is nil, failed otherwise, with
// final changes made in the same transaction (also may be nil). It
// releases the VM lock.
func (o *op) finish(ctx context.Context, err error, also func(tx *store.Tx) error) error {
	defer o.a.unlock(o.rec.VMID, o.rec.ID)
	o.rec.FinishedAt = o.a.clock.Now()
	o.rec.State = model.OpDone
	o.rec.Progress = 100
	if err != nil {
		o.rec.State = model.OpFailed
		o.rec.Error = err.Error()
		o.rec.ErrorCode = model.Code(err)
	}
	raw, _ := json.Marshal(o.in)
	o.rec.Intent = raw
	uerr := o.a.update(context.WithoutCancel(ctx), func(tx *store.Tx) error {
		if also != nil {
			if err := also(tx); err != nil {
				return err
			}
		}
		if err := tx.PutOperation(o.rec); err != nil {
			return err
		}
		msg := fmt.Sprintf("%s of %s: %s", o.rec.Kind, o.rec.VMID, o.rec.State)
		if err != nil {
			msg += ": " + err.Error()
		}
		return event(tx, o.rec.FinishedAt, "op."+string(o.rec.State), o.rec.ID, "", "%s", msg)
	})
	if err != nil {
		o.log.Warn("operation failed", "err", err)
		return err
	}
	if uerr != nil {
		return categorised(uerr, "record the end of "+o.rec.ID)
	}
	o.log.Info("operation done", "took", o.rec.FinishedAt.Sub(o.rec.StartedAt))
	return nil
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
		return o, categorised(notFoundIs(err, "operation %s does not exist; `superjolt events` shows recent ones", id), "read the operation")
	}
	return o, nil
}

// notFoundIs rewrites a store ErrNotFound as a message with a hint.
func notFoundIs(err error, format string, args ...any) error {
	if err != nil && model.Code(err) == "not_found" {
		return notFoundf(format, args...)
	}
	return err
}

// stepsIn formats steps for logs.
func stepsIn(in intent) string { return strings.Join(in.Steps, ",") }

// since returns the time since t on the appliance clock.
func (a *Appliance) since(t time.Time) time.Duration { return a.clock.Now().Sub(t) }
