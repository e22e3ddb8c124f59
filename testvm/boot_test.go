package testvm_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/superjolt/superjolt/testvm"
)

func TestBootPingExec(t *testing.T) {
	vm := testvm.Boot(t, testvm.Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ping, err := vm.Client().Ping(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(ping.BootID) != 36 || ping.BootID != vm.BootID() {
		t.Errorf("ping boot id %q, vmm saw %q: want the same 36-char uuid", ping.BootID, vm.BootID())
	}
	// Without a hostname from the host, the guest takes the one on its disk.
	if ping.Hostname != "superjolt" || len(ping.Addresses) != 0 || ping.BootConfigError != "" {
		t.Errorf("ping: hostname %q (want superjolt), addresses %v, boot config error %q",
			ping.Hostname, ping.Addresses, ping.BootConfigError)
	}
	if got := strings.TrimSpace(vm.Exec(t, "uname", "-r")); got != vm.Image.KernelRelease {
		t.Errorf("uname -r = %q, want %q", got, vm.Image.KernelRelease)
	}
}
