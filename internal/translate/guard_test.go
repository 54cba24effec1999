package translate

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	udpav1 "github.com/cncf/xds/go/udpa/type/v1"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	compressorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/compressor/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	grpcstatsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_stats/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	luav3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/lua/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/report"
)

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}

func httpFilter(name string, m proto.Message) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(m)}}
}

// guardedListener is httpListener with HTTP filters before the router and network
// filters before the connection manager.
func guardedListener(port uint32, rds string, network []*listenerv3.Filter, http ...*hcmv3.HttpFilter) *listenerv3.Listener {
	l := httpListener(port, rds)
	fc := l.FilterChains[0]
	h := &hcmv3.HttpConnectionManager{}
	if err := fc.Filters[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		panic(err)
	}
	h.HttpFilters = append(http, h.HttpFilters...)
	fc.Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
	fc.Filters = append(network, fc.Filters...)
	return l
}

// rbacFilter is an HTTP RBAC filter with rules (nil: none).
func rbacFilter(rules *rbacv3.RBAC) *hcmv3.HttpFilter {
	return httpFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: rules})
}

// istioDenyPath is what istiod makes of an AuthorizationPolicy with action DENY and one
// rule "to: operation: paths: [path]".
func istioDenyPath(path string) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[deny-path]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
					{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
						Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: path}}}}}},
				}}}},
			}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_Any{Any: true}},
			}}}}},
		},
	}}
}

// everything is a policy that matches every request.
func everything() *rbacv3.Policy {
	return &rbacv3.Policy{
		Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
	}
}

// twoRoutes is route configuration rds: /a and /b to cluster "c", in one virtual host "*".
func twoRoutes(rds string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: rds, VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{toCluster("a", prefix("/a")), toCluster("b", prefix("/b"))}}}}
}

// routeObjs returns the route objects of a context ("out-80") by route name, the
// no-route route as "no-route".
func routeObjs(t *testing.T, objs map[string][]byte, ctx string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/"+ctx+".") {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(v, &m); err != nil {
			t.Fatal(err)
		}
		name, _ := m["name"].(string)
		out[name] = m
	}
	return out
}

// abortOf returns the status and body a route answers itself, 0 when it forwards.
func abortOf(r map[string]any) (int, string) {
	p, _ := r["plugins"].(map[string]any)
	fi, _ := p["fault-injection"].(map[string]any)
	ab, _ := fi["abort"].(map[string]any)
	if ab == nil {
		return 0, ""
	}
	st, _ := ab["http_status"].(float64)
	body, _ := ab["body"].(string)
	return int(st), body
}

// translateOne translates listeners and route configurations over cluster "c".
func translateOne(t *testing.T, ls []*listenerv3.Listener, rcs ...*routev3.RouteConfiguration) (map[string][]byte, []report.Entry) {
	t.Helper()
	tr := newTracked(Options{})
	r := tr.Translate(snapshotOf(ls, rcs, []*clusterv3.Cluster{staticCluster("c")}))
	validateAll(t, tr.Objects())
	return tr.Objects(), r.Report
}

func findEntry(es []report.Entry, field string, sev report.Severity, parts ...string) bool {
	for _, e := range es {
		if e.Field != field || e.Severity != sev {
			continue
		}
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(e.Message, p)
		}
		if ok {
			return true
		}
	}
	return false
}

const rbacField = "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]"

// wantRoutes checks what each route of ctx answers: 0 forwards, else the status
// (and, when body is set, the body) of its own answer.
func wantRoutes(t *testing.T, objs map[string][]byte, ctx string, want map[string]int, body string) {
	t.Helper()
	rs := routeObjs(t, objs, ctx)
	if len(rs) != len(want) {
		t.Fatalf("%s has routes %v, want %v", ctx, keysOf(rs), want)
	}
	for name, status := range want {
		st, b := abortOf(rs[name])
		if st != status {
			t.Errorf("%s route %q answers %d, want %d", ctx, name, st, status)
		}
		if status != 0 && status != 404 && body != "" && b != body {
			t.Errorf("%s route %q body %q, want %q", ctx, name, b, body)
		}
		if status != 0 && rs[name]["upstream_id"] != nil {
			t.Errorf("%s route %q answers %d but also names an upstream", ctx, name, status)
		}
	}
}

