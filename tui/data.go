package tui

import (
	"slices"
	"strings"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// maxEvents bounds the events the console keeps for its events view, and
// maxOps the finished operations it keeps (those under way are all kept):
// a console left open for months holds as much as one opened today.
const (
	maxEvents = 2000
	maxOps    = 500
)

// data is the console's copy of the daemon's state: filled by a snapshot
// (at start and whenever the event stream had to be re-established) and
// kept current object by object as events name them.
type data struct {
	status   api.Status
	vms      map[string]model.VM
	backups  map[string][]model.Backup // by VM id, newest first
	accounts map[string]model.Account
	tiers    map[string]model.Tier
	images   []model.Image
	ops      map[string]model.Operation
	usage    map[string]model.VMUsage
	// steps holds, per running or recent operation, when each step was
	// recorded (from its op.step events), for the step trail.
	steps  map[string][]opStep
	events []model.Event
	// seq is the last event applied; the stream resumes after it.
	seq uint64
	// gen counts changes of each kind of data, so that a view rebuilds its
	// row order only when what the order depends on changed (a new event
	// does not re-sort 10,000 VMs).
	gen gens
	// retired counts the VMs in the graveyard or the archive.
	retired int
	// totals is totalsOf's count, of the VMs as they were at totalsGen.
	totals    map[string]accountTotals
	totalsGen int
}

// gens are change counters, one per kind of data.
type gens struct {
	vms, backups, accounts, ops, usage, events, status int
}

// sum adds counters: it changes whenever one of them does.
func sum(gs ...int) int {
	t := 0
	for _, g := range gs {
		t += g
	}
	return t
}

type opStep struct {
	step string
	at   time.Time
}

func newData() *data {
	return &data{
		vms: map[string]model.VM{}, backups: map[string][]model.Backup{}, accounts: map[string]model.Account{},
		tiers: map[string]model.Tier{}, ops: map[string]model.Operation{}, usage: map[string]model.VMUsage{},
		steps: map[string][]opStep{},
	}
}

// snapshot is everything the console reads at once.
type snapshot struct {
	status   api.Status
	vms      []model.VM
	backups  []model.Backup
	accounts []model.Account
	tiers    []model.Tier
	images   []model.Image
	ops      []model.Operation
	events   []model.Event
}

// load replaces the data with a snapshot.
func (d *data) load(s snapshot) {
	steps, gen := d.steps, d.gen
	*d = *newData()
	d.steps = steps
	// Every counter moves: whatever a view built is out of date.
	d.gen = gens{gen.vms + 1, gen.backups + 1, gen.accounts + 1, gen.ops + 1, gen.usage + 1, gen.events + 1, gen.status + 1}
	d.status = s.status
	for _, vm := range s.vms {
		d.vms[vm.ID] = vm
	}
	for _, b := range s.backups {
		d.backups[b.VMID] = append(d.backups[b.VMID], b)
	}
	for id := range d.backups {
		sortBackups(d.backups[id])
	}
	for _, a := range s.accounts {
		d.accounts[a.ID] = a
	}
	for _, t := range s.tiers {
		d.tiers[t.Name] = t
	}
	d.images = s.images
	for _, o := range s.ops {
		d.putOp(o)
	}
	for _, e := range s.events {
		d.addEvent(e)
	}
	d.countRetired()
}

func (d *data) countRetired() {
	d.retired = 0
	for _, vm := range d.vms {
		if !vm.State.Live() {
			d.retired++
		}
	}
}

func sortBackups(bks []model.Backup) {
	slices.SortFunc(bks, func(a, b model.Backup) int {
		if c := b.TakenAt.Compare(a.TakenAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
}

// addEvent appends an event to the log (once) and notes operation steps.
func (d *data) addEvent(e model.Event) {
	if e.Seq <= d.seq {
		return
	}
	d.seq = e.Seq
	d.events = append(d.events, e)
	if len(d.events) > maxEvents {
		d.events = slices.Delete(d.events, 0, len(d.events)-maxEvents)
	}
	if e.Type == "op.step" || e.Type == "op.started" {
		step := "recorded"
		if e.Type == "op.step" {
			step = stepOf(e.Message)
		}
		d.steps[e.Object] = append(d.steps[e.Object], opStep{step: step, at: e.At})
	}
	d.gen.events++
}

// stepOf reads the step out of an op.step message ("restore of vm-x:
// stopped (40%)").
func stepOf(msg string) string {
	_, after, ok := strings.Cut(msg, ": ")
	if !ok {
		return ""
	}
	step, _, _ := strings.Cut(after, " ")
	return step
}

func (d *data) putVM(vm model.VM) {
	if old, ok := d.vms[vm.ID]; ok && !old.State.Live() {
		d.retired--
	}
	if !vm.State.Live() {
		d.retired++
	}
	d.vms[vm.ID] = vm
	d.gen.vms++
}

func (d *data) dropVM(id string) {
	if old, ok := d.vms[id]; ok && !old.State.Live() {
		d.retired--
	}
	delete(d.vms, id)
	delete(d.backups, id)
	delete(d.usage, id)
	d.gen.vms++
	d.gen.backups++
}

func (d *data) putBackup(b model.Backup) {
	bks := slices.DeleteFunc(d.backups[b.VMID], func(x model.Backup) bool { return x.ID == b.ID })
	bks = append(bks, b)
	sortBackups(bks)
	d.backups[b.VMID] = bks
	d.gen.backups++
}

func (d *data) dropBackup(id string) {
	for vm, bks := range d.backups {
		if i := slices.IndexFunc(bks, func(b model.Backup) bool { return b.ID == id }); i >= 0 {
			d.backups[vm] = slices.Delete(bks, i, i+1)
		}
	}
	d.gen.backups++
}

func (d *data) putAccount(a model.Account) { d.accounts[a.ID] = a; d.gen.accounts++ }

func (d *data) putOp(o model.Operation) {
	d.ops[o.ID] = o
	d.gen.ops++
	if len(d.ops) <= maxOps+maxOps/10 {
		return
	}
	// Drop the oldest finished ones, and their steps, in one go.
	var done []model.Operation
	for _, x := range d.ops {
		if x.State.Finished() {
			done = append(done, x)
		}
	}
	slices.SortFunc(done, func(a, b model.Operation) int { return b.StartedAt.Compare(a.StartedAt) })
	for _, x := range done[min(maxOps, len(done)):] {
		delete(d.ops, x.ID)
		delete(d.steps, x.ID)
	}
}

// running returns the operation under way on a VM, if any.
func (d *data) running(vmID string) (model.Operation, bool) {
	var found model.Operation
	for _, o := range d.ops {
		if o.VMID == vmID && o.State == model.OpRunning && (found.ID == "" || o.StartedAt.After(found.StartedAt)) {
			found = o
		}
	}
	return found, found.ID != ""
}

// lastBackup returns a VM's newest backup.
func (d *data) lastBackup(vmID string) (model.Backup, bool) {
	bks := d.backups[vmID]
	if len(bks) == 0 {
		return model.Backup{}, false
	}
	return bks[0], true
}

// accountTotals is what an account's VMs add up to: what its billing VMs
// cost per hour (the rates of their tiers; model.VMState.Bills says which
// states bill) and how many VMs it has that are not reclaimed.
type accountTotals struct {
	burn model.Micro
	vms  int
}

// totalsOf returns an account's totals, counted for every account once per
// change of the VMs (the accounts view draws each row every second).
func (d *data) totalsOf(accountID string) accountTotals {
	if d.totals == nil || d.totalsGen != d.gen.vms {
		d.totals = map[string]accountTotals{}
		for _, vm := range d.vms {
			t := d.totals[vm.AccountID]
			t.vms++
			if vm.State.Bills() {
				t.burn += d.tiers[vm.Tier].RatePerHour
			}
			d.totals[vm.AccountID] = t
		}
		d.totalsGen = d.gen.vms
	}
	return d.totals[accountID]
}

// accountName returns an account's name, or its id when unknown.
func (d *data) accountName(id string) string {
	if a, ok := d.accounts[id]; ok && a.Name != "" {
		return a.Name
	}
	return id
}
