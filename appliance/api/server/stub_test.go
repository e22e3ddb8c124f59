package server

import (
	"context"
	"io"
	"sync"
	"time"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/guest"
)

// errApp answers every verb with err and records which verbs were reached
// and with what. It exists for what the real appliance cannot be made to do
// on demand (answer every error category from one verb); everything else is
// tested against the real appliance.
type errApp struct {
	err error

	mu    sync.Mutex
	calls []call
}

type call struct {
	verb string
	args []any
}

func (s *errApp) rec(verb string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, call{verb, args})
}

func (s *errApp) reached() []call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]call(nil), s.calls...)
}

var _ Appliance = (*errApp)(nil)

func (s *errApp) Clock() clock.Clock { return clock.Real{} }
func (s *errApp) Capacity(context.Context) (model.Capacity, error) {
	return model.Capacity{}, nil
}
func (s *errApp) CreateAccount(_ context.Context, req appliance.CreateAccountRequest) (model.Account, error) {
	s.rec("CreateAccount", req)
	return model.Account{}, s.err
}
func (s *errApp) PoolStatus(context.Context) (appliance.PoolStatus, error) {
	s.rec("PoolStatus")
	return appliance.PoolStatus{}, s.err
}
func (s *errApp) Accounts(context.Context) ([]model.Account, error) {
	s.rec("Accounts")
	return nil, s.err
}
func (s *errApp) Account(_ context.Context, id string) (model.Account, error) {
	s.rec("Account", id)
	return model.Account{}, s.err
}
func (s *errApp) TopUp(_ context.Context, id string, m model.Micro) (model.Account, error) {
	s.rec("TopUp", id, m)
	return model.Account{}, s.err
}
func (s *errApp) Adjust(_ context.Context, id string, m model.Micro, reason string) (model.Account, error) {
	s.rec("Adjust", id, m, reason)
	return model.Account{}, s.err
}
func (s *errApp) SetAccountSSHKeys(_ context.Context, id string, keys []string) (model.Account, error) {
	s.rec("SetAccountSSHKeys", id, len(keys))
	return model.Account{}, s.err
}
func (s *errApp) Ledger(_ context.Context, id string, limit int) ([]model.LedgerEntry, error) {
	s.rec("Ledger", id, limit)
	return nil, s.err
}
func (s *errApp) LedgerTotals(_ context.Context, id string) (model.LedgerTotals, error) {
	s.rec("LedgerTotals", id)
	return model.LedgerTotals{}, s.err
}
func (s *errApp) CreateToken(_ context.Context, req appliance.CreateTokenRequest) (model.Token, string, error) {
	s.rec("CreateToken", req)
	return model.Token{}, "", s.err
}
func (s *errApp) Tokens(_ context.Context, id string) ([]model.Token, error) {
	s.rec("Tokens", id)
	return nil, s.err
}
func (s *errApp) RevokeToken(_ context.Context, id string) (model.Token, error) {
	s.rec("RevokeToken", id)
	return model.Token{}, s.err
}
func (s *errApp) Tiers(context.Context) ([]model.Tier, error) {
	s.rec("Tiers")
	return nil, s.err
}
func (s *errApp) Images(context.Context) ([]model.Image, error) {
	s.rec("Images")
	return nil, s.err
}
func (s *errApp) ImportImage(_ context.Context, req appliance.ImportImageRequest, _ io.Reader, _ func(string)) (model.Image, error) {
	s.rec("ImportImage", req)
	return model.Image{}, s.err
}
func (s *errApp) BuildImage(_ context.Context, req appliance.BuildImageRequest, _ func(string)) (model.Image, error) {
	s.rec("BuildImage", req)
	return model.Image{}, s.err
}
func (s *errApp) DeleteImage(_ context.Context, name string) (model.Image, error) {
	s.rec("DeleteImage", name)
	return model.Image{}, s.err
}
func (s *errApp) SubmitCreateVM(_ context.Context, req appliance.CreateVMRequest) (model.Operation, error) {
	s.rec("SubmitCreateVM", req)
	return model.Operation{}, s.err
}
func (s *errApp) VMs(_ context.Context, f appliance.VMFilter) ([]model.VM, error) {
	s.rec("VMs", f)
	return nil, s.err
}
func (s *errApp) VMRows(_ context.Context, f appliance.VMFilter, p appliance.Page) (appliance.Rows, error) {
	s.rec("VMRows", f, p)
	return appliance.Rows{}, s.err
}
func (s *errApp) VMUsage(context.Context) ([]model.VMUsage, error) {
	s.rec("VMUsage")
	return nil, s.err
}
func (s *errApp) VM(_ context.Context, id string) (model.VM, error) {
	s.rec("VM", id)
	return model.VM{}, s.err
}
func (s *errApp) VMLogs(_ context.Context, id string, _ int, _ bool, _ io.Writer) error {
	s.rec("VMLogs", id)
	return s.err
}
func (s *errApp) HaltVM(_ context.Context, id string) (model.VM, error) {
	s.rec("HaltVM", id)
	return model.VM{}, s.err
}
func (s *errApp) SubmitStopVM(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitStopVM", id)
	return model.Operation{}, s.err
}
func (s *errApp) SubmitStartVM(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitStartVM", id)
	return model.Operation{}, s.err
}
func (s *errApp) SubmitResumeVM(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitResumeVM", id)
	return model.Operation{}, s.err
}
func (s *errApp) SubmitDestroyVM(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitDestroyVM", id)
	return model.Operation{}, s.err
}
func (s *errApp) Exec(_ context.Context, id string, req guest.ExecRequest) (guest.ExecResult, error) {
	s.rec("Exec", id, req)
	return guest.ExecResult{}, s.err
}
func (s *errApp) ExecStream(_ context.Context, id string, req guest.ExecRequest, _ guest.ExecIO) (guest.ExecResult, error) {
	s.rec("ExecStream", id, req)
	return guest.ExecResult{}, s.err
}
func (s *errApp) ConsoleLog(_ context.Context, id string, n int) ([]string, error) {
	s.rec("ConsoleLog", id, n)
	return nil, s.err
}
func (s *errApp) Console(_ context.Context, id string, _ appliance.ConsoleIO) error {
	s.rec("Console", id)
	return s.err
}
func (s *errApp) AddPort(_ context.Context, id string, p model.Port) (model.VM, error) {
	s.rec("AddPort", id, p)
	return model.VM{}, s.err
}
func (s *errApp) RemovePort(_ context.Context, id string, p model.Port) (model.VM, error) {
	s.rec("RemovePort", id, p)
	return model.VM{}, s.err
}
func (s *errApp) AddDomain(_ context.Context, id, d string, _ uint16) (model.VM, error) {
	s.rec("AddDomain", id, d)
	return model.VM{}, s.err
}
func (s *errApp) RemoveDomain(_ context.Context, id, d string) (model.VM, error) {
	s.rec("RemoveDomain", id, d)
	return model.VM{}, s.err
}
func (s *errApp) SubmitBackup(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitBackup", id)
	return model.Operation{}, s.err
}
func (s *errApp) Backup(_ context.Context, id string) (model.Backup, error) {
	s.rec("Backup", id)
	return model.Backup{}, s.err
}
func (s *errApp) Backups(_ context.Context, id string) ([]model.Backup, error) {
	s.rec("Backups", id)
	return nil, s.err
}
func (s *errApp) ListBackups(_ context.Context, f appliance.BackupFilter) ([]model.Backup, error) {
	s.rec("ListBackups", f)
	return nil, s.err
}
func (s *errApp) BackupRows(_ context.Context, f appliance.BackupFilter, p appliance.Page) (appliance.Rows, error) {
	s.rec("BackupRows", f, p)
	return appliance.Rows{}, s.err
}
func (s *errApp) SubmitDeleteBackup(_ context.Context, id string) (model.Operation, error) {
	s.rec("SubmitDeleteBackup", id)
	return model.Operation{}, s.err
}
func (s *errApp) ResolveBackup(_ context.Context, id, from string, loc *time.Location) (model.Backup, error) {
	s.rec("ResolveBackup", id, from, loc)
	return model.Backup{}, s.err
}
func (s *errApp) SubmitRestore(_ context.Context, id, bk string) (model.Operation, error) {
	s.rec("SubmitRestore", id, bk)
	return model.Operation{}, s.err
}
func (s *errApp) Operation(_ context.Context, id string) (model.Operation, error) {
	s.rec("Operation", id)
	return model.Operation{}, s.err
}
func (s *errApp) Operations(_ context.Context, f appliance.OpFilter) ([]model.Operation, error) {
	s.rec("Operations", f)
	return nil, s.err
}
func (s *errApp) WaitOperation(_ context.Context, id, step string) (model.Operation, error) {
	s.rec("WaitOperation", id, step)
	return model.Operation{}, s.err
}
func (s *errApp) CancelOperation(_ context.Context, id string) (model.Operation, error) {
	s.rec("CancelOperation", id)
	return model.Operation{}, s.err
}
func (s *errApp) Events(_ context.Context, after uint64, limit int) ([]model.Event, error) {
	s.rec("Events", after, limit)
	return nil, s.err
}
func (s *errApp) LastEvents(_ context.Context, n int) ([]model.Event, error) {
	s.rec("LastEvents", n)
	return nil, s.err
}
func (s *errApp) WaitEvents(_ context.Context, after uint64) ([]model.Event, error) {
	s.rec("WaitEvents", after)
	return nil, s.err
}
func (s *errApp) AdvanceClock(_ context.Context, d time.Duration) (time.Time, error) {
	s.rec("AdvanceClock", d)
	return time.Time{}, s.err
}
