package translate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	xdscorev3 "github.com/cncf/xds/go/xds/core/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	exprv1alpha1 "google.golang.org/genproto/googleapis/api/expr/v1alpha1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

func exactSM(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

func metadataPermission() *rbacv3.Permission {
	//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Metadata{Metadata: &matcherv3.MetadataMatcher{Filter: "istio_authn"}}}
}

// nodeJSON compiles one permission (or principal) inside a policy of action and
// returns the JSON of its node and the gaps.
func nodeJSON(t *testing.T, action rbacv3.RBAC_Action, perm *rbacv3.Permission, princ *rbacv3.Principal, env rbacEnv) (string, []string) {
	t.Helper()
	p := &rbacv3.Policy{Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}},
		Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}}
	if perm != nil {
		p.Permissions = []*rbacv3.Permission{perm}
	}
	if princ != nil {
		p.Principals = []*rbacv3.Principal{princ}
	}
	f, gaps := compileRBAC("f", &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"p": p}}, env)
	n := f.Policies[0].Permissions[0]
	if princ != nil {
		n = f.Policies[0].Principals[0]
	}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	return string(b), gaps
}

// Every permission and principal kind becomes the node the plugin evaluates; what
// the plugin cannot evaluate becomes a constant that makes the filter deny (false
// under ALLOW, true under DENY, flipped under each not_rule / not_id), and is listed
// for the report. Leaves the plugin may find unknown at run time carry the same value
// in "u".
func TestRBACNodeTranslation(t *testing.T) {
	A, D := rbacv3.RBAC_ALLOW, rbacv3.RBAC_DENY
	header := func(h *routev3.HeaderMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
	}
	str := func(name string, m *matcherv3.StringMatcher) *routev3.HeaderMatcher {
		return &routev3.HeaderMatcher{Name: name, HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: m}}
	}
	path := func(m *matcherv3.StringMatcher) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{Path: m}}}}
	}
	not := func(p *rbacv3.Permission) *rbacv3.Permission {
		return &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: p}}
	}
	inverted := str("X-Inv", exactSM("bad"))
	inverted.InvertMatch = true
	missingEmpty := str("x-e", &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "a*"}}})
	missingEmpty.TreatMissingHeaderAsEmpty = true
	authenticated := &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{PrincipalName: exactSM("spiffe://x")}}}
	cidr := func(a string, n uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
	}
	for _, tc := range []struct {
		name   string
		action rbacv3.RBAC_Action
		perm   *rbacv3.Permission
		princ  *rbacv3.Principal
		env    rbacEnv
		want   string
		gap    string
	}{
		{"path exact", A, path(exactSM("/a")), nil, rbacEnv{}, `{"path":{"op":"exact","v":"/a"}}`, ""},
		{"path exact under DENY", D, path(exactSM("/a")), nil, rbacEnv{}, `{"path":{"op":"exact","v":"/a"},"u":true}`, ""},
		{"path prefix ignore_case", A, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "/A"}, IgnoreCase: true}), nil, rbacEnv{}, `{"path":{"op":"prefix","v":"/A","icase":true}}`, ""},
		{"path suffix", A, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".css"}}), nil, rbacEnv{}, `{"path":{"op":"suffix","v":".css"}}`, ""},
		{"path contains", A, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "v1"}}), nil, rbacEnv{}, `{"path":{"op":"contains","v":"v1"}}`, ""},
		// RE2's full match becomes an anchored PCRE; ignore_case has no effect on it.
		{"path regex", A, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/i/[0-9]+"}}, IgnoreCase: true}), nil, rbacEnv{}, `{"path":{"op":"regex","v":"\\A/i/[0-9]+\\z"}}`, ""},
		{"path custom matcher", D, path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Custom{Custom: &xdscorev3.TypedExtensionConfig{Name: "x"}}}), nil, rbacEnv{}, `{"const":true}`, "url_path matcher of an unsupported kind"},
		{"method", A, header(str(":method", exactSM("GET"))), nil, rbacEnv{}, `{"header":{"name":":method","str":{"op":"exact","v":"GET"}}}`, ""},
		{"header name lowercased, inverted", A, header(inverted), nil, rbacEnv{}, `{"header":{"name":"x-inv","str":{"op":"exact","v":"bad"},"invert":true}}`, ""},
		{"header present", A, header(&routev3.HeaderMatcher{Name: "x-p", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}}), nil, rbacEnv{}, `{"header":{"name":"x-p","pres":true}}`, ""},
		{"header present false inverted", A, header(&routev3.HeaderMatcher{Name: "x-p", InvertMatch: true, HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}), nil, rbacEnv{}, `{"header":{"name":"x-p","pres":true}}`, ""},
		{"header absent", A, header(&routev3.HeaderMatcher{Name: "x-p", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: false}}), nil, rbacEnv{}, `{"header":{"name":"x-p","miss":true}}`, ""},
		{"header missing as empty, regex matching empty", A, header(missingEmpty), nil, rbacEnv{}, `{"header":{"name":"x-e","miss":true,"str":{"op":"regex","v":"\\Aa*\\z"}}}`, ""},
		{"header range", A, header(&routev3.HeaderMatcher{Name: "x-r", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: -5, End: 10}}}), nil, rbacEnv{}, `{"header":{"name":"x-r","range":[-5,10]}}`, ""},
		{"header range beyond doubles", D, header(&routev3.HeaderMatcher{Name: "x-r", HeaderMatchSpecifier: &routev3.HeaderMatcher_RangeMatch{RangeMatch: &typev3.Int64Range{Start: 0, End: 1 << 60}}}), nil, rbacEnv{}, `{"const":true}`, "header range beyond 2^53"},
		{"pseudo-header", A, header(str(":protocol", exactSM("websocket"))), nil, rbacEnv{}, `{"const":false}`, "header :protocol"},
		{"host header", D, header(str("Host", exactSM("a"))), nil, rbacEnv{}, `{"const":true}`, "header host (Envoy holds it as :authority)"},
		{"authority", A, header(str(":authority", exactSM("a"))), nil, rbacEnv{}, `{"header":{"name":":authority","str":{"op":"exact","v":"a"}}}`, ""},
		{"authority with the port stripped", A, header(str(":authority", exactSM("a"))), nil, rbacEnv{authorityRewritten: true}, `{"const":false}`, "rewrites the host"},
		{"header Envoy sets", D, header(str("x-forwarded-proto", exactSM("https"))), nil, rbacEnv{}, `{"const":true}`, "sets or removes it"},
		{"x-envoy header", A, header(str("x-envoy-peer-metadata", exactSM("x"))), nil, rbacEnv{}, `{"const":false}`, "sets or removes it"},
		{"header nginx drops", D, header(str("x_user", exactSM("a"))), nil, rbacEnv{}, `{"const":true}`, "nginx drops such names"},
		{"destination port", A, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPort{DestinationPort: 8080}}, nil, rbacEnv{}, `{"ports":[8080,8081]}`, ""},
		{"destination port range", D, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{DestinationPortRange: &typev3.Int32Range{Start: 80, End: 90}}}, nil, rbacEnv{}, `{"ports":[80,90],"u":true}`, ""},
		{"and, or, not", A, &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
			{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Any{Any: true}}}}}},
			not(path(exactSM("/x"))),
		}}}}, nil, rbacEnv{}, `{"and":[{"or":[{"any":true}]},{"not":{"path":{"op":"exact","v":"/x"},"u":true}}]}`, ""},
		{"metadata under ALLOW", A, metadataPermission(), nil, rbacEnv{}, `{"const":false}`, "metadata of filter istio_authn"},
		{"metadata under DENY", D, metadataPermission(), nil, rbacEnv{}, `{"const":true}`, "metadata of filter istio_authn"},
		{"not metadata under ALLOW", A, not(metadataPermission()), nil, rbacEnv{}, `{"not":{"const":true}}`, "metadata"},
		{"not not metadata under DENY", D, not(not(metadataPermission())), nil, rbacEnv{}, `{"not":{"not":{"const":true}}}`, "metadata"},
		{"requested_server_name", A, &rbacv3.Permission{Rule: &rbacv3.Permission_RequestedServerName{RequestedServerName: exactSM("a")}}, nil, rbacEnv{}, `{"const":false}`, "requested_server_name"},
		{"destination_ip", D, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationIp{DestinationIp: cidr("10.0.0.0", 8)}}, nil, rbacEnv{}, `{"const":true}`, "destination_ip"},
		// The peer's identity is read per request; a peer the plugin cannot read takes
		// the worst case (u), flipped under not_id.
		{"authenticated", D, nil, authenticated, rbacEnv{}, `{"auth":{"n":{"op":"exact","v":"spiffe://x"}},"u":true}`, ""},
		{"authenticated under ALLOW", A, nil, authenticated, rbacEnv{}, `{"auth":{"n":{"op":"exact","v":"spiffe://x"}}}`, ""},
		{"not authenticated", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: authenticated}}, rbacEnv{}, `{"not":{"auth":{"n":{"op":"exact","v":"spiffe://x"}},"u":true}}`, ""},
		// Without principal_name: any TLS connection.
		{"authenticated without a name", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{}}}, rbacEnv{}, `{"auth":{}}`, ""},
		// Istio's namespaces (source.namespace): a regex on the SPIFFE ID.
		{"authenticated namespace regex", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*/ns/foo/.*"}}}}}},
			rbacEnv{}, `{"auth":{"n":{"op":"regex","v":"(*UTF)\\A[^\\n]*/ns/foo/[^\\n]*\\z"}}}`, ""},
		{"authenticated with a custom matcher", D, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
			PrincipalName: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Custom{Custom: &xdscorev3.TypedExtensionConfig{Name: "x"}}}}}},
			rbacEnv{}, `{"const":true}`, "authenticated principal_name matcher of an unsupported kind"},
		{"direct_remote_ip", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.1.2.3", 16)}}, rbacEnv{}, `{"ip":{"src":"direct","addr":"10.1.0.0","len":16}}`, ""},
		{"remote_ip v6", D, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("2001:db8::1", 32)}}, rbacEnv{RemoteFrom: "xff"}, `{"ip":{"src":"remote","addr":"2001:db8::","len":32},"u":true}`, ""},
		{"remote_ip with a detection extension", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_RemoteIp{RemoteIp: cidr("10.0.0.0", 8)}}, rbacEnv{}, `{"const":false}`, "remote_ip"},
		//lint:ignore SA1019 deprecated fields are still valid xDS: the translation must keep their meaning
		{"source_ip", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_SourceIp{SourceIp: cidr("::1", 128)}}, rbacEnv{}, `{"ip":{"src":"source","addr":"::1","len":128}}`, ""},
		{"bad CIDR", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_DirectRemoteIp{DirectRemoteIp: cidr("10.0.0.0", 33)}}, rbacEnv{}, `{"const":false}`, "CIDR range"},
		{"filter_state (request principals)", D, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_FilterState{FilterState: &matcherv3.FilterStateMatcher{Key: "k"}}}, rbacEnv{}, `{"const":true}`, "filter_state"},
		{"empty or_ids", A, nil, &rbacv3.Principal{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{}}}, rbacEnv{}, `{"const":false}`, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, gaps := nodeJSON(t, tc.action, tc.perm, tc.princ, tc.env)
			if got != tc.want {
				t.Errorf("node %s, want %s", got, tc.want)
			}
			if joined := strings.Join(gaps, "; "); tc.gap == "" && joined != "" || !strings.Contains(joined, tc.gap) {
				t.Errorf("gaps %q, want %q", gaps, tc.gap)
			}
		})
	}
}

