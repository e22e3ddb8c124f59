package guest

import (
	"context"
	"testing"
)

// BenchmarkPing measures one ping round trip through the client and the
// agent, per transport.
func BenchmarkPing(b *testing.B) {
	for _, tr := range transports {
		b.Run(tr.name, func(b *testing.B) {
			ta := newTestAgent(b, nil)
			c := tr.serve(b, ta.Agent)
			ctx := context.Background()
			for b.Loop() {
				if _, err := c.Ping(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkPingParallel measures pings from many goroutines over one
// connection.
func BenchmarkPingParallel(b *testing.B) {
	ta := newTestAgent(b, nil)
	c := serveUnix(b, ta.Agent)
	ctx := context.Background()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Ping(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
