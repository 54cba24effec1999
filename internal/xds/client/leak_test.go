package client_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"

	"go.uber.org/goleak"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// Stopping Run in any state (connected, backing off, never connected) leaves no
// goroutine behind. TestMain checks the whole package too; this test checks each
// state on its own so a leak names the state.
func TestNoGoroutineLeaks(t *testing.T) {
	for _, p := range protocols {
		for _, state := range []string{"connected", "backoff"} {
			t.Run(string(p)+"/"+state, func(t *testing.T) {
				defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
				srv := newServer(t, xdsOpts())
				basicMesh(t, srv)
				func() {
					cfg := client.Config{Server: srv.Addr(), Protocol: p, Node: testNode(), Logger: slog.New(slog.DiscardHandler)}
					c, err := client.New(cfg)
					if err != nil {
						t.Fatal(err)
					}
					ctx, cancel := context.WithCancel(context.Background())
					done := make(chan error, 1)
					go func() { done <- c.Run(ctx) }()
					waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
					if state == "backoff" {
						srv.Stop()
						waitStatus(t, c, func(st client.Status) bool { return st.State == client.Waiting })
					}
					cancel()
					if err := <-done; !errors.Is(err, context.Canceled) {
						t.Errorf("Run: %v", err)
					}
				}()
				srv.Close()
			})
		}
	}
}