// A CEL condition is ANDed with the policy: it can only make an ALLOW policy match
// less (false) and a DENY policy more (true).
func TestRBACConditionIsWorstCase(t *testing.T) {
	for action, want := range map[rbacv3.RBAC_Action]string{
		rbacv3.RBAC_ALLOW: `[{"and":[{"or":[{"any":true}]},{"const":false}]}]`,
		rbacv3.RBAC_DENY:  `[{"and":[{"or":[{"any":true}]},{"const":true}]}]`,
	} {
		p := everything()
		p.Condition = &exprv1alpha1.Expr{}
		f, gaps := compileRBAC("f", &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{"p": p}}, rbacEnv{})
		b, _ := json.Marshal(f.Policies[0].Permissions)
		if string(b) != want || len(gaps) != 1 {
			t.Errorf("%v: %s %v, want %s and the condition reported", action, b, gaps, want)
		}
	}
}

// The plugin's config follows the connection manager: normalize_path, merge_slashes,
// escaped-slash rewriting, use_remote_address; and the original-destination variable.
func TestRBACEnvFromHCM(t *testing.T) {
	h := &hcmv3.HttpConnectionManager{NormalizePath: wrapperspb.Bool(true), MergeSlashes: true,
		PathWithEscapedSlashesAction: hcmv3.HttpConnectionManager_UNESCAPE_AND_FORWARD, UseRemoteAddress: wrapperspb.Bool(true)}
	got := envOf(h, "server_port")
	want := rbacEnv{PortVar: "server_port", NormalizePath: true, MergeSlashes: true, PctUnknown: true, RemoteFrom: "peer"}
	if got != want {
		t.Errorf("env %+v, want %+v", got, want)
	}
	h.XffNumTrustedHops = 1
	h.PathWithEscapedSlashesAction = hcmv3.HttpConnectionManager_KEEP_UNCHANGED
	if got := envOf(h, "v"); got.RemoteFrom != "" || got.PctUnknown {
		t.Errorf("env %+v: with use_remote_address and a trusted hop the plugin does not know the remote address; KEEP_UNCHANGED keeps escapes", got)
	}
	h.UseRemoteAddress = nil
	if got := envOf(h, "v"); got.RemoteFrom != "xff" || got.XffHops != 1 {
		t.Errorf("env %+v: without use_remote_address the remote address is x-forwarded-for's second entry from the right", got)
	}
	h.OriginalIpDetectionExtensions = []*corev3.TypedExtensionConfig{{Name: "custom"}}
	if got := envOf(h, "v"); got.RemoteFrom != "" {
		t.Errorf("env %+v: a detection extension decides the remote address", got)
	}
}

