package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Dump answers before Run starts, while it runs and after it ended, with the version
// of every resource held; Status never carries them.
func TestDumpWithAndWithoutRun(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	c, err := client.New(client.Config{Server: srv.Addr(), Node: testNode(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if st := dumpOf(t, c); len(st.Types) != 5 || len(st.Types[resource.ClusterType].ResourceVersion) != 0 {
		t.Fatalf("Dump before Run: %+v", st.Types)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
	running := dumpOf(t, c)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	stopped := dumpOf(t, c)

	for name, st := range map[string]client.Status{"running": running, "after Run": stopped} {
		cds := st.Types[resource.ClusterType]
		if cds.Resources != 3 || len(cds.ResourceVersion) != 3 || cds.ResourceVersion["BlackHoleCluster"] == "" {
			t.Errorf("Dump %s: clusters %+v, want the 3 with their versions", name, cds)
		}
	}
	for u, ts := range c.Status().Types {
		if ts.ResourceVersion != nil {
			t.Errorf("Status carries the versions of %s", u)
		}
	}
}

// Dump called without pause while Run starts and stops again and again always
// answers: a Dump caught between Run's last event and its end tries again.
func TestDumpWhileRunStartsAndStops(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	c, err := client.New(client.Config{Server: srv.Addr(), Node: testNode(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	dumps := make(chan int, 1)
	go func() {
		n := 0
		defer func() { dumps <- n }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Dump(ctxFor(t, mustHappen)); err != nil {
				t.Errorf("Dump: %v", err)
				return
			}
			n++
		}
	}()
	for i := range 20 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		if i%2 == 0 { // else stopped at once, wherever it is
			waitStatus(t, c, func(st client.Status) bool { return st.State == client.Connected })
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v", err)
		}
	}
	close(stop)
	if n := <-dumps; n == 0 {
		t.Error("no Dump answered")
	}
}
