package upstream

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func istiod(t testing.TB) *resource.State {
	t.Helper()
	r, err := dump.LoadDir("../../../testdata/istiod/sotw")
	if err != nil {
		t.Fatal(err)
	}
	return r.Snapshot()
}

// msgOf decodes a snapshot's cluster.
func msgOf(t testing.TB, src *resource.Cluster) *clusterv3.Cluster {
	t.Helper()
	c, err := src.Message()
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// Every cluster istiod sent builds into a schema-valid upstream, and the shapes of
// the interesting ones are what the feature table says.
func TestIstiodClusters(t *testing.T) {
	snap := istiod(t)
	built := map[string]*apisix.Upstream{}
	reports := map[string][]report.Entry{}
	for name, src := range snap.Clusters {
		c := msgOf(t, src)
		u, es := Build(c.GetName(), c, snap.Endpoints[resource.EDSName(c)])
		mustValid(t, u)
		if rs := Report(Options{}, c.GetName(), c, snap.Endpoints[resource.EDSName(c)]); !slices.Equal(rs, es) {
			t.Errorf("%s: Report %v, Build %v", name, rs, es)
		}
		built[name], reports[name] = u, es
		// The translator builds from the cluster's shared shape and its name: the
		// same upstream and findings.
		su, ses := Build(name, src.Shape(), snap.Endpoints[src.EDSName()])
		if string(mustValid(t, su)) != string(mustValid(t, u)) || !slices.Equal(ses, es) || Special(name, src.Shape()) != Special(name, c) {
			t.Errorf("%s: built from the shape: %+v %v, from the message: %+v %v", name, su, ses, u, es)
		}
		// These endpoints carry no transport socket match metadata (no sidecars):
		// Envoy reaches them in plaintext despite the auto-mTLS match, and so does
		// APISIX (tls_test.go has endpoints with sidecars).
		if u.Scheme != "" || hasEntry(es, "transport_socket_matches["+"tlsMode-istio]", report.Unsupported, "") {
			t.Errorf("%s: endpoints without sidecars are not plaintext: scheme %q, %v", name, u.Scheme, es)
		}
		for _, n := range u.Nodes {
			if n.Metadata != nil {
				t.Errorf("%s: node %s has metadata %v", name, n.Host, n.Metadata)
			}
		}
	}
	reviews := built["outbound|9080||reviews.default.svc.cluster.local"]
	want := &apisix.Upstream{
		ID:      ID("outbound|9080||reviews.default.svc.cluster.local"),
		Name:    "outbound|9080||reviews.default.svc.cluster.local",
		Type:    "roundrobin",
		Labels:  map[string]string{labelLB: "ring_hash"},
		Retries: intPtr(0),
		Timeout: &apisix.Timeout{Connect: 0.25, Send: NoTimeout, Read: NoTimeout},
		Nodes: []apisix.Node{
			{Host: "127.0.0.21", Port: 9080, Weight: 1},
			{Host: "127.0.0.22", Port: 9080, Weight: 1},
			{Host: "127.0.0.23", Port: 9080, Weight: 2},
		},
		KeepalivePool: &apisix.KeepalivePool{IdleTimeout: 30, Requests: 10},
	}
	reviews.Checks = nil // checked in TestOutlierDetection
	if diff := cmp.Diff(want, reviews); diff != "" {
		t.Errorf("reviews upstream (-want +got):\n%s", diff)
	}
	if !hasEntry(reports["outbound|9080|v1|reviews.default.svc.cluster.local"], "circuit_breakers", report.Unsupported, "max_connections=100") {
		t.Errorf("reviews v1: circuit breakers not reported: %v", reports["outbound|9080|v1|reviews.default.svc.cluster.local"])
	}
	if pp := built["outbound|9080||productpage.default.svc.cluster.local"]; pp.Type != "roundrobin" || pp.Timeout.Connect != 10 {
		t.Errorf("productpage: type %s connect %v", pp.Type, pp.Timeout.Connect)
	}
	if bh := built["BlackHoleCluster"]; len(bh.Nodes) != 0 || len(reports["BlackHoleCluster"]) != 0 {
		t.Errorf("BlackHoleCluster: %+v %v", bh, reports["BlackHoleCluster"])
	}
	// The original-destination clusters: no nodes (the route's plugin sets the
	// connection's original destination), nothing unsupported about them.
	for _, name := range []string{"PassthroughCluster", "InboundPassthroughCluster", "inbound|19080||"} {
		if u := built[name]; len(u.Nodes) != 0 || u.Timeout.Connect != 10 {
			t.Errorf("%s: %+v, want no nodes and istiod's connect timeout", name, u)
		}
		for _, e := range reports[name] {
			if e.Severity == report.Unsupported {
				t.Errorf("%s: %v", name, e)
			}
		}
	}
	for name, want := range map[string]OriginalDstConf{
		"PassthroughCluster":        {},
		"InboundPassthroughCluster": {Bind: "127.0.0.6"},
		"inbound|19080||":           {Bind: "127.0.0.6"},
	} {
		if got, field, reason := OriginalDstConfig(msgOf(t, snap.Clusters[name])); got != want || reason != "" {
			t.Errorf("OriginalDstConfig(%s) = %+v (%s: %s), want %+v", name, got, field, reason, want)
		}
	}
}

// What of an ORIGINAL_DST cluster the original-destination plugin reproduces (source
// addresses by family, a port override), and what it cannot, which is reported.
func TestOriginalDstConfig(t *testing.T) {
	sock := func(ip string, port uint32) *corev3.SocketAddress {
		return &corev3.SocketAddress{Address: ip, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}
	}
	odst := func(bc *corev3.BindConfig, lb *clusterv3.Cluster_OriginalDstLbConfig) *clusterv3.Cluster {
		c := &clusterv3.Cluster{Name: "inbound|80||", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}, UpstreamBindConfig: bc}
		if lb != nil {
			c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: lb}
		}
		return c
	}
	//lint:ignore SA1019 deprecated, but Envoy still reads it; so must amesh.
	additional := &corev3.BindConfig{SourceAddress: sock("::6", 0), AdditionalSourceAddresses: []*corev3.SocketAddress{sock("127.0.0.6", 0), sock("127.0.0.7", 0)}}
	for _, tc := range []struct {
		name   string
		c      *clusterv3.Cluster
		want   OriginalDstConf
		reason string // a part of it; "" when supported
	}{
		{"no bind", odst(nil, nil), OriginalDstConf{}, ""},
		{"istio's inbound", odst(&corev3.BindConfig{SourceAddress: sock("127.0.0.6", 0)}, nil), OriginalDstConf{Bind: "127.0.0.6"}, ""},
		{"dual stack", odst(&corev3.BindConfig{SourceAddress: sock("127.0.0.6", 0),
			ExtraSourceAddresses: []*corev3.ExtraSourceAddress{{Address: sock("::6", 0)}}}, nil), OriginalDstConf{Bind: "127.0.0.6", Bind6: "::6"}, ""},
		{"ipv6 first, deprecated additional", odst(additional, nil), OriginalDstConf{Bind: "127.0.0.6", Bind6: "::6"}, ""},
		{"port override", odst(nil, &clusterv3.Cluster_OriginalDstLbConfig{UpstreamPortOverride: wrapperspb.UInt32(8080)}), OriginalDstConf{Port: 8080}, ""},
		{"header", odst(nil, &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}), OriginalDstConf{}, "request header"},
		{"fixed source port", odst(&corev3.BindConfig{SourceAddress: sock("127.0.0.6", 1234)}, nil), OriginalDstConf{}, "source port"},
		{"freebind", odst(&corev3.BindConfig{SourceAddress: sock("127.0.0.6", 0), Freebind: wrapperspb.Bool(true)}, nil), OriginalDstConf{}, "freebind"},
		{"not an address", odst(&corev3.BindConfig{SourceAddress: sock("localhost", 0)}, nil), OriginalDstConf{}, "not an IP address"},
		{"not ORIGINAL_DST", &clusterv3.Cluster{Name: "PassthroughCluster"}, OriginalDstConf{}, "not of type ORIGINAL_DST"},
	} {
		got, field, reason := OriginalDstConfig(tc.c)
		if tc.reason == "" && (got != tc.want || reason != "") {
			t.Errorf("%s: %+v (%s: %s), want %+v", tc.name, got, field, reason, tc.want)
		}
		if tc.reason != "" {
			if !strings.Contains(reason, tc.reason) || field == "" {
				t.Errorf("%s: %s: %q, want a reason with %q", tc.name, field, reason, tc.reason)
			}
			// The cluster's report says so too.
			if _, es := Build(tc.c.GetName(), tc.c, nil); !hasEntry(es, field, report.Unsupported, "fail closed") {
				t.Errorf("%s: Build reports %v", tc.name, es)
			}
		}
	}
}

