//go:build !race

// The race detector makes sync.Pool drop items at random, so allocation counts are
// only meaningful without it.

package resource_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

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
