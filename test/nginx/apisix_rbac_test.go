package nginx

import (
	"fmt"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xdstest"
)

// rbacListener is an outbound listener on port whose connection manager runs an RBAC
// filter with rules (nil: none) in front of the router.
func rbacListener(port int, rds string, rules *rbacv3.RBAC) proto.Message {
	return rbacFiltersListener(port, rds, xdstest.HTTPFilter("envoy.filters.http.rbac", &rbachttpv3.RBAC{Rules: rules}))
}

// rbacFiltersListener is an outbound listener on port whose connection manager
// normalises paths as istiod's do (normalize_path) and runs filters in front of the
// router.
func rbacFiltersListener(port int, rds string, filters ...*hcmv3.HttpFilter) proto.Message {
	return xdstest.ListenerWithFilters(fmt.Sprintf("0.0.0.0_%d", port), uint32(port), editHCM(xdstest.HCMWithFilters(rds, filters...), normalize))
}

// istioDenyPrefix is what istiod makes of an AuthorizationPolicy with action DENY and
// one rule "to: operation: paths: [prefix*]".
func istioDenyPrefix(prefix string) *rbacv3.RBAC {
	return &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[deny-admin]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_OrRules{OrRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
					{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{Rule: &matcherv3.PathMatcher_Path{
						Path: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}}}}}},
				}}}},
			}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_Any{Any: true}},
			}}}}},
		},
	}}
}