func TestSpecial(t *testing.T) {
	for _, tc := range []struct {
		c    *clusterv3.Cluster
		want SpecialKind
	}{
		{&clusterv3.Cluster{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}, Passthrough},
		{&clusterv3.Cluster{Name: "BlackHoleCluster"}, BlackHole},
		{&clusterv3.Cluster{Name: "InboundPassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}, InboundPassthrough},
		{&clusterv3.Cluster{Name: "InboundPassthroughClusterIpv6"}, InboundPassthrough},
		{&clusterv3.Cluster{Name: "inbound|19080||", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}, OriginalDst},
		{&clusterv3.Cluster{Name: "outbound|80||a", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}}, None},
	} {
		if got := Special(tc.c.GetName(), tc.c); got != tc.want {
			t.Errorf("Special(%s) = %v, want %v", tc.c.GetName(), got, tc.want)
		}
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{ServiceName: name},
	}
}

func TestLBPolicy(t *testing.T) {
	for _, tc := range []struct {
		policy   clusterv3.Cluster_LbPolicy
		typ      string
		hashing  bool
		reported bool
	}{
		{clusterv3.Cluster_ROUND_ROBIN, "roundrobin", false, false},
		{clusterv3.Cluster_LEAST_REQUEST, "roundrobin", false, true}, // see TestLeastRequestMapping
		{clusterv3.Cluster_RANDOM, "roundrobin", false, true},
		{clusterv3.Cluster_RING_HASH, "roundrobin", true, false},
		{clusterv3.Cluster_MAGLEV, "roundrobin", true, true},
	} {
		t.Run(tc.policy.String(), func(t *testing.T) {
			c := edsCluster("c")
			c.LbPolicy = tc.policy
			u, es := Build(c.GetName(), c, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, 0))))
			mustValid(t, u)
			if u.Type != tc.typ || Hashing(u) != tc.hashing {
				t.Errorf("type %s hashing %v, want %s %v", u.Type, Hashing(u), tc.typ, tc.hashing)
			}
			if got := hasEntry(es, "lb_policy", report.Approximated, ""); got != tc.reported {
				t.Errorf("reported %v, want %v: %v", got, tc.reported, es)
			}
		})
	}
	// load_balancing_policy: the first supported policy wins.
	c := edsCluster("c")
	c.LoadBalancingPolicy = &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "x", TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/some.Unknown"}}},
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "lr", TypedConfig: &anypb.Any{TypeUrl: policyLeastRequest}}},
		{TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: "rr", TypedConfig: &anypb.Any{TypeUrl: policyRoundRobin}}},
	}}
	if u, es := Build(c.GetName(), c, nil); u.Type != "roundrobin" || !hasEntry(es, "lb_policy", report.Approximated, "LEAST_REQUEST") {
		t.Errorf("load_balancing_policy: type %s (%v), want LEAST_REQUEST's roundrobin", u.Type, es)
	}
}

