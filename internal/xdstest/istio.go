package xdstest

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// RegistryOnlyListener returns a copy of an outbound listener as istiod builds it for
// outboundTrafficPolicy REGISTRY_ONLY instead of ALLOW_ANY: the chains that proxy to
// PassthroughCluster (virtualOutbound's for destinations no other listener claims, the
// default chain of a port's listener) proxy to BlackHoleCluster (the tcp_proxy's cluster
// and stat prefix; istiod's buildOutboundCatchAllNetworkFiltersOnly). test/istiod checks
// it against istiod.
func RegistryOnlyListener(l *listenerv3.Listener) *listenerv3.Listener {
	l = proto.Clone(l).(*listenerv3.Listener)
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	for _, fc := range chains {
		for _, f := range fc.GetFilters() {
			tp := &tcpv3.TcpProxy{}
			if !f.GetTypedConfig().MessageIs(tp) || f.GetTypedConfig().UnmarshalTo(tp) != nil || tp.GetCluster() != "PassthroughCluster" {
				continue
			}
			tp.ClusterSpecifier = &tcpv3.TcpProxy_Cluster{Cluster: "BlackHoleCluster"}
			tp.StatPrefix = "BlackHoleCluster"
			a, err := anypb.New(tp)
			if err != nil {
				panic(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
	}
	return l
}

// RegistryOnlyRoutes returns a copy of an outbound HTTP route configuration as istiod
// builds it for REGISTRY_ONLY instead of ALLOW_ANY: the virtual host for unknown hosts,
// allow_any (to PassthroughCluster), becomes block_all, which answers 502 (istiod's
// BuildCatchAllVirtualHost). test/istiod checks it against istiod.
func RegistryOnlyRoutes(rc *routev3.RouteConfiguration) *routev3.RouteConfiguration {
	rc = proto.Clone(rc).(*routev3.RouteConfiguration)
	for i, vh := range rc.GetVirtualHosts() {
		if vh.GetName() != "allow_any" {
			continue
		}
		rc.VirtualHosts[i] = &routev3.VirtualHost{
			Name:    "block_all",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:   "block_all",
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 502}},
			}},
			IncludeRequestAttemptCount: vh.GetIncludeRequestAttemptCount(),
		}
	}
	return rc
}
