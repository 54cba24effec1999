package xdstest

import (
	"fmt"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Builders for small resources in the shapes istiod sends (see testdata/istiod).

// EDSCluster is an outbound EDS cluster as istiod names it (outbound|port||host), over
// ADS, with service_name equal to the cluster name.
func EDSCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{
			EdsConfig:   &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
			ServiceName: name,
		},
		ConnectTimeout: durationpb.New(10 * time.Second),
		LbPolicy:       clusterv3.Cluster_LEAST_REQUEST,
	}
}

// StaticCluster is a cluster without EDS (like BlackHoleCluster).
func StaticCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(10 * time.Second),
	}
}

// Endpoints is the ClusterLoadAssignment of an EDS cluster with one endpoint per
// address ("ip:port").
func Endpoints(name string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		ap, err := netip.ParseAddrPort(a)
		if err != nil {
			panic(fmt.Sprintf("xdstest.Endpoints: bad address %q: %v", a, err))
		}
		ip, port := ap.Addr().String(), uint32(ap.Port())
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
				}}},
			}},
			LoadBalancingWeight: wrapperspb.UInt32(1),
		})
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs, LoadBalancingWeight: wrapperspb.UInt32(uint32(len(lbs)))}},
	}
}

// HCM returns an http_connection_manager network filter using RDS route rds over ADS.
func HCM(rds string) *listenerv3.Filter { return HCMWithFilters(rds) }

// HCMWithFilters is HCM with HTTP filters in front of the router.
func HCMWithFilters(rds string, filters ...*hcmv3.HttpFilter) *listenerv3.Filter {
	return hcmFilter(&hcmv3.HttpConnectionManager{
		StatPrefix: "outbound_0.0.0.0_" + rds,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}, ResourceApiVersion: corev3.ApiVersion_V3},
			RouteConfigName: rds,
		}},
		HttpFilters: filters,
	})
}

// HTTPFilter is an HTTP filter with config cfg (an RBAC, a fault...).
func HTTPFilter(name string, cfg proto.Message) *hcmv3.HttpFilter {
	a, err := anypb.New(cfg)
	if err != nil {
		panic(err)
	}
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

func hcmFilter(h *hcmv3.HttpConnectionManager) *listenerv3.Filter {
	router, _ := anypb.New(&routerv3.Router{})
	h.HttpFilters = append(h.HttpFilters, &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}})
	a, err := anypb.New(h)
	if err != nil {
		panic(err)
	}
	return &listenerv3.Filter{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
}

// HCMWithoutRoutes is an http_connection_manager with neither rds nor route_config,
// which amesh rejects.
func HCMWithoutRoutes() *listenerv3.Filter {
	return hcmFilter(&hcmv3.HttpConnectionManager{StatPrefix: "broken"})
}

// HCMInline is an http_connection_manager with an inline route configuration sending
// everything to cluster.
func HCMInline(routeName, cluster string) *listenerv3.Filter {
	return hcmFilter(&hcmv3.HttpConnectionManager{
		StatPrefix:     "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: RouteConfig(routeName, cluster)},
	})
}

// Listener is an outbound listener 0.0.0.0_<port> with one filter chain per RDS name
// (an HCM each) and, when defaultRDS is not empty, a default filter chain using it.
func Listener(name string, port uint32, rds []string, defaultRDS string) *listenerv3.Listener {
	l := &listenerv3.Listener{
		Name: name,
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
		TrafficDirection: corev3.TrafficDirection_OUTBOUND,
		BindToPort:       wrapperspb.Bool(false),
	}
	for _, r := range rds {
		l.FilterChains = append(l.FilterChains, &listenerv3.FilterChain{Name: "chain-" + r, Filters: []*listenerv3.Filter{HCM(r)}})
	}
	if defaultRDS != "" {
		l.DefaultFilterChain = &listenerv3.FilterChain{Name: "default", Filters: []*listenerv3.Filter{HCM(defaultRDS)}}
	}
	return l
}

// ListenerWithFilters is a listener with one filter chain holding filters.
func ListenerWithFilters(name string, port uint32, filters ...*listenerv3.Filter) *listenerv3.Listener {
	l := Listener(name, port, nil, "")
	l.FilterChains = []*listenerv3.FilterChain{{Name: "chain", Filters: filters}}
	return l
}

// RouteConfig is a route configuration with one virtual host "*" sending every path
// to cluster.
func RouteConfig(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{
		Name: name,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "allow_any",
			Domains: []string{"*"},
			Routes: []*routev3.Route{{
				Name:  "default",
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				}},
			}},
		}},
		ValidateClusters: wrapperspb.Bool(false),
	}
}

// InvalidCluster is a cluster that fails Envoy's validation (negative connect_timeout).
func InvalidCluster(name string) *clusterv3.Cluster {
	c := EDSCluster(name)
	c.ConnectTimeout = durationpb.New(-time.Second)
	return c
}
