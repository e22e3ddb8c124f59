package mcpserver

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// fakeBackend answers every read with one plausible object, whatever the
// id, and counts the destructive verbs it is asked for. It lets the fuzzer
// reach every tool's second phase quickly; scoping is not its subject (see
// TestCrossTenant on the real appliance).
type fakeBackend struct {
	destructive atomic.Int64
}

var fakeAt = time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC)

func (*fakeBackend) Now(context.Context) (time.Time, error) { return fakeAt.Add(48 * time.Hour), nil }
func (*fakeBackend) Accounts(context.Context) ([]model.Account, error) {
	return []model.Account{{ID: "acct-aaaaaa", Name: "alice", Balance: 5 * model.Credit, Entitlements: model.DefaultEntitlements()}}, nil
}
func (f *fakeBackend) Account(ctx context.Context, id string) (model.Account, error) {
	if err := model.ValidateID(model.KindAccount, id); err != nil {
		return model.Account{}, err
	}
	a, _ := f.Accounts(ctx)
	return a[0], nil
}
func (*fakeBackend) Tiers(context.Context) ([]model.Tier, error) { return model.DefaultTiers(), nil }
func (f *fakeBackend) VMs(ctx context.Context, _ model.VMState) ([]model.VM, error) {
	vm, _ := f.VM(ctx, "vm-abc123")
	return []model.VM{vm}, nil
}
func (*fakeBackend) VM(_ context.Context, id string) (model.VM, error) {
	if err := model.ValidateID(model.KindVM, id); err != nil {
		return model.VM{}, err
	}
	return model.VM{ID: id, AccountID: "acct-aaaaaa", Name: "web", Tier: "nano", State: model.StateRunning, CreatedAt: fakeAt}, nil
}
func (*fakeBackend) op(kind model.OpKind, vm string) (model.Operation, error) {
	return model.Operation{ID: "op-aaaaaaaaaa", Kind: kind, VMID: vm, State: model.OpRunning, Step: "start", StartedAt: fakeAt}, nil
}
func (f *fakeBackend) CreateVM(_ context.Context, req api.CreateVMRequest) (model.Operation, error) {
	return f.op(model.OpCreate, "vm-new123")
}
func (f *fakeBackend) StopVM(_ context.Context, id string) (model.Operation, error) {
	return f.op(model.OpStop, id)
}
func (f *fakeBackend) StartVM(_ context.Context, id string) (model.Operation, error) {
	return f.op(model.OpStart, id)
}
func (f *fakeBackend) ResumeVM(_ context.Context, id string) (model.Operation, error) {
	return f.op(model.OpResume, id)
}
func (f *fakeBackend) CreateBackup(_ context.Context, id string) (model.Operation, error) {
	return f.op(model.OpBackup, id)
}
func (f *fakeBackend) DestroyVM(_ context.Context, id string) (model.Operation, error) {
	f.destructive.Add(1)
	return f.op(model.OpDestroy, id)
}
func (f *fakeBackend) DeleteBackup(_ context.Context, id string) (model.Operation, error) {
	f.destructive.Add(1)
	return f.op(model.OpDeleteBackup, "vm-abc123")
}
func (f *fakeBackend) RestoreVM(_ context.Context, vm, _ string) (model.Operation, error) {
	f.destructive.Add(1)
	return f.op(model.OpRestore, vm)
}
func (*fakeBackend) Backup(_ context.Context, id string) (model.Backup, error) {
	if err := model.ValidateID(model.KindBackup, id); err != nil {
		return model.Backup{}, err
	}
	return model.Backup{ID: id, VMID: "vm-abc123", Kind: model.OnDemand, TakenAt: fakeAt, SizeBytes: 4096, Consistency: model.Frozen}, nil
}
func (f *fakeBackend) Backups(ctx context.Context, vm string) ([]model.Backup, error) {
	if _, err := f.VM(ctx, vm); err != nil {
		return nil, err
	}
	b, _ := f.Backup(ctx, "bk-aaaaaaaaaa")
	return []model.Backup{b}, nil
}
func (f *fakeBackend) ResolveBackup(ctx context.Context, vm, from, tz string) (model.Backup, error) {
	if _, err := api.LoadZone(tz); err != nil {
		return model.Backup{}, err
	}
	if err := model.ValidateFrom(from); err != nil {
		return model.Backup{}, err
	}
	return f.Backup(ctx, "bk-aaaaaaaaaa")
}
func (f *fakeBackend) Operation(_ context.Context, id string) (model.Operation, error) {
	if err := model.ValidateID(model.KindOperation, id); err != nil {
		return model.Operation{}, err
	}
	return model.Operation{ID: id, Kind: model.OpBackup, State: model.OpDone, Step: "done", Progress: 100, StartedAt: fakeAt}, nil
}
func (f *fakeBackend) WaitOperation(ctx context.Context, id, _ string) (model.Operation, error) {
	return f.Operation(ctx, id)
}

