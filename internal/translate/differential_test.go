package translate

import (
	"fmt"
	"math/rand"
	"strconv"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// --- builders for hand-written xDS ---

func httpListener(port uint32, rds string) *listenerv3.Listener {
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{
		Rds: &hcmv3.Rds{RouteConfigName: rds}}, HttpFilters: []*hcmv3.HttpFilter{routerFilter()}})
	if err != nil {
		panic(err)
	}
	return &listenerv3.Listener{
		Name: "0.0.0.0_" + strconv.Itoa(int(port)),
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: "0.0.0.0", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}},
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
	}
}

// routerFilter is the HTTP filter that forwards requests along the routes.
func routerFilter() *hcmv3.HttpFilter {
	a, err := anypb.New(&routerv3.Router{})
	if err != nil {
		panic(err)
	}
	return &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: a}}
}

func staticCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}}
}

func snapshotOf(ls []*listenerv3.Listener, rcs []*routev3.RouteConfiguration, cs []*clusterv3.Cluster) *resource.State {
	s := &resource.State{Seq: 1, Listeners: map[string]*listenerv3.Listener{}, RouteConfigs: map[string]*resource.RouteConfig{},
		Clusters: map[string]*resource.Cluster{}, Endpoints: nil, Changes: resource.Changes{Full: true}}
	for _, l := range ls {
		s.Listeners[l.GetName()] = l
	}
	for _, rc := range rcs {
		s.RouteConfigs[rc.GetName()] = resource.MustRouteConfig(rc)
	}
	for _, c := range cs {
		s.Clusters[c.GetName()] = resource.MustCluster(c)
	}
	return s
}

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func exact(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: p}}
}

func toCluster(name string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}}}
}

func hdrExact(name, v string) *routev3.HeaderMatcher {
	return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
		StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}}}
}

// --- differential checking ---

// checkSame translates the route configurations (one per port) and checks that APISIX
// picks the route Envoy picks for every request. Routes use cluster "c" and clusters.
func checkSame(t *testing.T, rcs map[uint32]*routev3.RouteConfiguration, reqs []request, clusters ...*clusterv3.Cluster) {
	t.Helper()
	var ls []*listenerv3.Listener
	var list []*routev3.RouteConfiguration
	for port, rc := range rcs {
		if err := resource.Validate(rc); err != nil {
			t.Fatalf("Envoy would reject route configuration %s: %v", rc.GetName(), err)
		}
		ls = append(ls, httpListener(port, rc.GetName()))
		list = append(list, rc)
	}
	tr := newTracked(Options{})
	tr.Translate(snapshotOf(ls, list, append([]*clusterv3.Cluster{staticCluster("c")}, clusters...)))
	validateAll(t, tr.Objects())
	ar := newAPISIXRouter(t, tr.Objects())
	for _, r := range reqs {
		port, _ := strconv.Atoi(r.port)
		rc := rcs[uint32(port)]
		got := ar.match(t, r)
		if rc == nil {
			if got != "" {
				t.Errorf("%+v: no listener, APISIX picked %s", r, got)
			}
			continue
		}
		vi, ri := envoyRoute(rc, r)
		want := expectedIDs(rc, "out-"+r.port, vi, ri)
		if !want[got] {
			t.Errorf("%+v: Envoy picks vhost %d route %d, APISIX picks %q", r, vi, ri, got)
		}
	}
}

// expectedIDs lists the ids of the APISIX routes that stand for Envoy's choice.
func expectedIDs(rc *routev3.RouteConfiguration, ctx string, vi, ri int) map[string]bool {
	out := map[string]bool{}
	if vi < 0 {
		out[""] = true
		return out
	}
	base := ctx + "." + rc.GetVirtualHosts()[vi].GetName()
	last := ".nr"
	if ri >= 0 {
		last = "." + strconv.Itoa(ri)
	}
	for _, g := range []string{"", ".any", ".pw0", ".pw1", ".pw2", ".pw3"} {
		out[apisix.SafeID(base+g+last)] = true
	}
	return out
}

