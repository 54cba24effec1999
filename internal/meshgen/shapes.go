package meshgen

import (
	"fmt"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// service is one generated Kubernetes service. Every fourth lives in the proxy's own
// namespace ("default"), which gives its virtual hosts the short-name domain too.
type service struct {
	name, ns, host string
}

func newService(i int) service {
	ns := "default"
	if i%4 != 0 {
		ns = fmt.Sprintf("ns-%d", i%16)
	}
	name := fmt.Sprintf("svc-%05d", i)
	return service{name: name, ns: ns, host: name + "." + ns + ".svc.cluster.local"}
}

// outboundListener copies istiod's outbound HTTP listener for port.
func outboundListener(tmpl *listenerv3.Listener, port int) *listenerv3.Listener {
	l := clone(tmpl)
	l.Name = ListenerName(port)
	l.GetAddress().GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: uint32(port)}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			hcm := &hcmv3.HttpConnectionManager{}
			if !f.GetTypedConfig().MessageIs(hcm) {
				continue
			}
			mustUnmarshal(f.GetTypedConfig(), hcm)
			hcm.StatPrefix = fmt.Sprintf("outbound_0.0.0.0_%d;", port)
			hcm.GetRds().RouteConfigName = fmt.Sprint(port)
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
		}
	}
	return l
}

// virtualHost builds the virtual host istiod makes for a service with a VirtualService
// of o.RoutesPerService routes: header-, exact- and regex-matched routes to subsets,
// then a catch-all prefix "/" split by weight over the subsets.
func virtualHost(s service, port int, o Options) *routev3.VirtualHost {
	domains := []string{s.host, s.host + "."}
	if s.ns == "default" {
		domains = append(domains, s.name)
	}
	domains = append(domains, s.name+"."+s.ns+".svc", s.name+"."+s.ns)
	vh := &routev3.VirtualHost{
		Name:                       fmt.Sprintf("%s:%d", s.host, port),
		Domains:                    domains,
		IncludeRequestAttemptCount: true,
	}
	meta := &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{
			"config": structpb.NewStringValue(fmt.Sprintf("/apis/networking.istio.io/v1/namespaces/%s/virtual-service/%s", s.ns, s.name)),
		}},
	}}
	for k := 0; k < o.RoutesPerService; k++ {
		last := k == o.RoutesPerService-1
		r := &routev3.Route{
			Name:      fmt.Sprintf("r%d", k),
			Metadata:  meta,
			Decorator: &routev3.Decorator{Operation: fmt.Sprintf("%s:%d/*", s.host, port)},
		}
		action := &routev3.RouteAction{
			Timeout: durationpb.New(0),
			//lint:ignore SA1019 deprecated, but istiod still sets it and so do we.
			MaxGrpcTimeout: durationpb.New(0),
			RetryPolicy:    defaultRetryPolicy(),
		}
		switch {
		case last:
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}}
		case k%3 == 0:
			r.Match = &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/api/r%d", k)},
				Headers: []*routev3.HeaderMatcher{{
					Name: "end-user",
					HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
						MatchPattern: &matcherv3.StringMatcher_Exact{Exact: fmt.Sprintf("user-%d", k)},
					}},
				}},
			}
		case k%3 == 1:
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: fmt.Sprintf("/login/r%d", k)}}
		default:
			r.Match = &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
				Regex: fmt.Sprintf("/items/[0-9]+/r%d", k),
			}}}
		}
		r.Match.CaseSensitive = wrapBool(true)
		switch {
		case o.Subsets == 0:
			action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: ClusterName(port, "", s.host)}
		case last && o.Subsets > 1:
			action.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: weighted(s, port, o.Subsets)}
		default:
			action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: ClusterName(port, subsetName(k%o.Subsets+1), s.host)}
		}
		r.Action = &routev3.Route_Route{Route: action}
		vh.Routes = append(vh.Routes, r)
	}
	return vh
}

// weighted splits 100 over the subsets, the remainder going to the first.
func weighted(s service, port, subsets int) *routev3.WeightedCluster {
	wc := &routev3.WeightedCluster{}
	each := 100 / subsets
	for k := 1; k <= subsets; k++ {
		w := each
		if k == 1 {
			w += 100 - each*subsets
		}
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
			Name: ClusterName(port, subsetName(k), s.host), Weight: wrapU32(uint32(w)),
		})
	}
	return wc
}