func keysOf[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }

// An RBAC filter whose rules deny every request (ALLOW without policies: Istio's
// allow-nothing policy; DENY with a policy matching everything) is enforced exactly:
// every route, and requests no route matches, answer 403 "RBAC: access denied". The
// other listener is untouched.
func TestRBACDenyAllIsEnforced(t *testing.T) {
	for name, rules := range map[string]*rbacv3.RBAC{
		"allow nothing": {Action: rbacv3.RBAC_ALLOW},
		"deny all":      {Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{"all": everything()}},
		// istiod's allow-nothing: ALLOW with a policy that matches no request.
		"istio allow nothing": {Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"ns[default]-policy[allow-nothing]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_NotRule{NotRule: &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}}}},
			Principals:  []*rbacv3.Principal{{Identifier: &rbacv3.Principal_NotId{NotId: &rbacv3.Principal{Identifier: &rbacv3.Principal_Any{Any: true}}}}},
		}}},
	} {
		t.Run(name, func(t *testing.T) {
			objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, rbacFilter(rules)), httpListener(81, "81")},
				twoRoutes("80"), twoRoutes("81"))
			wantRoutes(t, objs, "out-80", map[string]int{"a": 403, "b": 403, "no-route": 403}, rbacDeniedBody)
			wantRoutes(t, objs, "out-81", map[string]int{"a": 0, "b": 0, "no-route": 404}, "")
			if !findEntry(rep, rbacField, report.Approximated, "denies every request", "out-80") {
				t.Errorf("report does not name the RBAC filter: %v", rep)
			}
			if len(keysWithPrefix(objs, "/upstreams/")) == 0 {
				t.Error("the unguarded listener's upstream is missing")
			}
		})
	}
}

// Rules that depend on the request (istiod's DENY for one path) are enforced per
// request by amesh-rbac: every route of the connection manager forwards with the
// plugin carrying the filter's rules, requests no route matches meet the rules before
// the 404, and the report names the filter and the policy. The other listener is
// untouched.
func TestRBACDependingOnRequestIsEnforced(t *testing.T) {
	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, rbacFilter(istioDenyPath("/a"))), httpListener(81, "81")},
		twoRoutes("80"), twoRoutes("81"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 0, "b": 0, "no-route": 404}, "")
	wantRoutes(t, objs, "out-81", map[string]int{"a": 0, "b": 0, "no-route": 404}, "")
	rs := routeObjs(t, objs, "out-80")
	for _, name := range []string{"a", "b", "no-route"} {
		c, ok := rbacOf(t, rs[name])
		if !ok {
			t.Errorf("out-80 route %q has no %s plugin", name, rbacPluginName)
			continue
		}
		if len(c.Filters) != 1 || c.Filters[0].Action != "DENY" || c.Filters[0].Name != "envoy.filters.http.rbac" ||
			len(c.Filters[0].Policies) != 1 || c.Filters[0].Policies[0].Name != "ns[default]-policy[deny-path]-rule[0]" {
			t.Errorf("out-80 route %q: %s config %+v, want the DENY filter with istiod's policy", name, rbacPluginName, c)
		}
		if c.PortVar != "connection_original_dst" {
			t.Errorf("port_var %q, want the original destination variable", c.PortVar)
		}
	}
	for name, r := range routeObjs(t, objs, "out-81") {
		if _, ok := rbacOf(t, r); ok {
			t.Errorf("out-81 route %q carries %s", name, rbacPluginName)
		}
	}
	if !findEntry(rep, rbacField, report.Approximated, "ns[default]-policy[deny-path]-rule[0]", "enforced per request by amesh-rbac") {
		t.Errorf("report does not name the filter and policy: %v", rep)
	}
}

// rbacDecoded is amesh-rbac's config as a test reads it.
type rbacDecoded struct {
	rbacEnv
	Filters []rbacEnforced `json:"filters"`
}

