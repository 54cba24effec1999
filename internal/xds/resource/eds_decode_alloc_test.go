//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation counts are
// only meaningful without it.

package resource_test

import (
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The wire decoder allocates per assignment, not per endpoint: the assignment with its
// single locality, the endpoint array, the address string and the cluster name.
func TestDecodeLoadAssignmentAllocs(t *testing.T) {
	for _, endpoints := range []int{1, 10, 200} {
		m := meshgen.Generate(meshgen.Options{EndpointsPerCluster: endpoints}).Resources()[resource.EndpointType][0]
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if la, err := resource.DecodeLoadAssignment(b); err != nil || la.NumEndpoints() != endpoints || len(la.Localities) != 1 {
			t.Fatalf("%d endpoints: got %+v, %v", endpoints, la, err)
		}
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := resource.DecodeLoadAssignment(b); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 4 {
			t.Errorf("%d endpoints: %.1f allocations per assignment, want at most 4", endpoints, allocs)
		}
	}
}

// Istio's transport socket match metadata ({tlsMode: istio} on the endpoints of pods with
// a sidecar) costs no allocation when every endpoint has it, and one (a byte per
// endpoint) when only some have it.
func TestDecodeLoadAssignmentSocketMatchAllocs(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sidecars func(i int) bool
		max      float64
	}{
		{"all endpoints with sidecars", func(int) bool { return true }, 4},
		{"some endpoints with sidecars", func(i int) bool { return i%2 == 0 }, 5},
	} {
		m := meshgen.Generate(meshgen.Options{EndpointsPerCluster: 20}).Resources()[resource.EndpointType][0]
		cla := proto.Clone(m).(*endpointv3.ClusterLoadAssignment)
		for i, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
			if tc.sidecars(i) {
				e.Metadata.FilterMetadata[resource.SocketMatchKey] = &structpb.Struct{Fields: map[string]*structpb.Value{"tlsMode": structpb.NewStringValue("istio")}}
			}
		}
		b, err := proto.Marshal(cla)
		if err != nil {
			t.Fatal(err)
		}
		la, fast := resource.DecodeLoadAssignmentWire(b)
		if !fast {
			t.Fatalf("%s: the wire decoder gave up", tc.name)
		}
		if e, _ := la.Localities[0].SocketMatch(0); la.SocketMatchForm(e) == "" {
			t.Fatalf("%s: the socket match of the first endpoint was not kept", tc.name)
		}
		allocs := testing.AllocsPerRun(50, func() {
			if _, err := resource.DecodeLoadAssignment(b); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > tc.max {
			t.Errorf("%s: %.1f allocations per assignment, want at most %v", tc.name, allocs, tc.max)
		}
	}
}