// Filters keep HTTP filter order on every route: a DENY, then an ALLOW, then an
// ext_authz that amesh cannot enforce: the route carries both RBAC filters in order
// and then fails closed (403, amesh's body) for what they let through; a LOG filter
// and shadow rules add nothing. An ext_authz in front of the RBAC filters fails the
// route closed before them. The config validates against the plugin's schema.
func TestRBACFilterOrder(t *testing.T) {
	deny := httpFilter("istio-deny", &rbachttpv3.RBAC{Rules: istioDenyPath("/a")})
	allow := httpFilter("istio-allow", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"p": {Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: exactSM("GET")}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}}},
	}}, ShadowRules: &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}})
	log := httpFilter("istio-log", &rbachttpv3.RBAC{Rules: &rbacv3.RBAC{Action: rbacv3.RBAC_LOG, Policies: map[string]*rbacv3.Policy{"all": everything()}}})
	authz := httpFilter("envoy.filters.http.ext_authz", &extauthzv3.ExtAuthz{})

	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, deny, log, allow, authz)}, twoRoutes("80"))
	rs := routeObjs(t, objs, "out-80")
	for _, name := range []string{"a", "b", "no-route"} {
		c, ok := rbacOf(t, rs[name])
		if !ok || len(c.Filters) != 2 || c.Filters[0].Name != "istio-deny" || c.Filters[0].Action != "DENY" ||
			c.Filters[1].Name != "istio-allow" || c.Filters[1].Action != "ALLOW" {
			t.Errorf("route %q: %+v, want istio-deny then istio-allow", name, c)
		}
		if st, body := abortOf(rs[name]); st != 403 || !strings.Contains(body, "ext_authz") {
			t.Errorf("route %q answers %d %q after the RBAC filters, want ext_authz's fail-closed 403", name, st, body)
		}
		raw, _ := json.Marshal(rs[name]["plugins"].(map[string]any)[rbacPluginName])
		if err := schema.ValidatePlugin(rbacPluginName, raw); err != nil {
			t.Errorf("route %q: %v", name, err)
		}
	}
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[istio-allow]", report.Approximated, "its shadow rules only log") {
		t.Errorf("the shadow rules are not reported: %v", rep)
	}
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[istio-log]", report.Ignored, "LOG never denies") {
		t.Errorf("the LOG filter is not reported: %v", rep)
	}

	objs, _ = translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, authz, deny)}, twoRoutes("80"))
	for name, r := range routeObjs(t, objs, "out-80") {
		if _, ok := rbacOf(t, r); ok {
			t.Errorf("route %q carries %s behind a filter that fails it closed", name, rbacPluginName)
		}
	}
}

