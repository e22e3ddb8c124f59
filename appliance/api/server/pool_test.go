package server

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs/btrfstest"
	"github.com/superjolt/superjolt/clock"
	"golang.org/x/sys/unix"
)

// TestRealPool: GET /v1/pool answers the real pool's figures, in the API's
// snake_case JSON, and says full once the pool is filled for real.
func TestRealPool(t *testing.T) {
	ctx := context.Background()
	pool := btrfstest.NewPool(t, 0)
	st, err := store.Open(ctx, store.Options{InMemory: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	app, err := appliance.New(ctx, appliance.Options{Store: st, Pool: pool, Clock: clock.NewManual(clock.Real{}.Now()),
		RunDir: t.TempDir(), Subnet: netip.MustParsePrefix("10.77.0.0/24"), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { app.Close() })
	c, sock := serve(t, app)

	got, err := c.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, err := pool.Space(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Pool != want.Pool || got.SizeBytes != btrfstest.DefaultSize || got.FreeBytes <= 0 || got.UsedBytes != got.SizeBytes-got.FreeBytes ||
		got.ReserveBytes != want.Reserve || got.Full || got.MetadataFreeBytes <= 0 || got.Images.Count != 0 || got.VMs.Count != 0 {
		t.Errorf("empty pool: %+v; pool says %+v", got, want)
	}
	status, body := rawDo(t, sock, "GET", "/v1/pool", "", nil)
	var raw map[string]any
	if err := json.Unmarshal(body, &raw); status != 200 || err != nil {
		t.Fatalf("GET /v1/pool: %d %s %v", status, body, err)
	}
	for _, k := range []string{"pool", "size_bytes", "used_bytes", "free_bytes", "metadata_free_bytes", "reserve_bytes", "full", "images", "vms", "backups"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("GET /v1/pool has no %q: %s", k, body)
		}
	}

	// Fill it: full, and the free bytes say so.
	f, err := os.Create(filepath.Join(pool.Root(), "filler"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 1<<20)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
	}
	_ = f.Sync()
	got, err = c.Pool(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !got.Full || got.FreeBytes >= got.ReserveBytes {
		t.Errorf("filled pool: %+v, want full", got)
	}
	t.Logf("filled pool: %+v", got)
}
