package demo

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/dump"
)

// meshFiles is what a real istiod (unmodified, in Kubernetes mode) sent a sidecar of the
// bookinfo-like mesh in testdata/istiod/config: one protojson file per resource, copied
// from testdata/istiod/sotw so that the binary carries it wherever it runs.
//
//go:embed mesh
var meshFiles embed.FS

// sampleMesh decodes the embedded mesh.
func sampleMesh() (*dump.Resources, error) {
	r := &dump.Resources{}
	sub := func(dir string, newMsg func() proto.Message, add func(proto.Message)) error {
		entries, err := fs.ReadDir(meshFiles, path.Join("mesh", dir))
		if err != nil {
			return err
		}
		for _, e := range entries {
			data, err := meshFiles.ReadFile(path.Join("mesh", dir, e.Name()))
			if err != nil {
				return err
			}
			m := newMsg()
			if err := dump.UnmarshalJSON(data, m); err != nil {
				return fmt.Errorf("embedded mesh %s/%s: %w", dir, e.Name(), err)
			}
			add(m)
		}
		return nil
	}
	for _, err := range []error{
		sub("lds", func() proto.Message { return &listenerv3.Listener{} }, func(m proto.Message) { r.Listeners = append(r.Listeners, m.(*listenerv3.Listener)) }),
		sub("rds", func() proto.Message { return &routev3.RouteConfiguration{} }, func(m proto.Message) { r.RouteConfigs = append(r.RouteConfigs, m.(*routev3.RouteConfiguration)) }),
		sub("cds", func() proto.Message { return &clusterv3.Cluster{} }, func(m proto.Message) { r.Clusters = append(r.Clusters, m.(*clusterv3.Cluster)) }),
		sub("eds", func() proto.Message { return &endpointv3.ClusterLoadAssignment{} }, func(m proto.Message) {
			r.Endpoints = append(r.Endpoints, m.(*endpointv3.ClusterLoadAssignment))
		}),
	} {
		if err != nil {
			return nil, err
		}
	}
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].GetClusterName() < r.Endpoints[j].GetClusterName() })
	return r, nil
}

// The live change the demo applies, in Istio's shapes: what istiod sends when a
// VirtualService's canary weights are edited and a pod of the canary goes away.
const (
	canaryVHost   = "reviews.default.svc.cluster.local:9080"
	canaryRoute   = "default-weighted"
	canaryCluster = "outbound|9080|v2|reviews.default.svc.cluster.local"
	// canaryWeight is the new weight of the canary (v2); v1 gets the rest of 100.
	canaryWeight = 50
	// removedEndpoint is the pod IP that disappears from every cluster of reviews.
	removedEndpoint = "127.0.0.23"
)

// liveChange returns a copy of r with the canary weight shifted and removedEndpoint gone
// from every load assignment. r is not modified.
func liveChange(r *dump.Resources) (*dump.Resources, error) {
	out := &dump.Resources{Listeners: r.Listeners, Clusters: r.Clusters}
	shifted := false
	for _, rc := range r.RouteConfigs {
		rc = proto.Clone(rc).(*routev3.RouteConfiguration)
		for _, vh := range rc.GetVirtualHosts() {
			if vh.GetName() != canaryVHost {
				continue
			}
			for _, rt := range vh.GetRoutes() {
				if rt.GetName() != canaryRoute {
					continue
				}
				for _, wc := range rt.GetRoute().GetWeightedClusters().GetClusters() {
					w := uint32(100 - canaryWeight)
					if wc.GetName() == canaryCluster {
						w = canaryWeight
					}
					wc.Weight.Value = w
					shifted = true
				}
			}
		}
		out.RouteConfigs = append(out.RouteConfigs, rc)
	}
	removed := false
	for _, cla := range r.Endpoints {
		cla = proto.Clone(cla).(*endpointv3.ClusterLoadAssignment)
		for _, loc := range cla.GetEndpoints() {
			kept := loc.LbEndpoints[:0]
			for _, lb := range loc.GetLbEndpoints() {
				if lb.GetEndpoint().GetAddress().GetSocketAddress().GetAddress() == removedEndpoint {
					removed = true
					continue
				}
				kept = append(kept, lb)
			}
			loc.LbEndpoints = kept
		}
		out.Endpoints = append(out.Endpoints, cla)
	}
	if !shifted || !removed {
		return nil, fmt.Errorf("embedded mesh lacks the route %s/%s or the endpoint %s the live change edits", canaryVHost, canaryRoute, removedEndpoint)
	}
	return out, nil
}
