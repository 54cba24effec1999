package translate

import (
	"bytes"
	"encoding/binary"
	"math/rand"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// bytesSource is a rand.Source that replays fuzz bytes, so the random generators of
// the differential test become fuzz-driven: each mutation of the input changes the
// structure they build. Once the bytes run out it continues with splitmix64 from a
// fixed state (a constant stream would hang rand's rejection sampling).
type bytesSource struct {
	b     []byte
	state uint64
}

func (s *bytesSource) Int63() int64 {
	if len(s.b) == 0 {
		s.state += 0x9e3779b97f4a7c15
		z := s.state
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		return int64((z ^ z>>31) >> 1)
	}
	var w [8]byte
	n := copy(w[:], s.b)
	s.b = s.b[n:]
	return int64(binary.LittleEndian.Uint64(w[:]) >> 1)
}

func (s *bytesSource) Seed(int64) {}

// fuzzSnapshot builds listeners on ports 80 and 81 with HTTP filters in front of the
// router (fuzzGuards), their route tables (randRC) with the fuzz strings spliced into
// paths, header values, regexes, domains and cluster names, route actions with weights,
// timeouts and retries, per-route filter configs, and the clusters they name (EDS,
// STATIC, ORIGINAL_DST or missing).
func fuzzSnapshot(data []byte, lit, name string) *resource.State {
	rng := rand.New(&bytesSource{b: data})
	rcs := []*routev3.RouteConfiguration{randRC(rng, "80"), randRC(rng, "81")}
	clusters := []string{"c", name, "outbound|80|v1|" + name}
	for _, rc := range rcs {
		for _, vh := range rc.GetVirtualHosts() {
			if rng.Intn(3) == 0 {
				vh.Domains = append(vh.Domains, name)
			}
			for _, r := range vh.GetRoutes() {
				spliceLiteral(rng, r.GetMatch(), lit)
				r.Action = &routev3.Route_Route{Route: fuzzAction(rng, clusters)}
				fuzzPerRoute(rng, &r.TypedPerFilterConfig)
			}
			fuzzPerRoute(rng, &vh.TypedPerFilterConfig)
		}
	}
	snap := snapshotOf([]*listenerv3.Listener{fuzzGuards(rng, 80), fuzzGuards(rng, 81)}, rcs, nil)
	snap.Endpoints = map[string]*resource.LoadAssignment{}
	for _, c := range clusters {
		switch rng.Intn(4) {
		case 0: // missing: routes to it must fail closed
		case 1:
			snap.Clusters[c] = resource.MustCluster(&clusterv3.Cluster{Name: c, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}})
		case 2:
			cl := staticCluster(c)
			cl.LoadAssignment = fuzzCLA(rng, c)
			snap.Clusters[c] = resource.MustCluster(cl)
		default:
			snap.Clusters[c] = resource.MustCluster(&clusterv3.Cluster{Name: c, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				LbPolicy: clusterv3.Cluster_LbPolicy(rng.Intn(8))})
			snap.Endpoints[c] = resource.FromCLA(fuzzCLA(rng, c))
		}
	}
	return snap
}

// denyAllGuard names the HTTP filter fuzzGuards adds to deny every request; no
// per-route config names it, so every route behind it must refuse requests.
const denyAllGuard = "deny-all"