var allTools = append(append([]string{}, ReadTools...), WriteTools...)

// FuzzToolCall sends arbitrary arguments to every tool through the go-sdk's
// client: no panic, and no destructive verb without a confirmation (which
// the fuzzer cannot forge). Run: go test ./appliance/mcpserver -run '^$'
// -fuzz FuzzToolCall -fuzztime 30s
func FuzzToolCall(f *testing.F) {
	for i := range allTools {
		for _, s := range []string{`{}`, `{"vm":"vm-abc123"}`, `{"vm":"vm-abc123","backup":"yesterday","confirm":"sjc1.AAAA"}`,
			`{"backup":"bk-aaaaaaaaaa","confirm":""}`, `{"vm":7}`, `[]`, `null`, `{"operation":"op-aaaaaaaaaa","waitSeconds":-1}`,
			`{"tier":"nano","name":"\u0000"}`, `{"vm":"vm-abc123","confirm":{"a":1}}`} {
			f.Add(uint8(i), []byte(s))
		}
	}
	b := &fakeBackend{}
	cs := memSession(f, b, Options{Caller: "fuzz"})
	f.Fuzz(func(t *testing.T, tool uint8, args []byte) {
		name := allTools[int(tool)%len(allTools)]
		if tool >= 200 {
			name = fmt.Sprintf("tool_%d", tool) // unknown tools too
		}
		var raw json.RawMessage
		if json.Valid(args) {
			raw = args
		} else {
			raw, _ = json.Marshal(string(args))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, _ = cs.CallTool(ctx, &mcp.CallToolParams{Name: name, Arguments: raw})
		if n := b.destructive.Load(); n != 0 {
			t.Fatalf("%s %s: a destructive verb ran without a confirmation", name, args)
		}
	})
}

// TestFakeBackendActsWithConfirmation checks that the fuzz target's
// backend does count a confirmed destructive call: the fuzz target's
// assertion is not vacuous.
func TestFakeBackendActsWithConfirmation(t *testing.T) {
	b := &fakeBackend{}
	cs := memSession(t, b, Options{Caller: "test"})
	for _, c := range []struct {
		tool string
		args map[string]any
	}{
		{ToolRestore, map[string]any{"vm": "vm-abc123", "backup": "yesterday"}},
		{ToolDeleteBackup, map[string]any{"backup": "bk-aaaaaaaaaa"}},
		{ToolDestroyVM, map[string]any{"vm": "vm-abc123"}},
	} {
		var pre destructiveOut
		mustCall(t, cs, c.tool, c.args, &pre)
		c.args["confirm"] = pre.Preview.Confirm
		mustCall(t, cs, c.tool, c.args, &pre)
	}
	if n := b.destructive.Load(); n != 3 {
		t.Fatalf("%d destructive calls; want 3", n)
	}
}
