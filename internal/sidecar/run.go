package sidecar

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync"
)

// task is one long-running part of the pipeline. Run returns when ctx is done, or
// earlier if the part cannot go on.
type task struct {
	name string
	run  func(context.Context) error
}

// runAll runs every task in its own goroutine until ctx is done or the first one stops
// or panics; it then cancels the rest and waits for them. The parts depend on each
// other (the agent waits on the client's snapshots), so one stopping ends them all and
// the caller decides whether to start over. It returns nil when ctx ended the run.
func runAll(ctx context.Context, log *slog.Logger, tasks []task) error {
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, len(tasks))
	var wg sync.WaitGroup
	for _, t := range tasks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if p := recover(); p != nil {
					errc <- panicked(log, t.name, p)
				}
			}()
			if err := t.run(runCtx); err != nil {
				errc <- fmt.Errorf("%s: %w", t.name, err)
			} else {
				errc <- fmt.Errorf("%s stopped", t.name)
			}
		}()
	}
	err := <-errc
	var p *panicError
	stopped := ctx.Err() != nil && !errors.As(err, &p) // the caller ended the run
	cancel()
	wg.Wait()
	if stopped {
		return nil
	}
	return err
}

// panicError is a recovered panic.
type panicError struct {
	where string
	value any
}

func (e *panicError) Error() string { return fmt.Sprintf("%s panicked: %v", e.where, e.value) }

// panicked logs a recovered panic with its stack and returns it as an error.
func panicked(log *slog.Logger, where string, p any) error {
	err := &panicError{where, p}
	log.Error("goroutine panicked", "goroutine", where, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return err
}