// HTTP RBAC filters in real APISIX: one that denies every request (ALLOW without
// policies) makes every route of its listener, and requests no route matches, answer
// Envoy's 403 "RBAC: access denied"; one whose decision depends on the request (a DENY
// on a path prefix; then that DENY followed by an ALLOW on method and header) is
// enforced per request by amesh-rbac, on routed and unrouted requests alike, in filter
// order; one without rules lets traffic through. The other listener's routes answer
// from their backend throughout, and the report names the filter.
func TestAPISIXRBAC(t *testing.T) {
	requireAPISIX(t)
	guarded, open := freePort(t), freePort(t)
	inside, outside := startBackendAt(t, "127.0.0.21", "guarded", nil), startBackendAt(t, "127.0.0.22", "open", nil)
	cg, co := fmt.Sprintf("outbound|%d||guarded.test", guarded), fmt.Sprintf("outbound|%d||open.test", open)
	msgs := []proto.Message{
		rbacListener(guarded, "guarded", &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW}),
		routeConfig("guarded", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("a", prefixMatch("/a"), cg, nil), toCluster("admin", prefixMatch("/admin"), cg, nil),
		}}),
		outbound(open, "open"),
		routeConfig("open", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("all", prefixMatch("/"), co, nil),
		}}),
	}
	msgs = append(append(msgs, edsCluster(cg, inside)...), edsCluster(co, outside)...)
	xds := newXDS(t, resourcesOf(msgs...))
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 2, Port: guarded, ExtraPorts: []int{open}})
	ap.waitServing()
	const field = "filter_chains.filters.http_connection_manager.http_filters[envoy.filters.http.rbac]"
	listener := fmt.Sprintf("0.0.0.0_%d", guarded)
	paths := []string{"/a", "/admin/x", "/unrouted"}

	// checkOpen: the other listener is unaffected.
	checkOpen := func(step string) {
		t.Helper()
		for _, p := range paths {
			if ans := ap.mustCall(open, "any.test", p); ans.code != 200 || ans.body != "open" {
				t.Errorf("%s: the other listener's %s answers %d %q, want 200 from its backend", step, p, ans.code, ans.body)
			}
		}
	}
	// checkReport: the report names the filter with msg.
	checkReport := func(step, msg string) {
		t.Helper()
		if e, ok := findEntry(ap.report(), listener, field, msg); !ok {
			t.Errorf("%s: no report entry on %s's RBAC filter saying %q", step, listener, msg)
		} else {
			t.Logf("%s: report: %s %s: %s", step, e.Resource, e.Field, e.Message)
		}
	}

	// settle waits until path answers code on every worker: many calls in a row (each
	// on a new connection, which any worker may take).
	settle := func(path string, code int) {
		t.Helper()
		waitFor(t, fmt.Sprintf("%s to answer %d on every worker", path, code), func() bool {
			for i := 0; i < 12; i++ {
				if ans, err := ap.call(guarded, "any.test", path); err != nil || ans.code != code {
					return false
				}
			}
			return true
		})
	}

	step := "ALLOW without policies"
	settle("/a", 403)
	for _, p := range paths {
		if ans := ap.mustCall(guarded, "any.test", p); ans.code != 403 || ans.body != "RBAC: access denied" {
			t.Errorf("%s: %s answers %d %q, want 403 %q", step, p, ans.code, ans.body, "RBAC: access denied")
		}
	}
	checkOpen(step)
	checkReport(step, "denies every request")

	step = "DENY on a path prefix"
	if err := xds.Update(rbacListener(guarded, "guarded", istioDenyPrefix("/admin"))); err != nil {
		t.Fatal(err)
	}
	settle("/a", 200)
	for _, c := range []struct {
		path string
		code int
		body string
	}{
		{"/a", 200, "guarded"},
		{"/admin/x", 403, "RBAC: access denied"},
		{"/admin?q=1", 403, "RBAC: access denied"},
		{"/unrouted", 404, ""},
	} {
		if ans := ap.mustCall(guarded, "any.test", c.path); ans.code != c.code || c.body != "" && ans.body != c.body {
			t.Errorf("%s: %s answers %d %q, want %d %q", step, c.path, ans.code, ans.body, c.code, c.body)
		}
	}
	// The path is the raw request target, as Envoy matches it: a dot segment does not
	// hide /admin, and a percent-encoded one is decided as DENY's worst case.
	for _, p := range []string{"/a/../admin/x", "/%61dmin"} {
		if ans, err := ap.callRaw(guarded, "any.test", p); err != nil || ans.code != 403 {
			t.Errorf("%s: %s answers %d %q (%v), want 403", step, p, ans.code, ans.body, err)
		}
	}
	checkOpen(step)
	checkReport(step, "enforced per request by amesh-rbac")

	step = "ALLOW on method and header, after a DENY"
	allowGET := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{
		"ns[default]-policy[allow-get]-rule[0]": {
			Permissions: []*rbacv3.Permission{{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: []*rbacv3.Permission{
				{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}}}},
				{Rule: &rbacv3.Permission_Header{Header: &routev3.HeaderMatcher{Name: "x-team", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "blue"}}}}}},
			}}}}},
			Principals: []*rbacv3.Principal{{Identifier: &rbacv3.Principal_Any{Any: true}}},
		},
	}}
	if err := xds.Update(rbacFiltersListener(guarded, "guarded",
		xdstest.HTTPFilter("istio-deny", &rbachttpv3.RBAC{Rules: istioDenyPrefix("/admin")}),
		xdstest.HTTPFilter("istio-allow", &rbachttpv3.RBAC{Rules: allowGET}))); err != nil {
		t.Fatal(err)
	}
	settle("/a", 403)
	for _, c := range []struct {
		path   string
		header []string
		code   int
	}{
		{"/a", nil, 403},
		{"/a", []string{"x-team", "blue-1"}, 200},
		{"/a", []string{"x-team", "red"}, 403},
		{"/admin/x", []string{"x-team", "blue-1"}, 403}, // the DENY filter first
		{"/unrouted", []string{"x-team", "blue"}, 404},
		{"/unrouted", nil, 403},
	} {
		ans, err := ap.call(guarded, "any.test", c.path, c.header...)
		if err != nil || ans.code != c.code || c.code == 403 && ans.body != "RBAC: access denied" {
			t.Errorf("%s: %s %v answers %d %q (%v), want %d", step, c.path, c.header, ans.code, ans.body, err, c.code)
		}
	}
	checkOpen(step)

	step = "no rules"
	if err := xds.Update(rbacListener(guarded, "guarded", nil)); err != nil {
		t.Fatal(err)
	}
	settle("/a", 200)
	for p, want := range map[string]int{"/a": 200, "/admin/x": 200, "/unrouted": 404} {
		ans := ap.mustCall(guarded, "any.test", p)
		if ans.code != want || want == 200 && ans.body != "guarded" {
			t.Errorf("%s: %s answers %d %q, want %d", step, p, ans.code, ans.body, want)
		}
	}
	checkOpen(step)
	checkReport(step, "refuses no request")
}

// An APISIX whose config.yaml does not enable amesh-rbac would run the routes without
// their RBAC rules (APISIX's data plane skips plugins it has not enabled): amesh's
// provider makes such routes answer 403 themselves, and the log says why.
func TestAPISIXRBACPluginNotEnabled(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	be := startBackendAt(t, "127.0.0.23", "guarded", nil)
	cl := fmt.Sprintf("outbound|%d||guarded.test", port)
	msgs := []proto.Message{
		rbacListener(port, "guarded", istioDenyPrefix("/admin")),
		routeConfig("guarded", &routev3.VirtualHost{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{
			toCluster("a", prefixMatch("/"), cl, nil),
		}}),
	}
	msgs = append(msgs, edsCluster(cl, be)...)
	xds := newXDS(t, resourcesOf(msgs...))
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 1, Port: port, OmitPlugins: []string{"amesh-rbac"}})
	ap.waitServing()
	for _, p := range []string{"/a", "/admin/x", "/unrouted"} {
		ans := ap.waitCode(port, "any.test", p, 403)
		if ans.body != "amesh: plugin amesh-rbac is not enabled in APISIX\n" {
			t.Errorf("%s answers %d %q, want the provider's 403", p, ans.code, ans.body)
		}
	}
}