// fuzzGuards is a listener on port whose connection manager has up to three HTTP
// filters of the shapes amesh enforces, fails closed or ignores, and sometimes a
// network RBAC filter in front.
func fuzzGuards(rng *rand.Rand, port uint32) *listenerv3.Listener {
	shapes := []func() *hcmv3.HttpFilter{
		func() *hcmv3.HttpFilter { return rbacFilter(nil) },
		func() *hcmv3.HttpFilter { return rbacFilter(istioDenyPath("/a")) },
		func() *hcmv3.HttpFilter { return rbacFilter(&rbacv3.RBAC{Action: rbacv3.RBAC_DENY}) },
		func() *hcmv3.HttpFilter {
			return httpFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{ShadowRules: &rbacv3.RBAC{}})
		},
		func() *hcmv3.HttpFilter { return httpFilter("envoy.filters.http.ext_authz", &extauthzv3.ExtAuthz{}) },
		func() *hcmv3.HttpFilter {
			return httpFilter("envoy.filters.http.jwt_authn", &jwtv3.JwtAuthentication{Rules: []*jwtv3.RequirementRule{{Match: prefix("/")}}})
		},
		func() *hcmv3.HttpFilter {
			return httpFilter("envoy.filters.http.jwt_authn", &jwtv3.JwtAuthentication{})
		},
		func() *hcmv3.HttpFilter {
			return httpFilter("envoy.filters.http.grpc_stats", &grpcstatsv3.FilterConfig{})
		},
		func() *hcmv3.HttpFilter {
			return httpFilter("envoy.filters.http.compressor", &compressorv3.Compressor{})
		},
		func() *hcmv3.HttpFilter {
			f := rbacFilter(&rbacv3.RBAC{})
			f.Disabled = true
			return f
		},
		func() *hcmv3.HttpFilter {
			return &hcmv3.HttpFilter{Name: "vendor", IsOptional: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{
				TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.Filter"}}}
		},
		func() *hcmv3.HttpFilter {
			return httpFilter(denyAllGuard, &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})
		},
	}
	var fs []*hcmv3.HttpFilter
	for n := rng.Intn(4); n > 0; n-- {
		fs = append(fs, shapes[rng.Intn(len(shapes))]())
	}
	var network []*listenerv3.Filter
	if rng.Intn(8) == 0 {
		network = append(network, &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{
			TypedConfig: mustAny(&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}})}})
	}
	return guardedListener(port, strconv.Itoa(int(port)), network, fs...)
}

// fuzzPerRoute sometimes adds a per-route config for one of the filters fuzzGuards adds.
func fuzzPerRoute(rng *rand.Rand, m *map[string]*anypb.Any) {
	configs := []func() (string, proto.Message){
		func() (string, proto.Message) { return "envoy.filters.http.rbac", &rbachttpv3.RBACPerRoute{} },
		func() (string, proto.Message) {
			return "envoy.filters.http.rbac", &rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}}}
		},
		func() (string, proto.Message) { return "envoy.filters.http.rbac", &routev3.FilterConfig{} },
		func() (string, proto.Message) {
			return "envoy.filters.http.ext_authz", &routev3.FilterConfig{Disabled: true}
		},
		func() (string, proto.Message) {
			return "envoy.filters.http.jwt_authn", &jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "r"}}
		},
	}
	if rng.Intn(4) != 0 {
		return
	}
	name, c := configs[rng.Intn(len(configs))]()
	if *m == nil {
		*m = map[string]*anypb.Any{}
	}
	(*m)[name] = mustAny(c)
}

func spliceLiteral(rng *rand.Rand, m *routev3.RouteMatch, lit string) {
	switch rng.Intn(5) {
	case 0:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: lit}
	case 1:
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: lit}
	case 2:
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: lit}}
	case 3:
		m.Headers = append(m.Headers, hdrExact("x-f", lit))
	}
}

func fuzzAction(rng *rand.Rand, clusters []string) *routev3.RouteAction {
	a := &routev3.RouteAction{}
	n := rng.Intn(4)
	if rng.Intn(8) == 0 {
		n = 21 + rng.Intn(6) // more than traffic-split takes
	}
	if n >= 2 {
		wc := &routev3.WeightedCluster{}
		for i := 0; i < n; i++ {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name: clusters[rng.Intn(len(clusters))], Weight: wrapperspb.UInt32(uint32(rng.Intn(100)))})
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	} else {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: clusters[rng.Intn(len(clusters))]}
	}
	if rng.Intn(2) == 0 {
		// Up to Envoy's largest (beyond what nginx holds), and below a millisecond.
		secs := []int64{0, 1, 2, 3 << 20, 9223372035}[rng.Intn(5)]
		a.Timeout = &durationpb.Duration{Seconds: secs, Nanos: int32(rng.Intn(1e9))}
	}
	if rng.Intn(2) == 0 {
		a.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:       []string{"5xx", "connect-failure,refused-stream", "gateway-error,retriable-4xx", ""}[rng.Intn(4)],
			NumRetries:    wrapperspb.UInt32(uint32(rng.Intn(5))),
			PerTryTimeout: &durationpb.Duration{Nanos: int32(rng.Intn(1e9))},
		}
	}
	return a
}

