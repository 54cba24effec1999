package client_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Long timeouts for what must happen; tests fail fast when it does.
const mustHappen = 20 * time.Second

var protocols = []client.Protocol{client.Delta, client.SotW}

func testNode() *corev3.Node {
	return &corev3.Node{Id: "sidecar~127.0.0.10~app-1.default~default.svc.cluster.local"}
}

func newServer(t *testing.T, opts xdstest.Options) *xdstest.Server {
	t.Helper()
	srv, err := xdstest.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// startClient runs a client against srv until the test ends. mod may adjust the config.
func startClient(t *testing.T, srv *xdstest.Server, p client.Protocol, mod func(*client.Config)) *client.Client {
	t.Helper()
	cfg := client.Config{
		Server:   srv.Addr(),
		Protocol: p,
		Node:     testNode(),
		Backoff:  client.Backoff{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	if testing.Verbose() {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
	})
	return c
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// consumers holds, per client, the state a consumer builds from its updates.
var consumers sync.Map // *client.Client -> *resource.State

// next calls c.Next and applies the update to the client's consumer state, as the
// agent does, and returns a copy of that state: tests compare states taken at
// different times.
func next(ctx context.Context, c *client.Client) (*resource.State, error) {
	u, err := c.Next(ctx)
	if err != nil {
		return nil, err
	}
	v, _ := consumers.LoadOrStore(c, &resource.State{})
	st := v.(*resource.State)
	st.Apply(u)
	s := *st
	s.Listeners, s.RouteConfigs = maps.Clone(st.Listeners), maps.Clone(st.RouteConfigs)
	s.Clusters, s.Endpoints = maps.Clone(st.Clusters), maps.Clone(st.Endpoints)
	s.Secrets = maps.Clone(st.Secrets)
	return &s, nil
}

// waitSnapshot calls next until a state satisfies ok and returns it.
func waitSnapshot(t *testing.T, c *client.Client, ok func(*resource.State) bool) *resource.State {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	for {
		s, err := next(ctx, c)
		if err != nil {
			t.Fatalf("no matching snapshot: %v; status %+v", err, c.Status())
		}
		if ok(s) {
			return s
		}
	}
}

// dumpOf is c.Dump, which must answer.
func dumpOf(t *testing.T, c *client.Client) client.Status {
	t.Helper()
	st, err := c.Dump(ctxFor(t, mustHappen))
	if err != nil {
		t.Fatalf("Dump: %v", err)
	}
	return st
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// counts is the number of resources per kind of a snapshot.
type counts struct{ L, R, C, E int }

func countsOf(s *resource.State) counts {
	return counts{len(s.Listeners), len(s.RouteConfigs), len(s.Clusters), len(s.Endpoints)}
}

func hasCounts(want counts) func(*resource.State) bool {
	return func(s *resource.State) bool { return countsOf(s) == want }
}

// basicMesh puts a small Istio-shaped mesh into srv: two EDS clusters with endpoints,
// one static cluster, a listener using RDS "9080" (routes to c1) and its route config.
func basicMesh(t *testing.T, srv *xdstest.Server) {
	t.Helper()
	srv.Set(resource.ClusterType, xdstest.EDSCluster("outbound|9080||a"), xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"))
	srv.Set(resource.EndpointType, xdstest.Endpoints("outbound|9080||a", "10.0.0.1:9080"), xdstest.Endpoints("outbound|9080||b", "10.0.0.2:9080", "10.0.0.3:9080"))
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""))
	srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", "outbound|9080||a"))
}

func xdsOpts() xdstest.Options { return xdstest.Options{} }

// pruned is m as the client stores it (resource.Prune on a copy).
func pruned[M proto.Message](m M) M {
	c := proto.Clone(m).(M)
	resource.Prune(c)
	return c
}
