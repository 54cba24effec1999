package client

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"runtime"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// BenchmarkRetainedHeap measures what the client keeps after the initial sync of a
// mesh in the bench program's shape (one cluster per service, 10 endpoints,
// 3 routes per virtual host), over SotW and over Delta: live heap with the synced
// client, after its first snapshot was taken with Next, minus live heap without it,
// both after a full GC. The input (the serialized mesh) is alive in both
// measurements, so it is not counted. Delta responses are unmarshalled from their
// wire form for every sync, like gRPC does, with go-control-plane's per-resource
// versions (hex SHA-256), so that what the client keeps of a response is counted.
// steady-MiB is the same after three more updates (one endpoint set changing in each)
// were applied to the consumer's state.
func BenchmarkRetainedHeap(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		anys, err := meshgen.Generate(meshgen.Options{Services: services, Subsets: -1}).Anys()
		if err != nil {
			b.Fatal(err)
		}
		wire := deltaWire(b, anys)
		for _, p := range []Protocol{SotW, Delta} {
			b.Run(fmt.Sprintf("proto=%s/services=%d", p, services), func(b *testing.B) {
				var retained, steady, resources float64
				for i := 0; i < b.N; i++ {
					before := liveHeap()
					c := benchClient(b, p)
					if p == SotW {
						syncSotw(b, c, anys, "1")
					} else {
						syncDeltaWire(b, c, wire)
					}
					if c.published == 0 {
						b.Fatal("no complete snapshot")
					}
					// The consumer takes the first update into its state, as the agent
					// does, and drops the decoded route configurations once translated
					// (State.Done): only their wire form stays.
					var st resource.State
					u, err := c.Next(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					st.Apply(u)
					st.Done()
					retained = float64(liveHeap() - before)
					for k := range 3 {
						changeEndpoints(b, c, anys[resource.EndpointType][k], k+2)
						u, err := c.Next(context.Background())
						if err != nil {
							b.Fatal(err)
						}
						st.Apply(u)
						st.Done()
					}
					runtime.KeepAlive(&st)
					steady = float64(liveHeap() - before)
					resources = 0
					for _, t := range c.types {
						resources += float64(len(t.res))
					}
					runtime.KeepAlive(c)
				}
				b.ReportMetric(retained/(1<<20), "retained-MiB")
				b.ReportMetric(retained/resources, "retained-B/resource")
				b.ReportMetric(steady/(1<<20), "steady-MiB")
			})
		}
	}
}

// deltaWire serializes one Delta response per type (in istiod's order) holding every
// resource of anys, each with go-control-plane's version: the hex SHA-256 of its bytes.
func deltaWire(b *testing.B, anys map[string][]*anypb.Any) [][]byte {
	var out [][]byte
	for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType} {
		resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: u, Nonce: "init" + u}
		for _, a := range anys[u] {
			m, err := a.UnmarshalNew()
			if err != nil {
				b.Fatal(err)
			}
			sum := sha256.Sum256(a.GetValue())
			resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: nameOf(m), Version: hex.EncodeToString(sum[:]), Resource: a})
		}
		w, err := proto.Marshal(resp)
		if err != nil {
			b.Fatal(err)
		}
		out = append(out, w)
	}
	return out
}

// syncDeltaWire feeds the responses of deltaWire, each unmarshalled anew.
func syncDeltaWire(b *testing.B, c *Client, wire [][]byte) {
	d := &deltaStream{c: c, s: &discardDelta{}}
	for _, w := range wire {
		resp := &discoveryv3.DeltaDiscoveryResponse{}
		if err := proto.Unmarshal(w, resp); err != nil {
			b.Fatal(err)
		}
		handleDelta(d, resp)
	}
}

// changeEndpoints publishes a of endpoints with the load-balancing weight of its
// first endpoint set to weight (a change), in c's protocol.
func changeEndpoints(b *testing.B, c *Client, a *anypb.Any, weight int) {
	var cla endpointv3.ClusterLoadAssignment
	if err := a.UnmarshalTo(&cla); err != nil {
		b.Fatal(err)
	}
	cla.GetEndpoints()[0].GetLbEndpoints()[0].LoadBalancingWeight = wrapperspb.UInt32(uint32(weight))
	na, err := anypb.New(&cla)
	if err != nil {
		b.Fatal(err)
	}
	nonce := fmt.Sprint("change", weight)
	if c.cfg.Protocol == SotW {
		handleSotw(&sotwStream{c: c, s: &discardSotw{}}, &discoveryv3.DiscoveryResponse{TypeUrl: resource.EndpointType, VersionInfo: nonce, Nonce: nonce, Resources: []*anypb.Any{na}})
	} else {
		handleDelta(&deltaStream{c: c, s: &discardDelta{}}, &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, Nonce: nonce,
			Resources: []*discoveryv3.Resource{{Name: cla.GetClusterName(), Version: nonce, Resource: na}}})
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