func TestConnectTimeout(t *testing.T) {
	for _, tc := range []struct {
		d    *durationpb.Duration
		want float64
	}{
		{nil, 5},
		{durationpb.New(250_000_000), 0.25},
		{&durationpb.Duration{Seconds: 1, Nanos: 1_000_000}, 1.001},
		{&durationpb.Duration{}, 5},
		// Envoy reads whole milliseconds; nginx holds at most 2^31-1 of them.
		{&durationpb.Duration{Nanos: 1}, 0.001},
		{&durationpb.Duration{Seconds: 2147483, Nanos: 647_000_000}, 2147483.647},
		{&durationpb.Duration{Seconds: 2147483, Nanos: 648_000_000}, MaxTimeout},
		{&durationpb.Duration{Seconds: 9223372035}, MaxTimeout},
	} {
		c := edsCluster("c")
		c.ConnectTimeout = tc.d
		u, rep := Build(c.GetName(), c, nil)
		mustValid(t, u)
		if u.Timeout.Connect != tc.want {
			t.Errorf("connect_timeout %v: got %v, want %v", tc.d, u.Timeout.Connect, tc.want)
		}
		clamped := tc.d.GetSeconds() > 2147483 || tc.d.GetSeconds() == 2147483 && tc.d.GetNanos() >= 648_000_000
		reported := false
		for _, e := range rep {
			reported = reported || e.Field == "connect_timeout" && strings.Contains(e.Message, "exceeds what nginx holds")
		}
		if reported != clamped {
			t.Errorf("connect_timeout %v: clamping reported %v, want %v (%v)", tc.d, reported, clamped, rep)
		}
	}
}

