package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/superjolt/superjolt/appliance"
	"github.com/superjolt/superjolt/appliance/api/server"
	"github.com/superjolt/superjolt/appliance/images"
	"github.com/superjolt/superjolt/appliance/model"
	"github.com/superjolt/superjolt/appliance/store"
	"github.com/superjolt/superjolt/btrfs"
	"github.com/superjolt/superjolt/clock"
	"github.com/superjolt/superjolt/systemd"
)

// run wires the daemon together and runs it until ctx ends.
func run(ctx context.Context, cfg config, log *slog.Logger) (err error) {
	if err := os.MkdirAll(cfg.stateDir, 0o700); err != nil {
		return fmt.Errorf("state directory: %w", err)
	}

	// The socket first: a second daemon stops here, before it touches the
	// store or the pool of the first one. Until the appliance is up, every
	// request is answered "unavailable: starting".
	ln, err := server.Listen(ctx, cfg.socket)
	if err != nil {
		return err
	}
	if cfg.sockGroup != "" {
		if err := chgrp(cfg.socket, cfg.sockGroup); err != nil {
			ln.Close()
			return err
		}
	}
	var h handlerSwitch
	h.set(server.Unavailable("superjoltd is starting (the first start builds the built-in image, which takes a minute); try again shortly"))
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	served := make(chan error, 1)
	go func() { served <- server.Serve(serveCtx, ln, &h, log) }()
	stopAPI := sync.OnceFunc(func() {
		stopServing()
		if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("api: serve", "err", err)
		}
	})
	defer stopAPI()
	log.Info("api listening", "socket", cfg.socket)

	st, err := store.Open(ctx, store.Options{Dir: filepath.Join(cfg.stateDir, "state"), Logger: log})
	if err != nil {
		return fmt.Errorf("open the store: %w", err)
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			log.Error("close the store", "err", cerr)
		}
	}()

	hv, closeHV, err := hypervisor(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer closeHV()

	pool, err := openPool(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer func() {
		// VMs outlive the daemon, and run on the pool: it stays mounted
		// for them (the next start finds it so and takes it on).
		if left := hv.Leftovers(cfg.runDir); len(left) > 0 {
			log.Info("VMs keep running after superjoltd; the pool stays mounted", "vms", len(left), "pool", pool.Root())
			pool.Release()
			return
		}
		if cerr := pool.Close(); cerr != nil {
			log.Error("close the pool", "err", cerr)
		}
	}()

	var clk clock.Clock = clock.Real{}
	if cfg.manual {
		m, err := openManualClock(cfg.stateDir)
		if err != nil {
			return err
		}
		clk = m
		saved := make(chan struct{})
		saveCtx, stopSaving := context.WithCancel(context.WithoutCancel(ctx))
		go func() { defer close(saved); saveManualClock(saveCtx, m, cfg.stateDir, log) }()
		defer func() { stopSaving(); <-saved }()
		log.Warn("the clock is manual: time moves only with `superjolt debug clock advance`", "now", m.Now())
	}
	build := buildImage(cfg.agent, log)
	if missing := images.Missing(); len(missing) > 0 {
		// Accounts, billing and everything already in the pool still work;
		// the next start after installing them builds the image.
		log.Warn("cannot build the built-in image: VMs cannot be created from it until these are installed (scripts/install-deps)", "missing", missing)
		build = nil
	}
	var network appliance.Network
	if cfg.network {
		hn, err := appliance.NewHostNetwork(cfg.bridge)
		if err != nil {
			return fmt.Errorf("network: %w (or run with --network=off)", err)
		}
		defer hn.Close()
		network = hn
	}
	systemd.Status("opening the appliance (building the built-in image on first start)")
	var reserved []model.Port
	if cfg.network {
		reserved, _ = cfg.listenPorts() // checked with the flags
	} else {
		cfg.httpListen, cfg.httpsListen = "", "" // no VM to proxy to
	}
	app, err := appliance.New(ctx, appliance.Options{
		Hypervisor:    hv,
		Network:       network,
		DNS:           cfg.dns,
		ReservedPorts: reserved,
		Store:         st,
		Pool:          pool,
		Clock:         clk,
		Subnet:        cfg.subnet,
		RunDir:        cfg.runDir,
		Logger:        log,
		BuildImage:    build,
		Images:        newImageMaker(cfg.agent, filepath.Join(cfg.stateDir, "tmp"), log),
		HistoryWindow: cfg.historyWindow,
	})
	if err != nil {
		return fmt.Errorf("open the appliance: %w", err)
	}
	defer func() {
		if cerr := app.Close(); cerr != nil {
			log.Error("close the appliance", "err", cerr)
		}
	}()

	px, err := startProxy(cfg, app, log)
	if err != nil {
		return err
	}
	defer px.stop()
	sopts := server.Options{Logger: log, CACert: px.caCert}
	stopRemote, err := startRemote(ctx, cfg, app, &sopts, log)
	if err != nil {
		return err
	}
	defer stopRemote()
	h.set(server.New(app, sopts))

	runErr := make(chan error, 1)
	go func() { runErr <- app.Run(ctx) }()

	systemd.Ready("serving on " + cfg.socket)
	// The watchdog is pinged while a read through the store answers.
	go systemd.Watchdog(ctx, func(ctx context.Context) error {
		_, err := app.Tiers(ctx)
		return err
	}, log)
	log.Info("superjoltd ready", "socket", cfg.socket, "state_dir", cfg.stateDir, "pool", pool.Root(), "clock", map[bool]string{true: "manual", false: "real"}[cfg.manual])

	select {
	case <-ctx.Done():
		err = nil
	case err = <-runErr:
		if err != nil {
			err = fmt.Errorf("background work: %w", err)
		}
	}
	log.Info("superjoltd stopping")
	systemd.Stopping()
	stopAPI()
	if ctx.Err() != nil {
		<-runErr
	}
	return err
}

// handlerSwitch serves whichever handler was set last.
type handlerSwitch struct{ p atomic.Pointer[http.Handler] }

func (s *handlerSwitch) set(h http.Handler) { s.p.Store(&h) }

func (s *handlerSwitch) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	(*s.p.Load()).ServeHTTP(w, r)
}

// openPool opens the pool: the --pool directory, or the loop-backed image.
func openPool(ctx context.Context, cfg config, log *slog.Logger) (*btrfs.Pool, error) {
	if cfg.pool != "" {
		p, err := btrfs.Open(ctx, cfg.pool)
		if err != nil {
			return nil, fmt.Errorf("open the pool %s: %w", cfg.pool, err)
		}
		return p, nil
	}
	p, err := btrfs.OpenImage(ctx, btrfs.OpenImageOptions{
		Image:      cfg.poolImage,
		MountPoint: filepath.Join(cfg.stateDir, "pool"),
		Size:       cfg.poolSize,
		Logger:     log,
	})
	if err != nil {
		return nil, fmt.Errorf("open the pool image %s: %w", cfg.poolImage, err)
	}
	return p, nil
}

// chgrp gives the socket to a group, so that its members may use the API.
func chgrp(path, group string) error {
	g, err := user.LookupGroup(group)
	if err != nil {
		return fmt.Errorf("--socket-group: %w", err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return fmt.Errorf("--socket-group %s: gid %q: %w", group, g.Gid, err)
	}
	if err := os.Chown(path, -1, gid); err != nil {
		return fmt.Errorf("--socket-group: %w", err)
	}
	return nil
}