// rbacOf decodes a route's amesh-rbac config.
func rbacOf(t *testing.T, r map[string]any) (rbacDecoded, bool) {
	t.Helper()
	p, _ := r["plugins"].(map[string]any)
	raw, ok := p[rbacPluginName]
	if !ok {
		return rbacDecoded{}, false
	}
	b, err := json.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	var c rbacDecoded
	if err := json.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c, true
}

// RBAC configs that allow every request change nothing: no rules (Envoy enforces
// nothing), shadow rules only (they log), DENY without policies, LOG. The output is
// the output without the filter; the report says the filter was looked at.
func TestRBACAllowingEverythingChangesNothing(t *testing.T) {
	plain, _ := translateOne(t, []*listenerv3.Listener{httpListener(80, "80")}, twoRoutes("80"))
	for name, f := range map[string]*hcmv3.HttpFilter{
		"no rules":      rbacFilter(nil),
		"shadow only":   httpFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}}),
		"deny nothing":  rbacFilter(&rbacv3.RBAC{Action: rbacv3.RBAC_DENY}),
		"log":           rbacFilter(&rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"all": everything()}}),
		"allow all":     rbacFilter(&rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{"all": everything(), "p": istioDenyPath("/x").Policies["ns[default]-policy[deny-path]-rule[0]"]}}),
		"disabled deny": {Name: "envoy.filters.http.rbac", Disabled: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}})}},
	} {
		t.Run(name, func(t *testing.T) {
			objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, f)}, twoRoutes("80"))
			if !sameObjects(objs, plain) {
				t.Errorf("output differs from the output without the filter")
			}
			if !findEntry(rep, rbacField, report.Ignored, "refuses no request") && !findEntry(rep, rbacField, report.Approximated, "disabled by default") {
				t.Errorf("report does not account for the filter: %v", rep)
			}
		})
	}
}

// Per-route configs decide per route: RBACPerRoute without rbac disables RBAC for the
// route, with rbac it replaces the filter's rules, FilterConfig disabled skips the
// filter, FilterConfig without config enables a filter disabled by default.
func TestRBACPerRoute(t *testing.T) {
	rc := func(a, b *anypb.Any) *routev3.RouteConfiguration {
		r := twoRoutes("80")
		rs := r.VirtualHosts[0].Routes
		if a != nil {
			rs[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": a}
		}
		if b != nil {
			rs[1].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": b}
		}
		return r
	}
	denyAll := rbacFilter(&rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW})
	disabledDenyAll := proto.Clone(denyAll).(*hcmv3.HttpFilter)
	disabledDenyAll.Disabled = true
	for _, tc := range []struct {
		name   string
		filter *hcmv3.HttpFilter
		rc     *routev3.RouteConfiguration
		want   map[string]int
	}{
		{"RBACPerRoute without rbac", denyAll, rc(mustAny(&rbachttpv3.RBACPerRoute{}), nil), map[string]int{"a": 0, "b": 403, "no-route": 403}},
		{"RBACPerRoute allowing", denyAll, rc(mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_DENY}}}), nil), map[string]int{"a": 0, "b": 403, "no-route": 403}},
		{"RBACPerRoute denying", rbacFilter(nil), rc(mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}}}), nil), map[string]int{"a": 403, "b": 0, "no-route": 404}},
		{"RBACPerRoute depending", rbacFilter(nil), rc(nil, mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: istioDenyPath("/b")}})), map[string]int{"a": 0, "b": 0, "no-route": 404}},
		{"FilterConfig disabled", denyAll, rc(mustAny(&routev3.FilterConfig{Disabled: true}), nil), map[string]int{"a": 0, "b": 403, "no-route": 403}},
		{"FilterConfig enables", disabledDenyAll, rc(nil, mustAny(&routev3.FilterConfig{})), map[string]int{"a": 0, "b": 403, "no-route": 404}},
		{"FilterConfig wraps", rbacFilter(nil), rc(mustAny(&routev3.FilterConfig{Config: mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{}}})}), nil), map[string]int{"a": 403, "b": 0, "no-route": 404}},
		{"unexpected type", rbacFilter(nil), rc(mustAny(&faultv3.HTTPFault{}), nil), map[string]int{"a": 403, "b": 0, "no-route": 404}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, tc.filter)}, tc.rc)
			wantRoutes(t, objs, "out-80", tc.want, "")
			if !findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.rbac]", report.Ignored) &&
				!findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.rbac]", report.Unsupported) &&
				!findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.rbac]", report.Approximated) {
				t.Errorf("the per-route config is not reported: %v", rep)
			}
			for _, e := range rep {
				if strings.Contains(e.Message, "is not translated") && strings.Contains(e.Field, "typed_per_filter_config[envoy.filters.http.rbac]") && e.Severity == report.Ignored {
					t.Errorf("a per-route RBAC config is reported as ignored: %+v", e)
				}
			}
		})
	}
}

