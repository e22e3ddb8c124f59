package guest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mdlayher/vsock"
)

// vmaddrCIDLocal is VMADDR_CID_LOCAL, the loopback context id.
const vmaddrCIDLocal = 1

// SelfTestVsock proves the vsock transport end to end on one machine: it
// listens with ListenVsock on port (0: any free port), serves an Agent
// there, dials itself at CID 1 (VMADDR_CID_LOCAL, which needs the
// vsock_loopback module) with DialVsock, pings and checks the answer. The
// agent binary runs it as `superjolt-agent selftest vsock`, so that an
// end-to-end test can exec it inside a guest whose host has no
// /dev/vhost-vsock.
func SelfTestVsock(ctx context.Context, port uint32, log *slog.Logger) (PingResult, error) {
	if log == nil {
		log = slog.Default()
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ln, err := ListenVsock(port)
	if err != nil {
		return PingResult{}, err
	}
	defer ln.Close()
	if a, ok := ln.Addr().(*vsock.Addr); ok {
		port = a.Port
	}
	agent := NewAgent(AgentOptions{
		Version: "selftest",
		Logger:  log,
		Power: func(context.Context, PowerAction) (func(), error) {
			return nil, fmt.Errorf("%w: power actions are off in the self-test", ErrUnsupported)
		},
	})
	served := make(chan error, 1)
	go func() { served <- agent.Serve(ctx, ln) }()

	conn, err := DialVsock(ctx, vmaddrCIDLocal, port)
	if err != nil {
		return PingResult{}, fmt.Errorf("%w (is vsock_loopback loaded?)", err)
	}
	c := NewClient(conn, WithLogger(log))
	defer c.Close()
	res, err := c.Ping(ctx)
	if err != nil {
		return PingResult{}, fmt.Errorf("guest: vsock self-test ping: %w", err)
	}
	if res.BootID == "" || res.ProtocolVersion != ProtocolVersion || res.AgentVersion != "selftest" {
		return res, fmt.Errorf("guest: vsock self-test: unexpected ping answer %+v", res)
	}
	cancel()
	if err := <-served; err != nil {
		return res, err
	}
	return res, nil
}
