package main

import (
	"context"
	"fmt"
	"os"
	"runtime/debug"
	"sync"
	"time"
	"unsafe"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/sink/shdict"
	"github.com/amesh-dev/amesh/internal/status"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/version"
	"github.com/amesh-dev/amesh/internal/xds/client"
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
	wait := time.Second
	for ctx.Err() == nil {
		err := runOnce(ctx, configZone, versionZone)
		if ctx.Err() != nil {
			return
		}
		// runOnce logs to its configured logger; this is the last resort.
		fmt.Fprintf(os.Stderr, "amesh libxds: pipeline stopped: %v; restarting in %v\n", err, wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, 30*time.Second)
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
	ccfg := client.ConfigFrom(cfg.XDS)
	ccfg.Logger = log.With("component", "xds")
	cl, err := client.New(ccfg)
	if err != nil {
		return err
	}
	tr := translate.New(translate.Options{OriginalDstVar: cfg.OriginalDstVar})
	ag := agent.New(cl, tr, sink, agent.Options{Window: cfg.Window, Logger: log.With("component", "agent")})
	log.Info("starting", "version", version.Version, "xds", cfg.XDS.Server, "protocol", cfg.XDS.Protocol,
		"node", cfg.XDS.Node.GetId(), "window", cfg.Window, "config_file", cfg.File)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cfg.StatusAddr != "" {
		srv, err := status.Start(cfg.StatusAddr, status.Handler(status.ForPipeline(version.Version, cl, ag), log), log)
		if err != nil {
			return err
		}
		defer func() {
			sctx, scancel := context.WithTimeout(context.Background(), time.Second)
			defer scancel()
			_ = srv.Close(sctx)
		}()
		log.Info("status server listening", "addr", srv.Addr())
	}

	errc := make(chan error, 2)
	var wg sync.WaitGroup
	for name, run := range map[string]func(context.Context) error{"xds client": cl.Run, "agent": ag.Run} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					log.Error("goroutine panicked", "goroutine", name, "panic", p, "stack", string(debug.Stack()))
					errc <- fmt.Errorf("%s panicked: %v", name, p)
				}
			}()
			errc <- run(ctx)
		}()
	}
	err = <-errc // the first to stop ends the instance
	cancel()
	wg.Wait()
	if ctx.Err() != nil && err == context.Canceled {
		log.Info("stopped")
		return nil
	}
	return err
}