// Per-route configs of a virtual host apply to its routes, a route's own replaces it.
func TestRBACPerRouteLevels(t *testing.T) {
	r := twoRoutes("80")
	r.VirtualHosts[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(&rbachttpv3.RBACPerRoute{})}
	r.VirtualHosts[0].Routes[1].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.rbac": mustAny(&routev3.FilterConfig{})}
	objs, _ := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, rbacFilter(&rbacv3.RBAC{}))}, r)
	wantRoutes(t, objs, "out-80", map[string]int{"a": 0, "b": 403, "no-route": 403}, rbacDeniedBody)
}

// ext_authz (Istio's CUSTOM action) and jwt_authn (RequestAuthentication) with a
// provider amesh does not enforce are not translated: their routes answer 403, except
// where a per-route config disables them.
// jwt_authn without rules requires nothing, except of routes that name a requirement.
func TestExtAuthzAndJWTFailClosed(t *testing.T) {
	perRoute := func(a *anypb.Any) *routev3.RouteConfiguration {
		r := twoRoutes("80")
		r.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"authz": a}
		return r
	}
	extAuthz := httpFilter("authz", &extauthzv3.ExtAuthz{})
	// A provider that requires an expiration time is one amesh does not enforce
	// (jwt_test.go has those it does).
	jwtRules := httpFilter("authz", &jwtv3.JwtAuthentication{
		Providers: map[string]*jwtv3.JwtProvider{"exp": {RequireExpiration: true, JwksSourceSpecifier: localJWKS(rsaJWKS("k"))}},
		Rules: []*jwtv3.RequirementRule{{Match: prefix("/"), RequirementType: &jwtv3.RequirementRule_Requires{
			Requires: &jwtv3.JwtRequirement{RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: "exp"}}}}}})
	jwtNoRules := httpFilter("authz", &jwtv3.JwtAuthentication{})
	for _, tc := range []struct {
		name   string
		filter *hcmv3.HttpFilter
		rc     *routev3.RouteConfiguration
		want   map[string]int
	}{
		{"ext_authz", extAuthz, twoRoutes("80"), map[string]int{"a": 403, "b": 403, "no-route": 403}},
		{"ext_authz disabled per route", extAuthz, perRoute(mustAny(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_Disabled{Disabled: true}})), map[string]int{"a": 0, "b": 403, "no-route": 403}},
		{"ext_authz check settings", extAuthz, perRoute(mustAny(&extauthzv3.ExtAuthzPerRoute{Override: &extauthzv3.ExtAuthzPerRoute_CheckSettings{CheckSettings: &extauthzv3.CheckSettings{}}})), map[string]int{"a": 403, "b": 403, "no-route": 403}},
		{"jwt rules", jwtRules, twoRoutes("80"), map[string]int{"a": 403, "b": 403, "no-route": 403}},
		{"jwt disabled per route", jwtRules, perRoute(mustAny(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_Disabled{Disabled: true}})), map[string]int{"a": 0, "b": 403, "no-route": 403}},
		{"jwt without rules", jwtNoRules, twoRoutes("80"), map[string]int{"a": 0, "b": 0, "no-route": 404}},
		{"jwt requirement per route", jwtNoRules, perRoute(mustAny(&jwtv3.PerRouteConfig{RequirementSpecifier: &jwtv3.PerRouteConfig_RequirementName{RequirementName: "r"}})), map[string]int{"a": 403, "b": 0, "no-route": 404}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, tc.filter)}, tc.rc)
			wantRoutes(t, objs, "out-80", tc.want, "")
			if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[authz]", report.Unsupported, "403 (fail closed)") &&
				!findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[authz]", report.Ignored, "refuses no request") {
				t.Errorf("report does not name the filter: %v", rep)
			}
		})
	}
}

