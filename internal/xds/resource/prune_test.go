package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func tlsCluster(sni string) *clusterv3.Cluster {
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: sni, CommonTlsContext: &tlsv3.CommonTlsContext{
		AlpnProtocols: []string{"istio-peer-exchange", "istio"},
		// istio-agent's socket, as istiod configures the workload certificate.
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default",
			SdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{
				ApiConfigSource: &corev3.ApiConfigSource{ApiType: corev3.ApiConfigSource_GRPC}}}}},
	}})
	if err != nil {
		panic(err)
	}
	match, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
	return &clusterv3.Cluster{
		Name:        "c",
		AltStatName: "c;",
		Metadata:    &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": match}},
		TransportSocketMatches: []*clusterv3.Cluster_TransportSocketMatch{{
			Name:            "tlsMode-istio",
			Match:           match,
			TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tc}},
		}},
	}
}

// pruneShared prunes m as the client's decoder does, sharing parts through in.
func pruneShared(m proto.Message, in *Interner) { kindOfValue(m).prune(m, in) }

// A TLS transport socket keeps what translation reads: the match criteria, the SNI (as
// the rule ClusterSNIRule when it is the one derived from the cluster's name) and the
// rest of the TLS context but for the config sources of its SDS secrets. Other
// transport sockets are marked.
func TestPruneTrimsTransportSocket(t *testing.T) {
	in := NewInterner()
	c := tlsCluster("outbound_.9080_._.a")
	c.Name = "outbound|9080||a"
	pruneShared(c, in)
	if c.GetMetadata() != nil || c.GetAltStatName() != "" {
		t.Errorf("metadata or alt_stat_name kept: %v", c)
	}
	m := c.GetTransportSocketMatches()[0]
	if m.GetName() != "tlsMode-istio" || m.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" ||
		m.GetMatch().GetFields()["tlsMode"].GetStringValue() != "istio" {
		t.Errorf("names or match lost: %v", m)
	}
	tls := &tlsv3.UpstreamTlsContext{}
	if err := m.GetTransportSocket().GetTypedConfig().UnmarshalTo(tls); err != nil {
		t.Fatal(err)
	}
	if tls.GetSni() != ClusterSNIRule || TLSContextSNI(c.GetName(), tls.GetSni()) != "outbound_.9080_._.a" {
		t.Errorf("SNI %q, restored %q", tls.GetSni(), TLSContextSNI(c.GetName(), tls.GetSni()))
	}
	sds := tls.GetCommonTlsContext().GetTlsCertificateSdsSecretConfigs()
	if len(sds) != 1 || sds[0].GetName() != "default" || sds[0].GetSdsConfig() != nil ||
		tls.GetCommonTlsContext().GetAlpnProtocols()[0] != "istio-peer-exchange" {
		t.Errorf("SDS secret or ALPN not kept as translation reads them: %v", tls)
	}

	// Pruning is idempotent, keeps equal payloads equal and different ones different.
	again := proto.Clone(c).(*clusterv3.Cluster)
	pruneShared(again, in)
	if !proto.Equal(c, again) {
		t.Error("pruning twice changed the message")
	}
	// Clusters whose SNIs are derived from their names share their transport socket
	// matches; an SNI of its own is kept as it is.
	other := tlsCluster("outbound_.9080_._.b")
	other.Name = "outbound|9080||b"
	pruneShared(other, in)
	if &c.GetTransportSocketMatches()[0] != &other.GetTransportSocketMatches()[0] {
		t.Error("clusters whose SNIs follow their names do not share their pruned transport socket matches")
	}
	own := tlsCluster("b.example")
	own.Name = "outbound|9080||a"
	pruneShared(own, in)
	if err := own.GetTransportSocketMatches()[0].GetTransportSocket().GetTypedConfig().UnmarshalTo(tls); err != nil || tls.GetSni() != "b.example" {
		t.Errorf("an SNI of its own became %q (%v)", tls.GetSni(), err)
	}

	raw := &clusterv3.Cluster{Name: "r", TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
		ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAnyOf(&rawv3.RawBuffer{})}}}
	pruneShared(raw, in)
	if a := raw.GetTransportSocket().GetTypedConfig(); !a.MessageIs(&rawv3.RawBuffer{}) || !IsMarker(a) {
		t.Errorf("a raw_buffer socket is not a marker of its type: %v", a)
	}
}

func mustAnyOf(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

// An endpoint's metadata is pruned to its transport socket match.
func TestPruneKeepsEndpointSocketMatch(t *testing.T) {
	match, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
	workload, _ := structpb.NewStruct(map[string]any{"workload": "w"})
	c := &clusterv3.Cluster{Name: "s", LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: "s",
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{
			{Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": workload, SocketMatchKey: match}}},
			{Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{"istio": workload}}},
		}}}}}
	pruneShared(c, nil)
	eps := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()
	if md := eps[0].GetMetadata().GetFilterMetadata(); len(md) != 1 || !proto.Equal(md[SocketMatchKey], match) {
		t.Errorf("first endpoint's metadata: %v", md)
	}
	if eps[1].GetMetadata() != nil {
		t.Errorf("second endpoint's metadata: %v", eps[1].GetMetadata())
	}
}