func TestDifferentialTable(t *testing.T) {
	rc := &routev3.RouteConfiguration{Name: "80", IgnorePortInHostMatching: true, VirtualHosts: []*routev3.VirtualHost{
		{Name: "a", Domains: []string{"a", "a.ns"}, Routes: []*routev3.Route{
			// A header-matched "/" before a plain "/api": the header route must win.
			toCluster("hdr-root", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"},
				Headers: []*routev3.HeaderMatcher{hdrExact("x-user", "jason")}}),
			toCluster("api", prefix("/api")),
			toCluster("api-exact-shadowed", exact("/api/v1")),
			toCluster("longer-after-shorter", prefix("/api/v2")),
			toCluster("other-exact", exact("/health")),
		}},
		{Name: "wild", Domains: []string{"*.example.com"}, Routes: []*routev3.Route{
			toCluster("w", prefix("/w")),
		}},
		{Name: "exact-example", Domains: []string{"x.example.com"}, Routes: []*routev3.Route{
			toCluster("x", prefix("/")),
		}},
		{Name: "prefix-wild", Domains: []string{"pre.*"}, Routes: []*routev3.Route{
			toCluster("p", prefix("/p")),
		}},
		{Name: "any", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("any-ci", &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/CI"},
				CaseSensitive: wrapperspb.Bool(false)}),
			toCluster("any", prefix("/")),
		}},
	}}
	// A split over more clusters than traffic-split takes, served by a merged upstream,
	// between two other routes.
	wc := &routev3.WeightedCluster{}
	var split []*clusterv3.Cluster
	for i := range 25 {
		n := fmt.Sprintf("w%d", i)
		split = append(split, clusterAt(n, fmt.Sprintf("10.7.%d.1:80", i)))
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: n, Weight: wrapperspb.UInt32(uint32(1 + i))})
	}
	rc.VirtualHosts = append(rc.VirtualHosts[:len(rc.VirtualHosts)-1:len(rc.VirtualHosts)-1], &routev3.VirtualHost{
		Name: "split", Domains: []string{"s.example.com"}, Routes: []*routev3.Route{
			toCluster("x-health", exact("/health")),
			{Name: "x-split", Match: prefix("/api"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}},
			toCluster("x", prefix("/")),
		}}, rc.VirtualHosts[len(rc.VirtualHosts)-1])
	rc81 := &routev3.RouteConfiguration{Name: "81", IgnorePortInHostMatching: true, VirtualHosts: []*routev3.VirtualHost{
		{Name: "a81", Domains: []string{"a"}, Routes: []*routev3.Route{toCluster("only81", prefix("/only81"))}},
	}}
	var reqs []request
	for _, port := range []string{"80", "81", "82"} {
		for _, host := range []string{"a", "a.ns", "b", "x.example.com", "s.example.com", "y.example.com", ".example.com", "pre.x", "pre."} {
			for _, path := range []string{"/", "/api", "/api/v1", "/api/v2/x", "/health", "/w", "/ci/x", "/CI", "/p", "/only81"} {
				for _, user := range []string{"", "jason"} {
					h := map[string]string{}
					if user != "" {
						h["x-user"] = user
					}
					reqs = append(reqs, request{host: host, path: path, headers: h, method: "GET", port: port})
				}
			}
		}
	}
	checkSame(t, map[uint32]*routev3.RouteConfiguration{80: rc, 81: rc81}, reqs, split...)
}

// --- randomized route tables ---

var (
	fuzzPaths = []string{"/", "/a", "/A", "/a/", "/a/b", "/a/bc", "/ab", "/a/1", "/a/12", "/b", "/a/b/c", "/x:y", "/A/B"}
	fuzzHosts = []string{"h1", "h2", "s.h1", "t.s.h1", "p.q", "other"}
)

