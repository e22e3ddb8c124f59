package appliance

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/appliance/model"
)

// TestMemoryCapacity: live VMs hold their tier's memory (stopped ones
// too); a create or a resume that does not fit is refused, saying how much
// is left and what to do, and changes nothing; --overcommit creates it
// anyway, with an event; the graveyard gives the memory back.
func TestMemoryCapacity(t *testing.T) {
	e := newEnv(t, envOptions{hostMemoryMiB: 2048}) // 1 GiB kept for the host: four nano VMs (256 MiB)
	ctx := context.Background()
	acct := e.account("alice", 1000*model.Credit, 5)
	var vms []model.VM
	for range 4 {
		vms = append(vms, e.vm(acct.ID))
	}
	if _, err := e.a.StopVM(ctx, vms[0].ID); err != nil {
		t.Fatal(err)
	}
	c, err := e.a.Capacity(ctx)
	if err != nil || c.ReservedMiB != 1024 || c.FreeMiB() != 0 || c.LiveVMs != 4 || c.Accel != "none" {
		t.Fatalf("Capacity = %+v, %v; want 1 GiB held by 4 live VMs (a stopped one included), none free", c, err)
	}
	before := snapshot(t, e)
	_, err = e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano"})
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "needs 256 MiB") || !strings.Contains(err.Error(), "--overcommit") {
		t.Fatalf("a fifth VM = %v; want a conflict saying what it needs and how to go on", err)
	}
	if after := snapshot(t, e); after != before {
		t.Fatal("a refused create changed the store")
	}
	over, err := e.a.CreateVM(ctx, CreateVMRequest{AccountID: acct.ID, Tier: "nano", Overcommit: true})
	if err != nil {
		t.Fatalf("create with overcommit: %v", err)
	}
	if evs := e.eventsOfType("vm.overcommitted"); len(evs) != 1 || evs[0].Object != over.ID {
		t.Fatalf("overcommit events = %+v", evs)
	}

	// Into the graveyard: its memory is free again; the resume of another
	// does not fit while the overcommitted VM lives.
	e.advance(2 * time.Hour)
	for _, id := range []string{vms[1].ID, vms[2].ID} {
		if _, err := e.a.DestroyVM(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if c, _ := e.a.Capacity(ctx); c.FreeMiB() != 256 {
		t.Fatalf("after two destroys %d MiB free, want 256 (5 VMs held 1280 of 1024)", c.FreeMiB())
	}
	if _, err := e.a.ResumeVM(ctx, vms[1].ID); err != nil {
		t.Fatalf("resume when it fits: %v", err)
	}
	_, err = e.a.ResumeVM(ctx, vms[2].ID)
	if !errors.Is(err, model.ErrConflict) || !strings.Contains(err.Error(), "needs 256 MiB") {
		t.Fatalf("resume when full = %v, want a conflict", err)
	}
	if got := e.getVM(vms[2].ID); got.State != model.StateGraveyard {
		t.Fatalf("a refused resume left %s %s", got.ID, got.State)
	}
}