func httpOpts(t *testing.T, o *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	a, err := anypb.New(o)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{httpOptionsKey: a}
}

func TestHTTPProtocolOptions(t *testing.T) {
	c := edsCluster("c")
	c.TypedExtensionProtocolOptions = httpOpts(t, &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout:              durationpb.New(1_500_000_000),
			MaxRequestsPerConnection: wrapperspb.UInt32(7),
			MaxConnectionDuration:    durationpb.New(60e9),
		},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
	u, es := Build(c.GetName(), c, nil)
	mustValid(t, u)
	if diff := cmp.Diff(&apisix.KeepalivePool{IdleTimeout: 1.5, Requests: 7}, u.KeepalivePool); diff != "" {
		t.Errorf("keepalive_pool (-want +got):\n%s", diff)
	}
	if !hasEntry(es, "typed_extension_protocol_options.common_http_protocol_options", report.Unsupported, "max_connection_duration") {
		t.Errorf("max_connection_duration not reported: %v", es)
	}
	if !hasEntry(es, "typed_extension_protocol_options.explicit_http_config", report.Approximated, "HTTP/2") {
		t.Errorf("HTTP/2 upstream not reported: %v", es)
	}
	// Only max requests: Envoy's default idle timeout (1 h) applies.
	c.TypedExtensionProtocolOptions = httpOpts(t, &httpv3.HttpProtocolOptions{CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(3)}})
	if u, _ := Build(c.GetName(), c, nil); u.KeepalivePool == nil || u.KeepalivePool.IdleTimeout != 3600 || u.KeepalivePool.Requests != 3 {
		t.Errorf("keepalive_pool %+v", u.KeepalivePool)
	}
	c.TypedExtensionProtocolOptions = nil
	if u, es := Build(c.GetName(), c, nil); u.KeepalivePool != nil || len(es) != 1 { // only the missing endpoints
		t.Errorf("no options: keepalive_pool %+v, entries %v", u.KeepalivePool, es)
	}
}

func TestCircuitBreakers(t *testing.T) {
	c := edsCluster("c")
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(unlimited), MaxRequests: wrapperspb.UInt32(unlimited),
	}}}
	if _, es := Build(c.GetName(), c, nil); hasEntry(es, "circuit_breakers", report.Unsupported, "") {
		t.Errorf("unlimited thresholds reported: %v", es)
	}
	c.CircuitBreakers.Thresholds[0].MaxPendingRequests = wrapperspb.UInt32(64)
	if _, es := Build(c.GetName(), c, nil); !hasEntry(es, "circuit_breakers", report.Unsupported, "max_pending_requests=64") {
		t.Errorf("finite threshold not reported: %v", es)
	}
}