func randPathMatch(rng *rand.Rand) *routev3.RouteMatch {
	lit := fuzzPaths[rng.Intn(len(fuzzPaths))]
	m := &routev3.RouteMatch{}
	switch rng.Intn(6) {
	case 0, 1:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: lit}
	case 2:
		m.PathSpecifier = &routev3.RouteMatch_Path{Path: lit}
	case 3:
		re := []string{`/a/[0-9]+`, `/a(/.*)?`, `/[ab]`, `.*b.*`, `/A/b|/b`}[rng.Intn(5)]
		m.PathSpecifier = &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: re}}
	case 4:
		if lit == "/" || lit[len(lit)-1] == '/' {
			lit = "/a"
		}
		m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: lit}
	default:
		m.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/"}
	}
	if rng.Intn(4) == 0 {
		m.CaseSensitive = wrapperspb.Bool(false)
	}
	for n := rng.Intn(3); n > 0; n-- {
		m.Headers = append(m.Headers, randHeader(rng))
	}
	if rng.Intn(5) == 0 {
		q := &routev3.QueryParameterMatcher{Name: "q"}
		if rng.Intn(2) == 0 {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_PresentMatch{PresentMatch: true}
		} else {
			q.QueryParameterMatchSpecifier = &routev3.QueryParameterMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
				MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "1"}}}
		}
		m.QueryParameters = append(m.QueryParameters, q)
	}
	return m
}

func randHeader(rng *rand.Rand) *routev3.HeaderMatcher {
	h := &routev3.HeaderMatcher{Name: []string{"x-h", "x-k", ":method"}[rng.Intn(3)]}
	vals := []string{"", "v", "V", "va", "a.b", "GET"}
	v := vals[rng.Intn(len(vals))]
	var sm *matcherv3.StringMatcher
	switch rng.Intn(7) {
	case 0:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
	case 1:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: v}}
	case 2:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: v}}
	case 3:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: v}}
	case 4:
		sm = &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{
			Regex: []string{`v.*`, `a\.b`, `|v`, `[A-Z]+`}[rng.Intn(4)]}}}
	default:
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: rng.Intn(2) == 0}
	}
	if sm != nil {
		sm.IgnoreCase = rng.Intn(3) == 0
		h.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	}
	h.InvertMatch = rng.Intn(3) == 0
	h.TreatMissingHeaderAsEmpty = rng.Intn(3) == 0
	return h
}

func randRC(rng *rand.Rand, name string) *routev3.RouteConfiguration {
	rc := &routev3.RouteConfiguration{Name: name, IgnorePortInHostMatching: true}
	domains := []string{"h1", "h2", "*.h1", "*.s.h1", "p.*", "*"}
	rng.Shuffle(len(domains), func(i, j int) { domains[i], domains[j] = domains[j], domains[i] })
	nv := 1 + rng.Intn(4)
	for v := 0; v < nv; v++ {
		vh := &routev3.VirtualHost{Name: fmt.Sprintf("vh%d", v)}
		// Spread the domains over the virtual hosts (each domain at most once).
		for d := v; d < len(domains); d += nv {
			vh.Domains = append(vh.Domains, domains[d])
		}
		for n := 1 + rng.Intn(6); n > 0; n-- {
			vh.Routes = append(vh.Routes, toCluster(fmt.Sprintf("r%d", len(vh.Routes)), randPathMatch(rng)))
		}
		rc.VirtualHosts = append(rc.VirtualHosts, vh)
	}
	return rc
}

func randRequests(rng *rand.Rand, n int) []request {
	var out []request
	for i := 0; i < n; i++ {
		h := map[string]string{}
		for _, name := range []string{"x-h", "x-k"} {
			if rng.Intn(3) > 0 {
				h[name] = []string{"", "v", "V", "va", "a.b", "xv", "VA"}[rng.Intn(7)]
			}
		}
		q := map[string]string{}
		if rng.Intn(2) == 0 {
			q["q"] = []string{"1", "2", ""}[rng.Intn(3)]
		}
		out = append(out, request{host: fuzzHosts[rng.Intn(len(fuzzHosts))], path: fuzzPaths[rng.Intn(len(fuzzPaths))],
			headers: h, query: q, method: []string{"GET", "POST"}[rng.Intn(2)], port: []string{"80", "81"}[rng.Intn(2)]})
	}
	return out
}

func TestDifferentialRandom(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 150; i++ {
		rcs := map[uint32]*routev3.RouteConfiguration{80: randRC(rng, "80"), 81: randRC(rng, "81")}
		reqs := randRequests(rng, 200)
		t.Run(strconv.Itoa(i), func(t *testing.T) { checkSame(t, rcs, reqs) })
		if t.Failed() {
			return
		}
	}
}