// The filters run in order, and before the router: the first that refuses a request
// answers it, and a refusal comes before the router's own errors (a missing cluster's
// 503, the 502 of an original-destination cluster amesh cannot serve).
func TestFilterOrderAndRouterErrors(t *testing.T) {
	r := twoRoutes("80")
	r.VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "missing"}
	r.VirtualHosts[0].Routes[1].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "orig"}
	orig := &clusterv3.Cluster{Name: "orig", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbConfig: &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}}}
	tr := newTracked(Options{})
	// compressor (not translated: 500) after the RBAC filter that denies everything.
	l := guardedListener(80, "80", nil, rbacFilter(&rbacv3.RBAC{}), httpFilter("envoy.filters.http.compressor", &compressorv3.Compressor{}))
	tr.Translate(snapshotOf([]*listenerv3.Listener{l}, []*routev3.RouteConfiguration{r}, []*clusterv3.Cluster{orig}))
	wantRoutes(t, tr.Objects(), "out-80", map[string]int{"a": 403, "b": 403, "no-route": 403}, rbacDeniedBody)

	// Without RBAC the compressor answers first; without either, the router's errors.
	tr = newTracked(Options{})
	l = guardedListener(80, "80", nil, httpFilter("envoy.filters.http.compressor", &compressorv3.Compressor{}))
	tr.Translate(snapshotOf([]*listenerv3.Listener{l}, []*routev3.RouteConfiguration{r}, []*clusterv3.Cluster{orig}))
	wantRoutes(t, tr.Objects(), "out-80", map[string]int{"a": 500, "b": 500, "no-route": 500}, "")
	tr = newTracked(Options{})
	tr.Translate(snapshotOf([]*listenerv3.Listener{httpListener(80, "80")}, []*routev3.RouteConfiguration{r}, []*clusterv3.Cluster{orig}))
	wantRoutes(t, tr.Objects(), "out-80", map[string]int{"a": 503, "b": 502, "no-route": 404}, "")
}

// Filters amesh does not translate fail their routes closed: 403 for those that may
// decide who gets in (Lua, for one), 500 for the others; filters that only observe
// are ignored and listed once per listener; an optional filter of a type Envoy does
// not implement is skipped, as Envoy skips it.
func TestOtherHTTPFilters(t *testing.T) {
	plain, _ := translateOne(t, []*listenerv3.Listener{httpListener(80, "80")}, twoRoutes("80"))
	unknown := &hcmv3.HttpFilter{Name: "vendor.auth", IsOptional: true, ConfigType: &hcmv3.HttpFilter_TypedConfig{
		TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/vendor.Auth"}}}
	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil,
		httpFilter("istio.metadata_exchange", mustTypedStruct("type.googleapis.com/io.istio.http.peer_metadata.Config")),
		httpFilter("envoy.filters.http.grpc_stats", &grpcstatsv3.FilterConfig{}), unknown)}, twoRoutes("80"))
	if !sameObjects(objs, plain) {
		t.Error("observing and unknown optional filters changed the output")
	}
	if !findEntry(rep, "filter_chains.filters", report.Ignored, "only observe", "envoy.filters.http.grpc_stats", "istio.metadata_exchange", "envoy.filters.http.router") {
		t.Errorf("observing filters are not listed: %v", rep)
	}
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[vendor.auth]", report.Ignored, "skipped") {
		t.Errorf("the optional filter is not reported: %v", rep)
	}

	objs, rep = translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("lua", &luav3.Lua{}))}, twoRoutes("80"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 403, "b": 403, "no-route": 403}, "")
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[lua]", report.Unsupported, "may refuse requests") {
		t.Errorf("report: %v", rep)
	}
	objs, _ = translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("gzip", &compressorv3.Compressor{}))}, twoRoutes("80"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 500, "b": 500, "no-route": 500}, "")

	// A filter whose config comes from ECDS, which amesh does not serve.
	ecds := &hcmv3.HttpFilter{Name: "wasm-authz", ConfigType: &hcmv3.HttpFilter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{
		ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		TypeUrls:     []string{"type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"}}}}
	objs, rep = translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, ecds)}, twoRoutes("80"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 403, "b": 403, "no-route": 403}, "")
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[wasm-authz]", report.Unsupported, "ECDS") {
		t.Errorf("report: %v", rep)
	}
}