func TestOutlierDetection(t *testing.T) {
	c := edsCluster("c")
	c.OutlierDetection = &clusterv3.OutlierDetection{
		Consecutive_5Xx:                    wrapperspb.UInt32(3),
		Interval:                           durationpb.New(2_500_000_000),
		BaseEjectionTime:                   durationpb.New(30e9),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(2),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
	}
	u, es := Build(c.GetName(), c, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, 0))))
	mustValid(t, u)
	if u.Checks == nil || u.Checks.Active == nil || u.Checks.Passive == nil {
		t.Fatalf("checks %+v", u.Checks)
	}
	pu := u.Checks.Passive["unhealthy"].(map[string]any)
	if pu["http_failures"] != uint32(3) || len(pu["http_statuses"].([]any)) != len(statuses5xx) {
		t.Errorf("passive unhealthy %v", pu)
	}
	ah := u.Checks.Active["healthy"].(map[string]any)
	au := u.Checks.Active["unhealthy"].(map[string]any)
	if u.Checks.Active["type"] != "tcp" || ah["interval"] != 30 || au["interval"] != 3 {
		t.Errorf("active %v", u.Checks.Active)
	}
	if !hasEntry(es, "outlier_detection", report.Approximated, "consecutive_gateway_failure=2") {
		t.Errorf("gateway threshold not reported: %v", es)
	}
	if hasEntry(es, "outlier_detection", report.Approximated, "success-rate") {
		t.Errorf("success rate disabled but reported: %v", es)
	}
	// Only gateway failures enforced.
	c.OutlierDetection = &clusterv3.OutlierDetection{
		EnforcingConsecutive_5Xx: wrapperspb.UInt32(0), EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		EnforcingSuccessRate: wrapperspb.UInt32(0),
	}
	u, _ = Build(c.GetName(), c, nil)
	mustValid(t, u)
	pu = u.Checks.Passive["unhealthy"].(map[string]any)
	if fmt.Sprint(pu["http_statuses"]) != "[502 503 504]" || pu["http_failures"] != uint32(5) {
		t.Errorf("gateway-only passive %v", pu)
	}
	// Nothing enforced: no checks, reported.
	c.OutlierDetection = &clusterv3.OutlierDetection{EnforcingConsecutive_5Xx: wrapperspb.UInt32(0)}
	u, es = Build(c.GetName(), c, nil)
	if u.Checks != nil || !hasEntry(es, "outlier_detection", report.Unsupported, "success-rate") {
		t.Errorf("checks %+v entries %v", u.Checks, es)
	}
}

func TestEndpoints(t *testing.T) {
	H, U, D, X := corev3.HealthStatus_HEALTHY, corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_DEGRADED, corev3.HealthStatus_UNHEALTHY
	for _, tc := range []struct {
		name     string
		weighted bool // locality_weighted_lb_config
		cla      *resource.LoadAssignment
		want     []apisix.Node
		field    string // a report entry expected on this field ("" none)
	}{
		{"health filter", false, cla("c", group(0, 0,
			ep("10.0.0.1", 80, 0, H), ep("10.0.0.2", 80, 0, U), ep("10.0.0.3", 80, 0, X),
			ep("10.0.0.4", 80, 0, corev3.HealthStatus_DRAINING), ep("10.0.0.5", 80, 0, corev3.HealthStatus_TIMEOUT))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1}}, ""},
		{"degraded reported", false, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, H), ep("10.0.0.2", 80, 0, D))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}}, "lb_endpoints.health_status"},
		{"all unhealthy: no nodes", false, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, X))), []apisix.Node{}, ""},
		{"endpoint weights reduced", false, cla("c", group(0, 4, ep("10.0.0.1", 80, 2, H), ep("10.0.0.2", 80, 4, H))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 2}}, ""},
		{"locality weights ignored without locality lb", false, cla("c",
			group(0, 1, ep("10.0.0.1", 80, 1, H)), group(0, 3, ep("10.0.0.2", 80, 1, H))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1}}, ""},
		{"locality shares", true, cla("c",
			group(0, 1, ep("10.0.0.1", 80, 1, H), ep("10.0.0.2", 80, 1, H)),
			group(0, 3, ep("10.0.0.3", 80, 1, H))),
			// locality 1: 1/4 split in two; locality 2: 3/4 → 1:1:6
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1}, {Host: "10.0.0.3", Port: 80, Weight: 6}}, ""},
		{"locality weight 0 gets nothing", true, cla("c",
			group(0, 0, ep("10.0.0.1", 80, 1, H)), group(0, 2, ep("10.0.0.2", 80, 5, H))),
			[]apisix.Node{{Host: "10.0.0.2", Port: 80, Weight: 1}}, ""},
		{"priorities", false, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, H)), group(2, 0, ep("10.0.0.2", 80, 0, H))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}, {Host: "10.0.0.2", Port: 80, Weight: 1, Priority: -2}}, "endpoints.priority"},
		{"bad addresses", false, cla("c", group(0, 0, ep("10.0.0.1", 80, 0, H), ep("10.0.0.2", 0, 0, H), ep("example.com", 80, 0, H), ep("fe80::1%eth0", 80, 0, H))),
			[]apisix.Node{{Host: "10.0.0.1", Port: 80, Weight: 1}}, "lb_endpoints.endpoint.address"},
		{"ipv6", false, cla("c", group(0, 0, ep("2001:db8::1", 80, 0, H))),
			[]apisix.Node{{Host: "2001:db8::1", Port: 80, Weight: 1}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := edsCluster("c")
			if tc.weighted {
				c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
					LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
			}
			u, es := Build(c.GetName(), c, tc.cla)
			mustValid(t, u)
			if diff := cmp.Diff(tc.want, u.Nodes); diff != "" {
				t.Errorf("nodes (-want +got):\n%s", diff)
			}
			if tc.field != "" {
				found := false
				for _, e := range es {
					found = found || e.Field == tc.field
				}
				if !found {
					t.Errorf("no report entry on %s: %v", tc.field, es)
				}
			}
			if tc.field == "" && len(es) != 0 {
				t.Errorf("unexpected report entries: %v", es)
			}
		})
	}
}

