package resource

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// AsStored returns m in the form the xDS client stores and publishes it (Decoded.Msg):
// a ClusterLoadAssignment as its LoadAssignment, a RouteConfiguration or Cluster as
// the RouteConfig or Cluster of a pruned copy, a Listener as a pruned copy. For snapshots
// built outside the client (tests, generated meshes, dumps).
func AsStored(m proto.Message) any {
	if cla, ok := m.(*endpointv3.ClusterLoadAssignment); ok {
		return FromCLA(cla)
	}
	c := proto.Clone(m)
	Prune(c)
	switch m := c.(type) {
	case *routev3.RouteConfiguration:
		return MustRouteConfig(m)
	case *clusterv3.Cluster:
		return MustCluster(m)
	}
	return c
}

// Equal reports whether two stored resources (Decoded.Msg values) have the same content.
func Equal(a, b any) bool {
	if la, ok := a.(*LoadAssignment); ok {
		lb, ok := b.(*LoadAssignment)
		return ok && la.Equal(lb)
	}
	if ra, ok := a.(*RouteConfig); ok {
		rb, ok := b.(*RouteConfig)
		return ok && ra.Equal(rb)
	}
	if ca, ok := a.(*Cluster); ok {
		cb, ok := b.(*Cluster)
		return ok && ca.Equal(cb)
	}
	ma, okA := a.(proto.Message)
	mb, okB := b.(proto.Message)
	return okA && okB && proto.Equal(ma, mb)
}