// Envoy runs a fault filter in front of an RBAC filter first; APISIX runs amesh-rbac
// before fault-injection: the report says so.
func TestRBACAfterFaultIsReported(t *testing.T) {
	fault := httpFilter(faultFilterName, &faultv3.HTTPFault{})
	_, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, fault, rbacFilter(istioDenyPath("/a")))}, twoRoutes("80"))
	if !findEntry(rep, rbacField, report.Approximated, "runs after "+faultFilterName) {
		t.Errorf("the order is not reported: %v", rep)
	}
	_, rep = translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, rbacFilter(istioDenyPath("/a")), fault)}, twoRoutes("80"))
	if findEntry(rep, rbacField, report.Approximated, "runs after") {
		t.Errorf("an RBAC filter in front of the fault filter is reported as after it: %v", rep)
	}
}

// A per-route RBACPerRoute whose rules depend on the request replaces the filter's
// rules on that route only, and is reported on the route.
func TestRBACPerRouteDepending(t *testing.T) {
	r := twoRoutes("80")
	r.VirtualHosts[0].Routes[1].TypedPerFilterConfig = map[string]*anypb.Any{
		"envoy.filters.http.rbac": mustAny(&rbachttpv3.RBACPerRoute{Rbac: &rbachttpv3.RBAC{Rules: istioDenyPath("/b/x")}})}
	objs, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, rbacFilter(istioDenyPath("/a/x")))}, r)
	rs := routeObjs(t, objs, "out-80")
	for name, want := range map[string]string{"a": "/a/x", "b": "/b/x", "no-route": "/a/x"} {
		c, ok := rbacOf(t, rs[name])
		if !ok || len(c.Filters) != 1 {
			t.Fatalf("route %q: %+v", name, c)
		}
		b, _ := json.Marshal(c.Filters[0])
		if !strings.Contains(string(b), `"v":"`+want+`"`) {
			t.Errorf("route %q enforces %s, want the rules on %s", name, b, want)
		}
	}
	if !findEntry(rep, "route.typed_per_filter_config[envoy.filters.http.rbac]", report.Approximated, "enforced per request") {
		t.Errorf("the per-route rules are not reported: %v", rep)
	}
}

