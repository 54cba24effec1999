package client

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"sync"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The benchmarks drive the protocol handlers directly (no network): they measure
// decoding, validation, dependency tracking and snapshot publication for a mesh of
// 10,000 EDS clusters with 10 endpoints each, in istiod's shapes (internal/meshgen).

var (
	benchOnce sync.Once
	benchAnys map[string][]*anypb.Any
)

func benchMesh(b *testing.B) map[string][]*anypb.Any {
	benchOnce.Do(func() {
		m := meshgen.Generate(meshgen.Options{Services: 5000, Subsets: 1, EndpointsPerCluster: 10})
		var err error
		if benchAnys, err = m.Anys(); err != nil {
			panic(err)
		}
	})
	if n := len(benchAnys[resource.EndpointType]); n != 10000 {
		b.Fatalf("mesh has %d endpoint sets, want 10000", n)
	}
	return benchAnys
}

// discardSotw and discardDelta stand in for the gRPC stream: nothing is received, and
// nothing is sent as no sender goroutine runs.
type discardSotw struct {
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

type discardDelta struct {
	discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
}

// handleSotw and handleDelta handle a response as Run's goroutine does and drop the
// requests it queued, which a sender would send.
func handleSotw(s *sotwStream, resp *discoveryv3.DiscoveryResponse) {
	s.handle(resp)
	s.c.post()
	s.out.held = s.out.held[:0]
}

func handleDelta(d *deltaStream, resp *discoveryv3.DeltaDiscoveryResponse) {
	d.handle(resp)
	d.c.post()
	d.out.held = d.out.held[:0]
}

func benchClient(b *testing.B, p Protocol) *Client {
	c, err := New(Config{Server: "127.0.0.1:1", Protocol: p, Node: &corev3.Node{Id: "sidecar~10.0.0.1~bench.default~default.svc.cluster.local"},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	return c
}

// syncSotw feeds a full SotW sync in istiod's order and checks a snapshot came out.
func syncSotw(b *testing.B, c *Client, anys map[string][]*anypb.Any, version string) {
	s := &sotwStream{c: c, s: &discardSotw{}}
	for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType} {
		handleSotw(s, &discoveryv3.DiscoveryResponse{TypeUrl: u, VersionInfo: version, Nonce: version + u, Resources: anys[u]})
	}
}

// BenchmarkInitialSync decodes, validates and publishes the whole mesh once per op.
func BenchmarkInitialSync(b *testing.B) {
	anys := benchMesh(b)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c := benchClient(b, SotW)
		syncSotw(b, c, anys, "1")
		if c.published == 0 || len(c.types[edsIdx].res) != 10000 {
			b.Fatal("no complete snapshot")
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/10000, "ns/cluster")
}

// BenchmarkResendUnchanged is istiod resending every cluster and endpoint set with
// identical content (each SotW push and every reconnect): it must cost little more
// than hashing the bytes, and publish nothing.
func BenchmarkResendUnchanged(b *testing.B) {
	anys := benchMesh(b)
	c := benchClient(b, SotW)
	syncSotw(b, c, anys, "1")
	seq := c.published
	s := &sotwStream{c: c, s: &discardSotw{}}
	var bytes int64
	for _, u := range []string{resource.ClusterType, resource.EndpointType} {
		for _, a := range anys[u] {
			bytes += int64(len(a.GetValue()))
		}
	}
	b.SetBytes(bytes)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		v := fmt.Sprint(i + 2)
		for _, u := range []string{resource.ClusterType, resource.EndpointType} {
			handleSotw(s, &discoveryv3.DiscoveryResponse{TypeUrl: u, VersionInfo: v, Nonce: v + u, Resources: anys[u]})
		}
	}
	b.StopTimer()
	if c.published != seq {
		b.Fatalf("identical resend published snapshot %d", c.published)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20000, "ns/resource")
}

// BenchmarkDeltaEndpointChange is one endpoint set changing (a pod rescheduled) in a
// mesh of 1,000 and of 10,000 EDS clusters: decode one resource, publish one snapshot
// and hand it to the consumer (Next), i.e. the client's share of "xDS response to
// version bump". Issue 7 wants this flat in the mesh size.
func BenchmarkDeltaEndpointChange(b *testing.B) {
	for _, clusters := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("clusters=%d", clusters), func(b *testing.B) {
			benchDeltaEndpointChange(b, meshAnys(b, clusters))
		})
	}
}

// meshAnys returns a mesh with the given number of EDS clusters (one subset per
// service, so two clusters per service), generated once per size.
func meshAnys(b *testing.B, clusters int) map[string][]*anypb.Any {
	if clusters == 10000 {
		return benchMesh(b)
	}
	m := meshgen.Generate(meshgen.Options{Services: clusters / 2, Subsets: 1, EndpointsPerCluster: 10})
	anys, err := m.Anys()
	if err != nil {
		b.Fatal(err)
	}
	if n := len(anys[resource.EndpointType]); n != clusters {
		b.Fatalf("mesh has %d endpoint sets, want %d", n, clusters)
	}
	return anys
}

func benchDeltaEndpointChange(b *testing.B, anys map[string][]*anypb.Any) {
	c := benchClient(b, Delta)
	d := &deltaStream{c: c, s: &discardDelta{}}
	for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType} {
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: u, Nonce: "init" + u}
		for _, a := range anys[u] {
			m, err := a.UnmarshalNew()
			if err != nil {
				b.Fatal(err)
			}
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: nameOf(m), Version: "1", Resource: a})
		}
		handleDelta(d, resp)
	}
	ctx := context.Background()
	first, err := c.Next(ctx)
	if err != nil {
		b.Fatal(err)
	}
	eds := anys[resource.EndpointType]
	if len(first.Endpoints.Upsert) != len(eds) {
		b.Fatalf("first update has %d endpoint sets, want %d", len(first.Endpoints.Upsert), len(eds))
	}
	// Pre-build the changes: endpoint set i*131%n with a changed weight.
	const variants = 64
	changes := make([]*discoveryv3.DeltaDiscoveryResponse, variants)
	restores := make([]*discoveryv3.DeltaDiscoveryResponse, variants)
	for i := range changes {
		a := eds[i*131%len(eds)]
		var cla endpointv3.ClusterLoadAssignment
		if err := a.UnmarshalTo(&cla); err != nil {
			b.Fatal(err)
		}
		cla.GetEndpoints()[0].GetLbEndpoints()[0].GetLoadBalancingWeight().Value += uint32(i + 1)
		na, _ := anypb.New(&cla)
		changes[i] = &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, Resources: []*discoveryv3.Resource{{Name: cla.GetClusterName(), Version: "x", Resource: na}}}
		restores[i] = &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, Resources: []*discoveryv3.Resource{{Name: cla.GetClusterName(), Version: "1", Resource: a}}}
	}
	seq := first.Seq
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		k := (i / 2) % variants
		r := changes[k]
		// Odd ops restore the original, so every op is a real change.
		if i%2 == 1 {
			r = restores[k]
		}
		r.Nonce = strconv.Itoa(i)
		handleDelta(d, r)
		s, err := c.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if s.Seq != seq+1 || len(s.Endpoints.Upsert) != 1 {
			b.Fatalf("update %d after %d with %d changed endpoint sets, want one", s.Seq, seq, len(s.Endpoints.Upsert))
		}
		seq = s.Seq
	}
	b.StopTimer()
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/1000, "µs/change")
}

func nameOf(m proto.Message) string {
	if n, ok := m.(interface{ GetName() string }); ok {
		return n.GetName()
	}
	return m.(*endpointv3.ClusterLoadAssignment).GetClusterName()
}