func TestMissingEndpoints(t *testing.T) {
	u, es := Build("c", edsCluster("c"), nil)
	b := mustValid(t, u)
	if len(u.Nodes) != 0 || !hasEntry(es, "", report.Invalid, "no ClusterLoadAssignment") {
		t.Errorf("upstream %s, entries %v", b, es)
	}
	// The encoding must be an empty list: APISIX's schema rejects null.
	if want := `"nodes":[]`; !strings.Contains(string(b), want) {
		t.Errorf("%s does not contain %s", b, want)
	}
}

func TestStaticAndDNS(t *testing.T) {
	la := claProto("", group(0, 0, ep("10.0.0.1", 80, 0, 0)))
	st := &clusterv3.Cluster{Name: "static", LoadAssignment: la}
	if u, es := Build(st.GetName(), st, nil); len(u.Nodes) != 1 || len(es) != 0 {
		t.Errorf("STATIC: %+v %v", u.Nodes, es)
	}
	dnsLA := claProto("", group(0, 0, ep("svc.example.com", 443, 0, 0)))
	strict := &clusterv3.Cluster{Name: "strict", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}, LoadAssignment: dnsLA}
	u, es := Build(strict.GetName(), strict, nil)
	mustValid(t, u)
	if len(u.Nodes) != 1 || u.Nodes[0].Host != "svc.example.com" || len(es) != 0 {
		t.Errorf("STRICT_DNS: %+v %v", u.Nodes, es)
	}
	logical := &clusterv3.Cluster{Name: "logical", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}, LoadAssignment: dnsLA}
	if u, es := Build(logical.GetName(), logical, nil); len(u.Nodes) != 1 || !hasEntry(es, "type", report.Approximated, "LOGICAL_DNS") {
		t.Errorf("LOGICAL_DNS: %+v %v", u.Nodes, es)
	}
	// A STATIC cluster must not take host names (Envoy rejects them too).
	if u, es := Build("s", &clusterv3.Cluster{Name: "s", LoadAssignment: dnsLA}, nil); len(u.Nodes) != 0 || len(es) != 1 {
		t.Errorf("STATIC with a name: %+v %v", u.Nodes, es)
	}
}

// Building twice gives byte-identical output, and the input is not modified.
func TestDeterministic(t *testing.T) {
	snap := istiod(t)
	for name, src := range snap.Clusters {
		c := msgOf(t, src)
		a, ea := Build(c.GetName(), c, snap.Endpoints[resource.EDSName(c)])
		b, eb := Build(c.GetName(), c, snap.Endpoints[resource.EDSName(c)])
		if string(mustValid(t, a)) != string(mustValid(t, b)) || fmt.Sprint(ea) != fmt.Sprint(eb) {
			t.Errorf("%s: two builds differ", name)
		}
	}
}