// The schema each of amesh's plugins that hold one as JSON text holds
// (lua/apisix/plugins/<name>.lua) is the one amesh validates its output against, less
// APISIX's injected _meta.
func TestPluginSchemasMatchLua(t *testing.T) {
	for _, plugin := range []string{rbacPluginName, xfccPluginName, upstream.TLSPlugin} {
		lua, err := os.ReadFile(filepath.Join("..", "..", "lua", "apisix", "plugins", plugin+".lua"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?s)\[==\[(.*?)\]==\]`).FindSubmatch(lua)
		if m == nil {
			t.Fatalf("%s: no [==[ schema ]==] in the plugin", plugin)
		}
		var inLua map[string]any
		if err := json.Unmarshal(m[1], &inLua); err != nil {
			t.Fatal(err)
		}
		embedded, err := os.ReadFile(filepath.Join("..", "apisix", "schema", "schemas", "plugins", plugin+".json"))
		if err != nil {
			t.Fatal(err)
		}
		var inGo map[string]any
		if err := json.Unmarshal(embedded, &inGo); err != nil {
			t.Fatal(err)
		}
		delete(inGo, "$comment")
		delete(inGo, "$schema")
		delete(inGo["properties"].(map[string]any), "_meta")
		a, _ := json.Marshal(inLua)
		b, _ := json.Marshal(inGo)
		if string(a) != string(b) {
			t.Errorf("%s: the plugin's schema and the embedded one differ:\nlua: %s\ngo:  %s", plugin, a, b)
		}
		if !schema.KnownPlugin(plugin) {
			t.Errorf("%s has no embedded schema", plugin)
		}
	}
}

// Destination port ranges beyond the ports hold the ports within; an empty range none.
func TestRBACPortRangeClamped(t *testing.T) {
	for _, tc := range []struct {
		lo, hi int32
		want   string
	}{{-5, 100, `{"ports":[0,100]}`}, {1000, 1 << 30, `{"ports":[1000,65536]}`}, {90, 80, `{"const":false}`}, {70000, 80000, `{"const":false}`}} {
		got, _ := nodeJSON(t, rbacv3.RBAC_ALLOW, &rbacv3.Permission{Rule: &rbacv3.Permission_DestinationPortRange{
			DestinationPortRange: &typev3.Int32Range{Start: tc.lo, End: tc.hi}}}, nil, rbacEnv{})
		if got != tc.want {
			t.Errorf("[%d, %d): %s, want %s", tc.lo, tc.hi, got, tc.want)
		}
	}
}

// istiod's RBAC filter for an ALLOW AuthorizationPolicy with principals, IP blocks,
// methods, paths, notPaths, a header condition and a JWT claim (captured by
// test/istiod's TestAuthorizationPolicyRules) compiles to exactly the rules
// test/nginx's TestRBACLuaDecisions runs in nginx against Envoy's decisions
// (test/nginx/testdata/istiod-rbac-allow.json), the JWT claim a matcher on the
// metadata of jwt_authn (which the chain lacks, so it never matches, as in Envoy).
func TestIstiodRBACFilter(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "istiod", "rbac-allow-rich.json"))
	if err != nil {
		t.Fatal(err)
	}
	c := &rbachttpv3.RBAC{}
	if err := protojson.Unmarshal(raw, c); err != nil {
		t.Fatal(err)
	}
	env := envOf(&hcmv3.HttpConnectionManager{NormalizePath: wrapperspb.Bool(true)}, "connection_original_dst")
	v := rbacVerdict("envoy.filters.http.rbac", c, env)
	if v.deny || v.rbac == "" || v.gaps || !strings.Contains(v.rbac, `{"meta":{"f":"envoy.filters.http.jwt_authn","path":["payload","group"]`) {
		t.Fatalf("verdict %+v, want rules for amesh-rbac with the JWT claim as a matcher on jwt_authn's metadata", v)
	}
	checkNginxRBACGolden(t, env, v.rbac, "istiod-rbac-allow.json")
}

// checkNginxRBACGolden checks that the amesh-rbac config of one compiled filter (rules)
// under env is test/nginx's golden file, which TestRBACLuaDecisions runs in nginx, and
// valid against the plugin's schema.
func checkNginxRBACGolden(t *testing.T, env rbacEnv, rules, golden string) {
	t.Helper()
	conf, err := json.Marshal(rbacPluginConf{rbacEnv: env, Filters: []json.RawMessage{json.RawMessage(rules)}})
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join("..", "..", "test", "nginx", "testdata", golden))
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if err := json.Unmarshal(conf, &a); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(want, &b); err != nil {
		t.Fatal(err)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Errorf("istiod's filter compiles to\n%s\nwant (test/nginx's %s)\n%s", ja, golden, jb)
	}
	if err := schema.ValidatePlugin(rbacPluginName, conf); err != nil {
		t.Error(err)
	}
}

// istiod's HTTP RBAC filters for an AUDIT AuthorizationPolicy (paths /audited*) next to
// an ALLOW one (paths /public*, /audited/ok), captured by test/istiod's
// TestAuthorizationPolicyAudit: the AUDIT policy's filter, action LOG, comes first and
// never denies (in Envoy it only sets access_log_hint metadata for access loggers), so
// amesh enforces nothing for it: routes behind both filters are exactly the routes
// behind the ALLOW filter alone, the report says the LOG filter refuses no request, and
// the amesh-rbac config is the ALLOW filter's only, the one test/nginx's
// TestRBACLuaDecisions runs in nginx (test/nginx/testdata/istiod-rbac-audit.json).
func TestIstiodRBACAudit(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "istiod", "rbac-audit.json"))
	if err != nil {
		t.Fatal(err)
	}
	var docs []json.RawMessage
	if err := json.Unmarshal(raw, &docs); err != nil {
		t.Fatal(err)
	}
	var filters []*hcmv3.HttpFilter
	var configs []*rbachttpv3.RBAC
	for _, d := range docs {
		f := &hcmv3.HttpFilter{}
		if err := protojson.Unmarshal(d, f); err != nil {
			t.Fatal(err)
		}
		c := &rbachttpv3.RBAC{}
		if err := f.GetTypedConfig().UnmarshalTo(c); err != nil {
			t.Fatal(err)
		}
		filters, configs = append(filters, f), append(configs, c)
	}
	if len(filters) != 2 || configs[0].GetRules().GetAction() != rbacv3.RBAC_LOG || configs[1].GetRules().GetAction() != rbacv3.RBAC_ALLOW {
		t.Fatalf("capture has %d filters, want istiod's LOG filter then its ALLOW filter", len(filters))
	}

	env := envOf(&hcmv3.HttpConnectionManager{NormalizePath: wrapperspb.Bool(true)}, "connection_original_dst")
	if v := rbacVerdict(filters[0].GetName(), configs[0], env); v.deny || v.rbac != "" || v.shadow != "" || v.authz != "" {
		t.Errorf("the LOG filter's verdict %+v, want nothing to enforce", v)
	}
	if o := rbacRules(configs[0].GetRules(), nil, false); o.decision != rbacAllowAll || !strings.Contains(o.why, "action LOG never denies (policies ns[default]-policy[audit-paths]-rule[0])") {
		t.Errorf("the LOG filter's rules: %+v", o)
	}

	// Routes behind the LOG and ALLOW filters are those behind the ALLOW filter alone: a
	// request the AUDIT policy matches is decided by the ALLOW policy only.
	both, rep := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, filters...)}, twoRoutes("80"))
	alone, _ := translateOne(t, []*listenerv3.Listener{guardedListener(80, "80", nil, filters[1])}, twoRoutes("80"))
	if len(both) != len(alone) {
		t.Errorf("%d objects with the LOG filter, %d without", len(both), len(alone))
	}
	for k, v := range alone {
		if string(both[k]) != string(v) {
			t.Errorf("%s with the LOG filter:\n%s\nwithout:\n%s", k, both[k], v)
		}
	}
	for name, r := range routeObjs(t, both, "out-80") {
		if c, ok := rbacOf(t, r); !ok || len(c.Filters) != 1 || c.Filters[0].Action != "ALLOW" {
			t.Errorf("route %q: %+v, want the ALLOW filter only", name, c)
		}
	}
	if !findEntry(rep, "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]", report.Ignored,
		"refuses no request", "action LOG never denies", "policy[audit-paths]") {
		t.Errorf("the LOG filter is not reported as never denying: %v", rep)
	}

	v := rbacVerdict(filters[1].GetName(), configs[1], env)
	if v.deny || v.rbac == "" || v.gaps {
		t.Fatalf("the ALLOW filter's verdict %+v, want rules for amesh-rbac", v)
	}
	checkNginxRBACGolden(t, env, v.rbac, "istiod-rbac-audit.json")
}

// APISIX runs a route's plugins of one phase by priority, highest first: amesh's request
// plugins must run in the order Envoy runs what they stand for: the connection
// manager's XFCC rewrite before any filter (amesh-rbac runs the jwt_authn, RBAC and
// ext_authz filters in their own order). Equal priorities would leave the order to
// APISIX's sort.
func TestPluginPriorities(t *testing.T) {
	prio := func(plugin string) int {
		lua, err := os.ReadFile(filepath.Join("..", "..", "lua", "apisix", "plugins", plugin+".lua"))
		if err != nil {
			t.Fatal(err)
		}
		m := regexp.MustCompile(`(?m)^\s*priority = (\d+),`).FindSubmatch(lua)
		if m == nil {
			t.Fatalf("%s: no priority", plugin)
		}
		n, _ := strconv.Atoi(string(m[1]))
		return n
	}
	order := []string{xfccPluginName, rbacPluginName}
	for i := 1; i < len(order); i++ {
		if a, b := prio(order[i-1]), prio(order[i]); a <= b {
			t.Errorf("%s (priority %d) must run before %s (priority %d)", order[i-1], a, order[i], b)
		}
	}
}
