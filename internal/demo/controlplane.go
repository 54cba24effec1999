package demo

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// controlPlane is the demo's embedded xDS server: go-control-plane's ADS server (SotW and
// Delta) over a snapshot cache, on loopback. It plays istiod's part: every push is a
// new versioned snapshot of the whole mesh.
type controlPlane struct {
	cache   cachev3.SnapshotCache
	grpc    *grpc.Server
	ln      net.Listener
	served  chan error
	mu      sync.Mutex
	version int
}

// oneMesh serves the same snapshot to every node, as istiod does for identical sidecars.
type oneMesh struct{}

func (oneMesh) ID(*corev3.Node) string { return "mesh" }

// keepalivePolicy lets clients ping as often as gRPC lets them (istiod allows every
// 15s). grpc.NewServer's default allows one ping per 5 minutes and answers the 30s
// pings of the agent (and istio-agent) with GOAWAY "too_many_pings" after three of
// them: a reconnect every ~90s of quiet.
var keepalivePolicy = grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
	MinTime: bootstrap.MinKeepaliveInterval, PermitWithoutStream: true,
})

// startControlPlane listens on addr (a free loopback port when empty) and serves with
// opts.
func startControlPlane(ctx context.Context, addr string, opts ...grpc.ServerOption) (*controlPlane, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	cp := &controlPlane{
		cache:  cachev3.NewSnapshotCache(true, oneMesh{}, nil),
		grpc:   grpc.NewServer(opts...),
		ln:     ln,
		served: make(chan error, 1),
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(cp.grpc, serverv3.NewServer(ctx, cp.cache, nil))
	go func() { cp.served <- cp.grpc.Serve(ln) }()
	return cp, nil
}

// Addr is the host:port the agent connects to.
func (cp *controlPlane) Addr() string { return cp.ln.Addr().String() }

// Push publishes r as the next version and returns that version.
func (cp *controlPlane) Push(ctx context.Context, r *dump.Resources) (string, error) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.version++
	v := strconv.Itoa(cp.version)
	res := map[string][]types.Resource{}
	for _, l := range r.Listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, rc := range r.RouteConfigs {
		res[resource.RouteConfigType] = append(res[resource.RouteConfigType], rc)
	}
	for _, c := range r.Clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	for _, e := range r.Endpoints {
		res[resource.EndpointType] = append(res[resource.EndpointType], e)
	}
	snap, err := cachev3.NewSnapshot(v, res)
	if err != nil {
		return "", fmt.Errorf("control plane: %w", err)
	}
	if err := cp.cache.SetSnapshot(ctx, "mesh", snap); err != nil {
		return "", fmt.Errorf("control plane: %w", err)
	}
	return v, nil
}

// Stop ends all streams and the server.
func (cp *controlPlane) Stop() {
	cp.grpc.Stop()
	<-cp.served
}