// Without a router Envoy forwards nothing: the routes fail closed.
func TestNoRouter(t *testing.T) {
	l := httpListener(80, "80")
	h := &hcmv3.HttpConnectionManager{RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "80"}}}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(h)}
	objs, rep := translateOne(t, []*listenerv3.Listener{l}, twoRoutes("80"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 500, "b": 500, "no-route": 500}, "")
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters", report.Unsupported, "no router") {
		t.Errorf("report: %v", rep)
	}
}

// The fault filter's own config applies to routes without a per-route one; per-route
// configs for a filter the connection manager lacks have no effect, as in Envoy.
func TestFaultFilterConfig(t *testing.T) {
	abort := &faultv3.HTTPFault{Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: 418},
		Percentage: &typev3.FractionalPercent{Numerator: 100}}}
	objs, _ := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, httpFilter("envoy.filters.http.fault", abort))}, twoRoutes("80"))
	for _, name := range []string{"a", "b"} {
		p, _ := routeObjs(t, objs, "out-80")[name]["plugins"].(map[string]any)
		if _, ok := p["fault-injection"]; !ok {
			t.Errorf("route %s lacks the fault filter's own abort: %v", name, p)
		}
	}
	r := twoRoutes("80")
	r.VirtualHosts[0].Routes[0].TypedPerFilterConfig = map[string]*anypb.Any{"envoy.filters.http.fault": mustAny(abort)}
	objs, rep := translateOne(t, []*listenerv3.Listener{httpListener(80, "80")}, r)
	wantRoutes(t, objs, "out-80", map[string]int{"a": 0, "b": 0, "no-route": 404}, "")
	if !findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.fault]", report.Ignored, "no filter of that name") {
		t.Errorf("report: %v", rep)
	}
}

