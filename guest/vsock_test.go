package guest

import (
	"context"
	"os"
	"testing"
)

// TestVsockLoopback runs the vsock self-test (listen with ListenVsock,
// dial CID 1 with DialVsock, ping) on the host. Hosts without
// /dev/vhost-vsock cannot run VMs with vsock, and their vsock is usually
// unusable too; there the same self-test runs inside the test guest
// instead (`superjolt-agent selftest vsock`, with vsock_loopback loaded).
func TestVsockLoopback(t *testing.T) {
	if _, err := os.Stat("/dev/vhost-vsock"); err != nil {
		t.Skip("needs /dev/vhost-vsock (modprobe vhost_vsock) for host-side vsock; the guest-side vsock test is `superjolt-agent selftest vsock` in the test VM")
	}
	if _, err := os.Stat("/sys/module/vsock_loopback"); err != nil {
		t.Skip("needs the vsock_loopback module (modprobe vsock_loopback) to dial CID 1")
	}
	res, err := SelfTestVsock(context.Background(), 0, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if res.BootID == "" {
		t.Fatalf("self-test ping = %+v", res)
	}
}
