package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"github.com/amesh-dev/amesh/internal/backoff"
	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/sidecar"
	"github.com/amesh-dev/amesh/internal/sink/shdict"
	"github.com/amesh-dev/amesh/internal/version"
)

// The running instance, replaced by every initial() call.
var (
	mu      sync.Mutex // serializes start and stop
	current *instance
)

// instance is one agent run with its own zones, client, translator and sink.
type instance struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// start stops the running instance (if any) in the background and starts a new one;
// it returns at once so that nginx's worker is not held up.
func start(configZone, versionZone unsafe.Pointer) {
	ctx, cancel := context.WithCancel(context.Background())
	next := &instance{cancel: cancel, done: make(chan struct{})}
	mu.Lock()
	prev := current
	current = next
	mu.Unlock()
	go func() {
		defer close(next.done)
		defer func() { _ = recover() }()
		if prev != nil {
			prev.cancel()
			<-prev.done
		}
		supervise(ctx, configZone, versionZone)
	}()
}

// supervise runs the pipeline and, if it fails to start or a goroutine root panics,
// starts it again from scratch (fresh client and translator, full rewrite of the
// dict) after a backoff, until ctx is done.
func supervise(ctx context.Context, configZone, versionZone unsafe.Pointer) {
	restart := backoff.Exponential{Initial: time.Second, Max: 30 * time.Second, Multiplier: 2}
	for failures := 1; ctx.Err() == nil; failures++ {
		err := runOnce(ctx, configZone, versionZone)
		if ctx.Err() != nil {
			return
		}
		wait := restart.Delay(failures, 0)
		// runOnce logs to its configured logger; this is the last resort.
		fmt.Fprintf(os.Stderr, "amesh libxds: pipeline stopped: %v; restarting in %v\n", err, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// runOnce builds and runs the pipeline until ctx is done or something fails.
func runOnce(ctx context.Context, configZone, versionZone unsafe.Pointer) (err error) {
	cfg, err := config.Load(os.Environ())
	if err != nil {
		return err
	}
	log, closeLog, err := cfg.Logger()
	if err != nil {
		return err
	}
	defer closeLog()
	log = log.With("pid", os.Getpid())
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
			log.Error("pipeline panicked", "err", err, "stack", string(debug.Stack()))
		}
	}()

	sink, err := shdict.Open(configZone, versionZone)
	if err != nil {
		return err
	}
	sc, err := sidecar.New(cfg, sink, sidecar.Options{Version: version.Version, Logger: log})
	if err != nil {
		return err
	}
	log.Info("starting", "version", version.Version, "xds", cfg.XDS.Server, "protocol", cfg.XDS.Protocol,
		"node", cfg.XDS.Node.GetId(), "window", cfg.Window, "config_file", cfg.File, "controller", cfg.Controller.Address)
	if err := sc.Run(ctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}
