package guest

import (
	"context"
	"fmt"
	"sync"
)

// ServeOptions says which transports ServeTransports serves.
type ServeOptions struct {
	// VsockPort to listen on (default VsockPort); NoVsock turns vsock off.
	VsockPort uint32
	NoVsock   bool
	// SerialName is the virtio-serial port name (default SerialPortName);
	// NoSerial turns virtio-serial off.
	SerialName string
	NoSerial   bool
}

// ServeTransports serves every transport the guest has until ctx is done:
// vsock when the guest has it (a failed listen is logged and vsock
// skipped) and the named virtio-serial port, waited for if it is not
// there yet. It returns nil when ctx is done.
func (a *Agent) ServeTransports(ctx context.Context, opts ServeOptions) error {
	if opts.VsockPort == 0 {
		opts.VsockPort = VsockPort
	}
	if opts.SerialName == "" {
		opts.SerialName = SerialPortName
	}
	var wg sync.WaitGroup
	if !opts.NoVsock {
		ln, err := ListenVsock(opts.VsockPort)
		if err != nil {
			a.log.Info("no vsock; serving without it", "err", err)
		} else {
			a.log.Info("serving vsock", "port", opts.VsockPort)
			wg.Go(func() {
				if err := a.Serve(ctx, ln); err != nil {
					a.log.Error("vsock listener failed", "err", err)
				}
			})
		}
	}
	if !opts.NoSerial {
		wg.Go(func() { _ = a.ServeSerial(ctx, opts.SerialName) })
	}
	wg.Wait()
	if ctx.Err() == nil {
		return fmt.Errorf("guest: no transport left to serve")
	}
	return nil
}
