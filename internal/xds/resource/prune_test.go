package resource

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func tlsCluster(sni string) *clusterv3.Cluster {
	tc, err := anypb.New(&tlsv3.UpstreamTlsContext{Sni: sni})
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

func TestPruneMarksTransportSocket(t *testing.T) {
	in := NewInterner()
	c := tlsCluster("outbound_.9080_._.a")
	pruneShared(c, in)
	if c.GetMetadata() != nil || c.GetAltStatName() != "" || c.GetTransportSocketMatches()[0].GetMatch() != nil {
		t.Errorf("metadata, alt_stat_name or match kept: %v", c)
	}
	m := c.GetTransportSocketMatches()[0]
	if m.GetName() != "tlsMode-istio" || m.GetTransportSocket().GetName() != "envoy.transport_sockets.tls" {
		t.Errorf("names lost: %v", m)
	}
	a := m.GetTransportSocket().GetTypedConfig()
	if !a.MessageIs(&tlsv3.UpstreamTlsContext{}) || !IsMarker(a) {
		t.Fatalf("typed_config is not a marker of the TLS type: %v", a)
	}
	if _, err := a.UnmarshalNew(); err == nil {
		t.Error("a marker decoded without error; a reader of a pruned payload must fail loudly")
	}

	// Pruning is idempotent, keeps equal payloads equal and different ones different.
	again := proto.Clone(c).(*clusterv3.Cluster)
	pruneShared(again, in)
	if !proto.Equal(c, again) {
		t.Error("pruning twice changed the message")
	}
	same := tlsCluster("outbound_.9080_._.a")
	pruneShared(same, in)
	if !proto.Equal(c, same) {
		t.Error("equal clusters differ after pruning")
	}
	// The TLS payload is not amesh's business: clusters that differ only in it are
	// equal once pruned, and share their transport socket matches.
	other := tlsCluster("outbound_.9080_._.b")
	pruneShared(other, in)
	if !proto.Equal(c, other) || &c.GetTransportSocketMatches()[0] != &other.GetTransportSocketMatches()[0] {
		t.Error("clusters differing only in their TLS context do not share their pruned transport socket matches")
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