// Network filters are recognised by type: a connection manager under another name is
// translated like one under the usual name; a network RBAC filter in front of it that
// denies everything makes its routes answer 403 (Envoy closes the connections), and in
// front of tcp_proxy makes its stream route close the connections (under capture; without,
// there is no stream route).
func TestNetworkFilters(t *testing.T) {
	base, _ := translateOne(t, []*listenerv3.Listener{httpListener(80, "80")}, twoRoutes("80"))
	l := httpListener(80, "80")
	l.FilterChains[0].Filters[0].Name = "my-hcm"
	objs, _ := translateOne(t, []*listenerv3.Listener{l}, twoRoutes("80"))
	if !sameObjects(objs, base) {
		t.Error("a connection manager under another name is not translated like one under the usual name")
	}
	// The same through a TypedStruct.
	l = httpListener(80, "80")
	h := &hcmv3.HttpConnectionManager{}
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(h); err != nil {
		t.Fatal(err)
	}
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: typedStructOf(t, h)}
	objs, _ = translateOne(t, []*listenerv3.Listener{l}, twoRoutes("80"))
	if !sameObjects(objs, base) {
		t.Error("a connection manager in a TypedStruct is not translated")
	}

	netRBAC := &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(
		&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{}})}}
	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", []*listenerv3.Filter{netRBAC})}, twoRoutes("80"))
	wantRoutes(t, objs, "out-80", map[string]int{"a": 403, "b": 403, "no-route": 403}, "")
	if !findEntry(rep, "filter_chains.filters[envoy.filters.network.rbac]", report.Approximated, "Envoy closes these connections") {
		t.Errorf("report: %v", rep)
	}

	tcp := func(filters ...*listenerv3.Filter) *listenerv3.Listener {
		l := httpListener(3306, "")
		l.Name = "10.0.0.9_3306"
		l.Address.GetSocketAddress().Address = "10.0.0.9"
		tp := &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(
			&tcpv3.TcpProxy{StatPrefix: "c", ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: "c"}})}}
		l.FilterChains[0].Filters = append(filters, tp)
		return l
	}
	objs, _ = translateOne(t, []*listenerv3.Listener{tcp()})
	if len(keysWithPrefix(objs, "/stream_routes/")) != 1 {
		t.Fatalf("no stream route without RBAC: %v", keysOf(objs))
	}
	objs, rep = translateOne(t, []*listenerv3.Listener{tcp(netRBAC)})
	checkStreams(t, objs, []stc{{"behind an RBAC filter that denies everything", conn{listen: "15001", addr: "10.0.0.9", port: 3306},
		streamAnswer{route: "15001-3306-10.0.0.9", closed: true}}})
	if !findEntry(rep, "filter_chains.filters", report.Unsupported, "connections to c are closed") {
		t.Errorf("report: %v", rep)
	}
	tr := newTracked(Options{OriginalDstVar: "server_port"})
	rep = tr.Translate(snapshotOf([]*listenerv3.Listener{tcp(netRBAC)}, nil, []*clusterv3.Cluster{staticCluster("c")})).Report
	if n := keysWithPrefix(tr.Objects(), "/stream_routes/"); len(n) != 0 {
		t.Errorf("without capture: stream routes %v behind an RBAC filter that denies everything", n)
	}
	if !findEntry(rep, "filter_chains.filters", report.Unsupported, "no stream route is emitted") {
		t.Errorf("without capture: report: %v", rep)
	}
	allowAll := proto.Clone(netRBAC).(*listenerv3.Filter)
	allowAll.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(&rbacnetv3.RBAC{StatPrefix: "tcp."})}
	objs, _ = translateOne(t, []*listenerv3.Listener{tcp(allowAll)})
	if len(keysWithPrefix(objs, "/stream_routes/")) != 1 {
		t.Errorf("an RBAC filter without rules removed the stream route")
	}
}

// A filter chain without anything amesh translates serves nothing, and says so.
func TestChainWithoutTerminal(t *testing.T) {
	dyn := httpListener(80, "80")
	dyn.FilterChains[0].Filters = []*listenerv3.Filter{{Name: "dynamic", ConfigType: &listenerv3.Filter_ConfigDiscovery{ConfigDiscovery: &corev3.ExtensionConfigSource{
		ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}},
		TypeUrls:     []string{"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}}}}}
	objs, rep := translateOne(t, []*listenerv3.Listener{dyn}, twoRoutes("80"))
	if n := keysWithPrefix(objs, "/routes/"); len(n) != 0 {
		t.Errorf("routes %v from a chain without a connection manager", n)
	}
	if !findEntry(rep, "filter_chains.filters", report.Unsupported, "serves nothing") ||
		!findEntry(rep, "filter_chains.filters[dynamic]", report.Unsupported, "ECDS") {
		t.Errorf("report: %v", rep)
	}
}

func keysWithPrefix(m map[string][]byte, p string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, p) {
			out = append(out, k)
		}
	}
	return out
}

// mustTypedStruct is a TypedStruct naming type url, without fields (the shape of
// istiod's istio.metadata_exchange filter).
func mustTypedStruct(url string) proto.Message {
	return &udpav1.TypedStruct{TypeUrl: url}
}

// typedStructOf is m as a TypedStruct, its fields as protojson writes them.
func typedStructOf(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	st := &structpb.Struct{}
	if err := protojson.Unmarshal(b, st); err != nil {
		t.Fatal(err)
	}
	return mustAny(&udpav1.TypedStruct{TypeUrl: "type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()), Value: st})
}