// defaultRetryPolicy is what istiod adds to a route without a retry setting.
func defaultRetryPolicy() *routev3.RetryPolicy {
	return &routev3.RetryPolicy{
		RetryOn:                       "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
		NumRetries:                    wrapU32(2),
		HostSelectionRetryMaxAttempts: 5,
	}
}

// allowAny is the last virtual host of every outbound route configuration.
func allowAny() *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    "allow_any",
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  "allow_any",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "PassthroughCluster"},
				Timeout:          durationpb.New(0),
				//lint:ignore SA1019 deprecated, but istiod still sets it and so do we.
				MaxGrpcTimeout: durationpb.New(0),
			}},
		}},
		IncludeRequestAttemptCount: true,
	}
}

// outboundCluster copies istiod's outbound EDS cluster for a service, port and subset.
func outboundCluster(tmpl *clusterv3.Cluster, s service, port int, subset string) *clusterv3.Cluster {
	c := clone(tmpl)
	c.Name = ClusterName(port, subset, s.host)
	c.AltStatName = c.Name + ";"
	c.GetEdsClusterConfig().ServiceName = c.Name
	for _, tsm := range c.GetTransportSocketMatches() {
		tls := &tlsv3.UpstreamTlsContext{}
		if !tsm.GetTransportSocket().GetTypedConfig().MessageIs(tls) {
			continue
		}
		mustUnmarshal(tsm.GetTransportSocket().GetTypedConfig(), tls)
		// istiod's: the cluster name's parts joined by "_." (BuildDNSSrvSubsetKey).
		tls.Sni = fmt.Sprintf("outbound_.%d_.%s_.%s", port, subset, s.host)
		tsm.GetTransportSocket().ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tls)}
	}
	svc := structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
		"host":      structpb.NewStringValue(s.host),
		"name":      structpb.NewStringValue(s.host),
		"namespace": structpb.NewStringValue(s.ns),
	}})
	istio := map[string]*structpb.Value{"services": structpb.NewListValue(&structpb.ListValue{Values: []*structpb.Value{svc}})}
	if subset != "" {
		istio["subset"] = structpb.NewStringValue(subset)
		istio["config"] = structpb.NewStringValue(fmt.Sprintf("/apis/networking.istio.io/v1/namespaces/%s/destination-rule/%s", s.ns, s.name))
	}
	c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: istio}}}
	return c
}

// loadAssignment builds the endpoints of service i's subset k on port: one
// locality-less group whose weight is the sum of its endpoints', like istiod's.
func loadAssignment(name string, s service, i, port, k int, o Options) *endpointv3.ClusterLoadAssignment {
	group := &endpointv3.LocalityLbEndpoints{Locality: &corev3.Locality{}}
	version := subsetName(k)
	if version == "" {
		version = "v1"
	}
	for j := 0; j < o.EndpointsPerCluster; j++ {
		idx := uint32((i*(o.Subsets+1)+k)*o.EndpointsPerCluster + j + 1)
		group.LbEndpoints = append(group.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address:       ipv4(10<<24 | idx&0xffffff),
					PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
				}}},
			}},
			Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": {Fields: map[string]*structpb.Value{
				"workload": structpb.NewStringValue(fmt.Sprintf("%s-%d-%d;%s;%s;%s;Kubernetes", s.name, k, j, s.ns, s.name, version)),
			}}}},
			LoadBalancingWeight: wrapU32(1),
		})
	}
	group.LoadBalancingWeight = wrapU32(uint32(o.EndpointsPerCluster))
	return &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{group}}
}

func ipv4(a uint32) string {
	return fmt.Sprintf("%d.%d.%d.%d", a>>24, a>>16&0xff, a>>8&0xff, a&0xff)
}

func wrapBool(b bool) *wrapperspb.BoolValue    { return wrapperspb.Bool(b) }
func wrapU32(v uint32) *wrapperspb.UInt32Value { return wrapperspb.UInt32(v) }

func mustUnmarshal(a *anypb.Any, m proto.Message) {
	if err := a.UnmarshalTo(m); err != nil {
		panic(fmt.Sprintf("meshgen: template %s: %v", a.GetTypeUrl(), err))
	}
}

// mustAny marshals deterministically, so that generated meshes are byte-identical.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic(fmt.Sprintf("meshgen: %v", err))
	}
	return a
}
