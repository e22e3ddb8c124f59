package vmm

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// TestLeaseUser: a uid is leased to one holder at a time, is free again once released, and a uid
// that a live process runs as is never leased.
func TestLeaseUser(t *testing.T) {
	dir := t.TempDir()
	l1, err := leaseUser(dir, "vm-lease1")
	if err != nil {
		t.Fatal(err)
	}
	l2, err := leaseUser(dir, "vm-lease1") // same name, as another daemon might ask
	if err != nil {
		t.Fatal(err)
	}
	if l1.uid == l2.uid {
		t.Fatalf("uid %d leased twice", l1.uid)
	}
	first := l1.uid
	l1.release()
	l3, err := leaseUser(dir, "vm-lease1")
	if err != nil {
		t.Fatal(err)
	}
	if l3.uid != first {
		t.Errorf("after release got uid %d, want %d back (the search starts at the name's hash)", l3.uid, first)
	}
	l2.release()
	l3.release()

	if os.Geteuid() != 0 {
		t.Skip("needs root to run a process as a uid of the range")
	}
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("needs sleep (coreutils)")
	}
	cmd := exec.Command(sleep, "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: first, Gid: first, Groups: []uint32{}}}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	l4, err := leaseUser(dir, "vm-lease1")
	if err != nil {
		t.Fatal(err)
	}
	defer l4.release()
	if l4.uid == first {
		t.Errorf("leased uid %d, which a live process (a stale QEMU, say) runs as", first)
	}
}
