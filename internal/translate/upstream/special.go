package upstream

import (
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// SpecialKind classifies Istio's clusters that do not name a set of endpoints.
type SpecialKind uint8

const (
	// None is an ordinary cluster.
	None SpecialKind = iota
	// Passthrough is Istio's PassthroughCluster: ORIGINAL_DST to wherever the
	// application connected (REGISTRY_ONLY meshes use BlackHole instead).
	Passthrough
	// BlackHole is Istio's BlackHoleCluster: no endpoints, every request fails.
	BlackHole
	// OriginalDst is any other ORIGINAL_DST cluster, e.g. inbound|<port>|| (the local
	// workload, reached through the original destination of the connection).
	OriginalDst
	// InboundPassthrough is Istio's InboundPassthroughCluster(Ipv4|Ipv6): inbound
	// traffic for ports no inbound listener chain claims.
	InboundPassthrough
)

func (k SpecialKind) String() string {
	switch k {
	case Passthrough:
		return "PassthroughCluster"
	case BlackHole:
		return "BlackHoleCluster"
	case OriginalDst:
		return "ORIGINAL_DST"
	case InboundPassthrough:
		return "InboundPassthroughCluster"
	}
	return "none"
}

// Special classifies the cluster named name: Istio's names first (they are stable
// across Istio versions), then c's type (c's own name is not read, see Build).
func Special(name string, c *clusterv3.Cluster) SpecialKind {
	switch name {
	case "PassthroughCluster":
		return Passthrough
	case "BlackHoleCluster":
		return BlackHole
	case "InboundPassthroughCluster", "InboundPassthroughClusterIpv4", "InboundPassthroughClusterIpv6":
		return InboundPassthrough
	}
	if c.GetType() == clusterv3.Cluster_ORIGINAL_DST {
		return OriginalDst
	}
	return None
}
