package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/api"
	"github.com/superjolt/superjolt/appliance/model"
)

// StressEnv sets how long TestStress runs (a Go duration); the default
// keeps `make test` short, `make test-long` runs it for longer.
const StressEnv = "SUPERJOLT_STRESS"

// Bounds every answer of the stress run is held to.
const (
	stressSubmitBound = 15 * time.Second // superjoltd accepts (or refuses) an operation
	stressOpBound     = 5 * time.Minute  // an operation ends, boots included
	stressQueryBound  = 15 * time.Second // a read (VM, backups, clock)
)

// TestStress: several clients, each with its own connection, do random
// creates, backups, restores, stops, starts, destroys, resumes and backup
// deletions on a few real VMs while one of them moves the manual clock
// (scheduled backups, billing, reclaims happen meanwhile). Every answer must
// come within its bound, and only with an error a user can act on (not
// found, conflict); afterwards no operation runs, store and pool agree
// subvolume for subvolume, nothing is set aside, and every running guest
// writes to its disk (none was left frozen).
func TestStress(t *testing.T) {
	needVMs(t)
	dur := 90 * time.Second
	if v := os.Getenv(StressEnv); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s=%q: %v", StressEnv, v, err)
		}
		dur = d
	}
	d := startDaemon(t, "--clock=manual")
	a := okJSON[model.Account](t, d, "account", "create", "stress", "--balance", "100000")

	s := &stress{t: t, d: d, account: a.ID, counts: map[string]int{}}
	for range 3 {
		c := api.NewClient(d.socket)
		s.do(c, "create", s.create)
		c.Close()
	}
	deadline := time.Now().Add(dur)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := api.NewClient(d.socket)
			defer c.Close()
			rng := rand.New(rand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			for time.Now().Before(deadline) && !t.Failed() {
				s.step(c, rng, i == 0)
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	s.report()
	s.checkEnd()
}

type stress struct {
	t       *testing.T
	d       *daemon
	account string

	mu     sync.Mutex
	counts map[string]int // "verb outcome" -> count
}

// step does one random thing; the clock mover also moves the clock now and
// then.
func (s *stress) step(c *api.Client, rng *rand.Rand, clockMover bool) {
	vms := s.vms(c)
	if clockMover && rng.IntN(4) == 0 {
		s.do(c, "clock", func(ctx context.Context, c *api.Client) error {
			_, err := c.AdvanceClock(ctx, time.Duration(10+rng.IntN(240))*time.Minute)
			return err
		})
		return
	}
	if len(vms) == 0 || (len(vms) < 4 && rng.IntN(8) == 0) {
		s.do(c, "create", s.create)
		return
	}
	vm := vms[rng.IntN(len(vms))]
	verbs := []string{"backup", "backup", "restore", "stop", "start", "destroy", "resume", "delete"}
	verb := verbs[rng.IntN(len(verbs))]
	s.do(c, verb, func(ctx context.Context, c *api.Client) error {
		var op model.Operation
		var err error
		switch verb {
		case "backup":
			op, err = c.CreateBackup(ctx, vm.ID)
		case "restore", "delete":
			bks, lerr := c.Backups(ctx, vm.ID)
			if lerr != nil {
				return lerr
			}
			if verb == "delete" {
				bks = slices.DeleteFunc(bks, func(b model.Backup) bool { return b.Kind != model.OnDemand })
			}
			if len(bks) == 0 {
				return errNothingToDo
			}
			bk := bks[rng.IntN(len(bks))]
			if verb == "restore" {
				op, err = c.RestoreVM(ctx, vm.ID, bk.ID)
			} else {
				op, err = c.DeleteBackup(ctx, bk.ID)
			}
		case "stop":
			op, err = c.StopVM(ctx, vm.ID)
		case "start":
			op, err = c.StartVM(ctx, vm.ID)
		case "destroy":
			op, err = c.DestroyVM(ctx, vm.ID)
		case "resume":
			op, err = c.ResumeVM(ctx, vm.ID)
		}
		if err != nil {
			return err
		}
		return s.follow(c, op)
	})
}

var errNothingToDo = errors.New("nothing to do")

func (s *stress) create(ctx context.Context, c *api.Client) error {
	op, err := c.CreateVM(ctx, api.CreateVMRequest{AccountID: s.account, Tier: "nano"})
	if err != nil {
		return err
	}
	return s.follow(c, op)
}

// follow waits for an operation to end within stressOpBound.
func (s *stress) follow(c *api.Client, op model.Operation) error {
	ctx, cancel := context.WithTimeout(context.Background(), stressOpBound)
	defer cancel()
	final, err := c.FollowOperation(ctx, op.ID, nil)
	if ctx.Err() != nil {
		s.t.Errorf("%s (%s of %s) did not end within %s (step %s)", op.ID, op.Kind, op.VMID, stressOpBound, final.Step)
	}
	return err
}

// vms lists the account's VMs within its bound.
func (s *stress) vms(c *api.Client) []model.VM {
	ctx, cancel := context.WithTimeout(context.Background(), stressQueryBound)
	defer cancel()
	vms, err := c.VMs(ctx, api.VMFilter{AccountID: s.account})
	if err != nil {
		s.t.Errorf("vm list: %v", err)
	}
	return vms
}

// do runs fn with the submit bound on its first request and records how it
// ended; an error that is neither "not found" nor "conflict" (what racing
// clients get: a VM reclaimed, busy, or in another state) fails the test.
func (s *stress) do(c *api.Client, verb string, fn func(context.Context, *api.Client) error) {
	ctx, cancel := context.WithTimeout(context.Background(), stressSubmitBound)
	defer cancel()
	start := time.Now()
	err := fn(ctx, c)
	outcome := "ok"
	switch {
	case err == nil:
	case errors.Is(err, errNothingToDo):
		outcome = "nothing to do"
	case errors.Is(err, model.ErrNotFound):
		outcome = "not_found"
	case errors.Is(err, model.ErrConflict):
		outcome = "conflict"
	case errors.Is(err, context.DeadlineExceeded):
		s.t.Errorf("%s: no answer within %s: %v", verb, stressSubmitBound, err)
		outcome = "timeout"
	default:
		s.t.Errorf("%s failed after %s with %s: %v", verb, time.Since(start).Round(time.Millisecond), model.Code(err), err)
		outcome = model.Code(err)
	}
	s.mu.Lock()
	s.counts[verb+" "+outcome]++
	s.mu.Unlock()
}

func (s *stress) report() {
	keys := make([]string, 0, len(s.counts))
	total := 0
	for k, n := range s.counts {
		keys = append(keys, k)
		total += n
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "  %-24s %d\n", k, s.counts[k])
	}
	s.t.Logf("stress run: %d requests\n%s", total, b.String())
}