// hasHTTPFilter reports whether the connection manager of listener name has an HTTP
// filter called filter.
func hasHTTPFilter(t *testing.T, snap *resource.State, name, filter string) bool {
	h := &hcmv3.HttpConnectionManager{}
	for _, f := range snap.Listeners[name].GetFilterChains()[0].GetFilters() {
		if f.GetTypedConfig().MessageIs(h) {
			if err := f.GetTypedConfig().UnmarshalTo(h); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, f := range h.GetHttpFilters() {
		if f.GetName() == filter {
			return true
		}
	}
	return false
}

func fuzzCLA(rng *rand.Rand, name string) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	for l := rng.Intn(3); l > 0; l-- {
		le := &endpointv3.LocalityLbEndpoints{Priority: uint32(rng.Intn(3)), LoadBalancingWeight: wrapperspb.UInt32(uint32(rng.Intn(4)))}
		for e := rng.Intn(4); e > 0; e-- {
			le.LbEndpoints = append(le.LbEndpoints, &endpointv3.LbEndpoint{
				HealthStatus:        corev3.HealthStatus(rng.Intn(6)),
				LoadBalancingWeight: wrapperspb.UInt32(uint32(rng.Intn(3))),
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
					Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address:       []string{"10.0.0.1", "10.0.0.2", "::1", "h.example"}[rng.Intn(4)],
						PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(rng.Intn(70000))}}}}}},
			})
		}
		cla.Endpoints = append(cla.Endpoints, le)
	}
	return cla
}

func FuzzTranslate(f *testing.F) {
	f.Add([]byte{}, "/", "c")
	f.Add([]byte("\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"), "/a/[0-9]+", "svc.ns.svc.cluster.local")
	f.Add(bytes.Repeat([]byte{0xff, 0x10, 0x80, 0x33}, 64), `/x(?i)y\z`, "*.Host:80")
	f.Add(bytes.Repeat([]byte{0x55, 0xaa}, 200), "/\x00\"<>", strings.Repeat("long-", 30))
	// Filter shapes (see fuzzGuards): the first bytes pick the filters.
	for i := byte(0); i < 12; i++ {
		f.Add([]byte{i, i * 19, i * 7, 0x30 + i, i * 3, 0x80 | i}, "/a", "c")
	}
	// Regexes RE2 rejects (the client NACKs them; a route must never widen), and ones
	// only RE2 accepts.
	for i, re := range []string{`/api/(unclosed`, `a{1001}`, `\p{greek}`, `/b/\C+`, `/\p{Old_Italic}+`, `/(?P<名>[0-9]+)`} {
		f.Add(bytes.Repeat([]byte{byte(i), 0x02, 0x80, 0x07}, 50+i), re, "c")
	}
	// Splits over more than 20 clusters.
	f.Add(bytes.Repeat([]byte{0x0f, 0x00, 0x00, 0x03, 0x71}, 80), "/", "b") // two merged upstreams
	f.Fuzz(func(t *testing.T, data []byte, lit, name string) {
		if !utf8.ValidString(lit) || !utf8.ValidString(name) {
			return // proto3 strings are valid UTF-8; the xDS client rejects anything else
		}
		a, b := newTracked(Options{}), newTracked(Options{})
		ra := a.Translate(fuzzSnapshot(data, lit, name))
		rb := b.Translate(fuzzSnapshot(data, lit, name))
		if !sameObjects(a.Objects(), b.Objects()) {
			t.Fatal("two translators of the same input disagree")
		}
		if !reflect.DeepEqual(ra.Report, rb.Report) {
			t.Fatal("two translators of the same input report differently")
		}
		validateAll(t, a.Objects())
		// Never fail open: behind a filter that denies every request no route forwards.
		for _, port := range []string{"80", "81"} {
			if !hasHTTPFilter(t, fuzzSnapshot(data, lit, name), "0.0.0.0_"+port, denyAllGuard) {
				continue
			}
			for k, v := range a.Objects() {
				if strings.HasPrefix(k, "/routes/out-"+port+".") && (strings.Contains(string(v), `"upstream_id"`) || !strings.Contains(string(v), `"abort"`)) {
					t.Fatalf("%s forwards behind a filter that denies every request: %s", k, v)
				}
			}
		}
		// An unchanged resend (new messages, same content) changes nothing.
		next := fuzzSnapshot(data, lit, name)
		next.Seq, next.Changes = 2, resource.Changes{Since: 1, RouteConfigs: map[string]struct{}{"80": {}, "81": {}},
			Clusters: map[string]struct{}{}, Endpoints: map[string]struct{}{}}
		for c := range next.Clusters {
			next.Changes.Clusters[c] = struct{}{}
		}
		for e := range next.Endpoints {
			next.Changes.Endpoints[e] = struct{}{}
		}
		if r := a.Translate(next); !r.Changes.Empty() {
			t.Fatalf("an unchanged resend produced %d puts, %d deletes", len(r.Changes.Put), len(r.Changes.Delete))
		}
	})
}
