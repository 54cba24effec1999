package istiod_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The workload amesh pretends to be: pod productpage-v1 of testdata/workloads.yaml.
const (
	podName   = "productpage-v1"
	podIP     = "192.0.2.10"
	namespace = "default"
)

// Deadlines: "must happen" waits are long (istiod pushes within ~0.5 s, but the machine is
// shared); "must not happen" checks use quiet, which only has to outlast istiod's debounce.
const (
	mustHappen = 30 * time.Second
	quiet      = 1500 * time.Millisecond
)

// sidecarEnv is the environment an injected sidecar would have (see
// internal/xds/bootstrap/README.md), pointed at addr.
func sidecarEnv(t *testing.T, addr string, proto client.Protocol) []string {
	t.Helper()
	labels := filepath.Join(t.TempDir(), "labels")
	if err := os.WriteFile(labels, []byte("app=\"productpage\"\nversion=\"v1\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return []string{
		"AMESH_XDS_ADDRESS=" + addr, "AMESH_XDS_PROTOCOL=" + string(proto),
		"AMESH_LABELS_FILE=" + labels,
		"POD_NAME=" + podName, "POD_NAMESPACE=" + namespace, "INSTANCE_IP=" + podIP,
		"SERVICE_ACCOUNT=productpage", "ISTIO_VERSION=1.31.0", "CLUSTER_ID=Kubernetes",
	}
}

// sidecar is an xDS client connected to the shared istiod.
type sidecar struct {
	c      *client.Client
	cancel context.CancelFunc
	done   chan error
	// state is the consumer's: every update Next returned, applied.
	state resource.State
}

// startSidecar connects a client built from environ (sidecarEnv plus extras) and stops it at
// the end of the test.
func startSidecar(t *testing.T, environ []string) *sidecar {
	t.Helper()
	return startSidecarWith(t, environ, nil)
}

// startSidecarWith is startSidecar with mod (nil: none) adjusting the client's
// configuration.
func startSidecarWith(t *testing.T, environ []string, mod func(*client.Config)) *sidecar {
	t.Helper()
	b, err := bootstrap.FromEnviron(environ)
	if err != nil {
		t.Fatal(err)
	}
	cfg := client.ConfigFrom(b)
	// Reconnect quickly after an istiod restart; the defaults are for production.
	cfg.Backoff = client.Backoff{Initial: 50 * time.Millisecond, Max: time.Second}
	cfg.Logger = testLogger(t)
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &sidecar{c: c, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- c.Run(ctx) }()
	t.Cleanup(s.stop)
	return s
}

func (s *sidecar) stop() {
	s.cancel()
	<-s.done
}

// next applies the next update to the sidecar's state and returns a copy of the
// state (tests compare states taken at different times), failing the test after d.
func (s *sidecar) next(t *testing.T, d time.Duration) *resource.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	snap, err := s.apply(ctx)
	if err != nil {
		t.Fatalf("no snapshot within %v: %v; client status: %+v", d, err, s.c.Status())
	}
	return snap
}

// apply waits for the next update, applies it and returns a copy of the state.
func (s *sidecar) apply(ctx context.Context) (*resource.State, error) {
	u, err := s.c.Next(ctx)
	if err != nil {
		return nil, err
	}
	s.state.Apply(u)
	c := s.state
	c.Listeners, c.RouteConfigs = maps.Clone(c.Listeners), maps.Clone(c.RouteConfigs)
	c.Clusters, c.Endpoints = maps.Clone(c.Clusters), maps.Clone(c.Endpoints)
	c.Secrets = maps.Clone(c.Secrets)
	return &c, nil
}

// waitFor returns the first snapshot for which ok holds (the current one included).
func (s *sidecar) waitFor(t *testing.T, what string, ok func(*resource.State) bool) *resource.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	for {
		snap, err := s.apply(ctx)
		if err != nil {
			t.Fatalf("%s: not seen within %v (%v); client status: %+v", what, mustHappen, err, s.c.Status())
		}
		if ok(snap) {
			return snap
		}
	}
}

// noSnapshot asserts that no new snapshot is published for quiet.
func (s *sidecar) noSnapshot(t *testing.T, why string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	snap, err := s.apply(ctx)
	if err == nil {
		t.Errorf("%s: unexpected snapshot %d with changes %+v", why, snap.Seq, snap.Changes)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("%s: %v", why, err)
	}
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