// checkEnd checks what the run left: no operation running, the pool's
// subvolumes exactly the store's, nothing set aside, no guest frozen.
func (s *stress) checkEnd() {
	t, d := s.t, s.d
	if ops := okJSON[[]model.Operation](t, d, "op", "list", "--running"); len(ops) != 0 {
		t.Fatalf("operations still running after every client got its answer: %+v", ops)
	}
	vms := okJSON[[]model.VM](t, d, "vm", "list")
	pool := filepath.Join(d.stateDir, "pool")
	want, got := []string{}, []string{}
	for _, vm := range vms {
		if vm.State == model.StateCreating {
			t.Errorf("%s is still creating", vm.ID)
		}
		want = append(want, "vms/"+vm.ID)
		for _, b := range okJSON[[]model.Backup](t, d, "backup", "list", vm.ID) {
			want = append(want, "backups/"+vm.ID+"/"+b.ID)
		}
	}
	ents, _ := os.ReadDir(filepath.Join(pool, "vms"))
	for _, e := range ents {
		got = append(got, "vms/"+e.Name())
	}
	dirs, _ := os.ReadDir(filepath.Join(pool, "backups"))
	for _, dir := range dirs {
		bks, _ := os.ReadDir(filepath.Join(pool, "backups", dir.Name()))
		for _, b := range bks {
			got = append(got, "backups/"+dir.Name()+"/"+b.Name())
		}
	}
	trash, _ := os.ReadDir(filepath.Join(pool, "trash"))
	for _, e := range trash {
		got = append(got, "trash/"+e.Name())
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Fatalf("store and pool disagree after the stress run:\nstore: %v\npool:  %v", want, got)
	}
	running := 0
	for _, vm := range vms {
		if vm.State != model.StateRunning {
			continue
		}
		running++
		if r := d.sj(t, "vm", "exec", vm.ID, "--timeout", "60s", "--", "sh", "-c", "echo probe > /root/stress && sync"); r.code != 0 {
			t.Errorf("%s cannot write to its disk after the stress run (frozen?): exit %d %s", vm.ID, r.code, r.stderr)
		}
	}
	t.Logf("at the end: %d VMs (%d running), %d subvolumes, store and pool agree", len(vms), running, len(got))
}
