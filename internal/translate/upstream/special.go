package upstream

import (
	"fmt"
	"net/netip"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
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

// OriginalDstPlugin is amesh's APISIX plugin (lua/apisix/plugins/amesh-original-dst.lua)
// that sends a route's requests to the original destination of their connection, as
// Envoy's ORIGINAL_DST clusters do: the route names the cluster's upstream (its
// timeouts and retries), and the plugin replaces its nodes with the destination the
// kernel recorded for the connection.
const OriginalDstPlugin = "amesh-original-dst"

// OriginalDstConf is OriginalDstPlugin's configuration for one ORIGINAL_DST cluster.
type OriginalDstConf struct {
	// Bind and Bind6 are the source addresses of upstream connections to IPv4 and IPv6
	// destinations (upstream_bind_config). Istio binds its inbound clusters to 127.0.0.6
	// (::6): its capture rules let such connections to the pod's own address reach the
	// application instead of capturing them again.
	Bind  string `json:"bind,omitempty"`
	Bind6 string `json:"bind6,omitempty"`
	// Port replaces the original destination's port
	// (original_dst_lb_config.upstream_port_override).
	Port uint32 `json:"port,omitempty"`
}

// OriginalDstConfig returns the plugin configuration that delivers the requests of c, an
// ORIGINAL_DST cluster, as Envoy does; or the field and the reason it cannot.
func OriginalDstConfig(c *clusterv3.Cluster) (conf OriginalDstConf, field, reason string) {
	if c.GetType() != clusterv3.Cluster_ORIGINAL_DST {
		return conf, "type", "Istio's original-destination cluster is not of type ORIGINAL_DST"
	}
	lb := c.GetOriginalDstLbConfig()
	switch {
	case lb.GetUseHttpHeader() || lb.GetHttpHeaderName() != "":
		return conf, "original_dst_lb_config.use_http_header", "the destination from a request header is not supported"
	case lb.GetMetadataKey() != nil:
		return conf, "original_dst_lb_config.metadata_key", "the destination from metadata is not supported"
	}
	if p := lb.GetUpstreamPortOverride(); p != nil {
		if p.GetValue() == 0 || p.GetValue() > 65535 {
			return conf, "original_dst_lb_config.upstream_port_override", fmt.Sprintf("port %d is not a port", p.GetValue())
		}
		conf.Port = p.GetValue()
	}
	bc := c.GetUpstreamBindConfig()
	if bc == nil {
		return conf, "", ""
	}
	switch {
	case bc.GetFreebind() != nil || len(bc.GetSocketOptions()) > 0 || bc.GetLocalAddressSelector() != nil:
		return conf, "upstream_bind_config", "only source addresses are supported (not freebind, socket options or a local address selector)"
	}
	addrs := []*corev3.SocketAddress{bc.GetSourceAddress()}
	for _, a := range bc.GetExtraSourceAddresses() {
		if len(a.GetSocketOptions().GetSocketOptions()) > 0 {
			return conf, "upstream_bind_config.extra_source_addresses", "socket options are not supported"
		}
		addrs = append(addrs, a.GetAddress())
	}
	//lint:ignore SA1019 deprecated for extra_source_addresses, but Envoy still reads it; so must amesh.
	addrs = append(addrs, bc.GetAdditionalSourceAddresses()...)
	for _, sa := range addrs {
		ip, err := netip.ParseAddr(sa.GetAddress())
		switch {
		case sa == nil:
			continue
		case err != nil || ip.Zone() != "":
			return conf, "upstream_bind_config", fmt.Sprintf("source address %q is not an IP address", sa.GetAddress())
		case sa.GetPortValue() != 0 || sa.GetNamedPort() != "":
			return conf, "upstream_bind_config", "a fixed source port is not supported"
		case sa.GetProtocol() != corev3.SocketAddress_TCP:
			return conf, "upstream_bind_config", "only TCP source addresses are supported"
		}
		// Envoy binds the first address of the destination's family.
		if ip.Is4() || ip.Is4In6() {
			if conf.Bind == "" {
				conf.Bind = ip.Unmap().String()
			}
		} else if conf.Bind6 == "" {
			conf.Bind6 = ip.String()
		}
	}
	return conf, "", ""
}