// Per-filter configs of filters amesh only reports keep a digest: a changed config is
// still a changed route.
func TestPruneMarkerKeepsDifference(t *testing.T) {
	mk := func(v string) *routev3.RouteConfiguration {
		a, err := anypb.New(wrapperspb.String(v))
		if err != nil {
			t.Fatal(err)
		}
		return &routev3.RouteConfiguration{Name: "r", TypedPerFilterConfig: map[string]*anypb.Any{"istio.stats": a}}
	}
	a, a2, b := mk("x"), mk("x"), mk("y")
	for _, m := range []proto.Message{a, a2, b} {
		Prune(m)
	}
	if !IsMarker(a.GetTypedPerFilterConfig()["istio.stats"]) {
		t.Fatalf("per-filter config not marked: %v", a)
	}
	if !proto.Equal(a, a2) || proto.Equal(a, b) {
		t.Error("markers do not preserve (in)equality of the configs")
	}
}

func TestPruneSharesEqualLeaves(t *testing.T) {
	mk := func(w uint32) *routev3.RouteConfiguration {
		return &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Routes: []*routev3.Route{{
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{
				WeightedClusters: &routev3.WeightedCluster{Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "a", Weight: wrapperspb.UInt32(w)}, {Name: "b", Weight: wrapperspb.UInt32(1)},
				}},
			}}},
		}}}}}
	}
	weights := func(rc *routev3.RouteConfiguration) []*routev3.WeightedCluster_ClusterWeight {
		return rc.GetVirtualHosts()[0].GetRoutes()[0].GetRoute().GetWeightedClusters().GetClusters()
	}
	a, b := mk(1), mk(7)
	in := NewInterner()
	pruneShared(a, in)
	pruneShared(b, in)
	wa, wb := weights(a), weights(b)
	if wa[0].GetWeight() != wb[1].GetWeight() {
		t.Error("equal weights of two resources are not shared")
	}
	if wb[0].GetWeight().GetValue() != 7 || wb[1].GetWeight().GetValue() != 1 {
		t.Errorf("interning changed values: %v", b)
	}
}

// A retry policy every forwarding route has moves to the virtual host (which Envoy
// applies to routes without their own); anything else that would change which policy
// a route uses keeps the routes as they are.
func TestPruneHoistsSharedRetryPolicy(t *testing.T) {
	policy := func(n uint32) *routev3.RetryPolicy {
		return &routev3.RetryPolicy{RetryOn: "connect-failure", NumRetries: wrapperspb.UInt32(n)}
	}
	forward := func(rp *routev3.RetryPolicy) *routev3.Route {
		return &routev3.Route{Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, RetryPolicy: rp}}}
	}
	redirect := &routev3.Route{Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{HostRedirect: "h"}}}
	cases := []struct {
		name   string
		vh     *routev3.VirtualHost
		hoist  bool
		wantVH *routev3.RetryPolicy
	}{
		{"same policy everywhere", &routev3.VirtualHost{Routes: []*routev3.Route{forward(policy(2)), redirect, forward(policy(2))}}, true, policy(2)},
		{"replaces a virtual host policy no route used", &routev3.VirtualHost{RetryPolicy: policy(7), Routes: []*routev3.Route{forward(policy(2)), forward(policy(2))}}, true, policy(2)},
		{"a route inherits the virtual host's", &routev3.VirtualHost{RetryPolicy: policy(7), Routes: []*routev3.Route{forward(policy(2)), forward(nil), forward(policy(2))}}, false, policy(7)},
		{"a route without policy", &routev3.VirtualHost{Routes: []*routev3.Route{forward(policy(2)), forward(nil)}}, false, nil},
		{"different policies", &routev3.VirtualHost{Routes: []*routev3.Route{forward(policy(2)), forward(policy(3))}}, false, nil},
		{"one forwarding route", &routev3.VirtualHost{Routes: []*routev3.Route{forward(policy(2)), redirect}}, false, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			before := proto.Clone(c.vh).(*routev3.VirtualHost)
			pruneVirtualHost(c.vh, NewInterner())
			if !proto.Equal(c.vh.GetRetryPolicy(), c.wantVH) {
				t.Errorf("virtual host policy = %v, want %v", c.vh.GetRetryPolicy(), c.wantVH)
			}
			for i, r := range c.vh.GetRoutes() {
				want := before.GetRoutes()[i].GetRoute().GetRetryPolicy()
				if c.hoist {
					want = nil
				}
				if got := r.GetRoute().GetRetryPolicy(); !proto.Equal(got, want) {
					t.Errorf("route %d policy = %v, want %v", i, got, want)
				}
			}
		})
	}
}
