// Package dump loads xDS resources from files: the per-resource protojson layout of
// testdata/istiod (lds/, rds/, cds/, eds/) and Envoy's /config_dump JSON (what
// `istioctl proxy-config all -o json` prints). Tests, benchmarks and the amesh command
// use it to feed recorded or captured xDS through the same code as live istiod data.
package dump

import (
	"sort"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Resources is a set of decoded xDS resources, each list sorted by name.
type Resources struct {
	Listeners    []*listenerv3.Listener
	RouteConfigs []*routev3.RouteConfiguration
	Clusters     []*clusterv3.Cluster
	Endpoints    []*endpointv3.ClusterLoadAssignment
}

// Snapshot returns the resources as the first snapshot a client would publish
// (Seq 1, Changes.Full). Endpoints are keyed by cluster_name, in their compact form. The
// snapshot shares the messages with r, so neither may be modified afterwards.
func (r *Resources) Snapshot() *resource.State {
	s := &resource.State{
		Seq:          1,
		Listeners:    make(map[string]*listenerv3.Listener, len(r.Listeners)),
		RouteConfigs: make(map[string]*resource.RouteConfig, len(r.RouteConfigs)),
		Clusters:     make(map[string]*resource.Cluster, len(r.Clusters)),
		Endpoints:    make(map[string]*resource.LoadAssignment, len(r.Endpoints)),
		Changes:      resource.Changes{Full: true, Decoded: make(map[string]*routev3.RouteConfiguration, len(r.RouteConfigs))},
	}
	for _, l := range r.Listeners {
		s.Listeners[l.GetName()] = l
	}
	for _, rc := range r.RouteConfigs {
		s.RouteConfigs[rc.GetName()] = resource.MustRouteConfig(rc)
		s.Changes.Decoded[rc.GetName()] = rc
	}
	for _, c := range r.Clusters {
		s.Clusters[c.GetName()] = resource.MustCluster(c)
	}
	for _, e := range r.Endpoints {
		s.Endpoints[e.GetClusterName()] = resource.FromCLA(e)
	}
	return s
}

func (r *Resources) sort() {
	sort.Slice(r.Listeners, func(i, j int) bool { return r.Listeners[i].GetName() < r.Listeners[j].GetName() })
	sort.Slice(r.RouteConfigs, func(i, j int) bool { return r.RouteConfigs[i].GetName() < r.RouteConfigs[j].GetName() })
	sort.Slice(r.Clusters, func(i, j int) bool { return r.Clusters[i].GetName() < r.Clusters[j].GetName() })
	sort.Slice(r.Endpoints, func(i, j int) bool { return r.Endpoints[i].GetClusterName() < r.Endpoints[j].GetClusterName() })
}
