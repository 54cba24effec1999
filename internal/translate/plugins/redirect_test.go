package plugins

import (
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
)

// featureCase is one table row: a route (with optional virtual host / route config
// extras) and the exact plugins it must produce.
type featureCase struct {
	name     string
	rc       *routev3.RouteConfiguration
	vh       *routev3.VirtualHost
	route    *routev3.Route
	plugins  string   // JSON; "" for none
	fail     bool     // FailClosed expected
	reported []string // "field=severity" entries that must be present
}

func runCases(t *testing.T, cases []featureCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rc, vh := c.rc, c.vh
			if rc == nil {
				rc = &routev3.RouteConfiguration{Name: "9080"}
			}
			if vh == nil {
				vh = &routev3.VirtualHost{Name: "reviews:9080", Domains: []string{"*"}}
			}
			if c.route.Name == "" {
				c.route.Name = "r"
			}
			out := ForRoute(Input{RouteConfig: rc, VirtualHost: vh, Route: c.route, MirrorTarget: mirrorTargets})
			if out.FailClosed != c.fail {
				t.Fatalf("FailClosed = %v, want %v; report: %v", out.FailClosed, c.fail, out.Report)
			}
			if c.fail && out.Plugins != nil {
				t.Errorf("failed route still has plugins: %v", out.Plugins)
			}
			if c.fail && !hasEntry(out.Report, "", report.Unsupported) && !hasEntry(out.Report, "", report.Invalid) {
				t.Errorf("failed route without an unsupported/invalid report entry: %v", out.Report)
			}
			diffJSON(t, c.plugins, out.Plugins)
			checkSchemas(t, out.Plugins)
			got := map[string]bool{}
			for _, s := range severities(out.Report) {
				got[s] = true
			}
			for _, want := range c.reported {
				if !got[want] {
					t.Errorf("missing report entry %s; got %v", want, severities(out.Report))
				}
			}
			for _, e := range out.Report {
				if e.Kind != "route" || e.Resource != "9080/"+vh.GetName()+"/"+c.route.GetName() || e.Message == "" {
					t.Errorf("malformed report entry %+v", e)
				}
			}
		})
	}
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func redirectRoute(m *routev3.RouteMatch, r *routev3.RedirectAction) *routev3.Route {
	if m == nil {
		m = prefixMatch("/")
	}
	return &routev3.Route{Match: m, Action: &routev3.Route_Redirect{Redirect: r}}
}

func TestRedirect(t *testing.T) {
	runCases(t, []featureCase{
		{
			name:    "path redirect keeps query, default 301",
			route:   redirectRoute(nil, &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new"}}),
			plugins: `{"redirect": {"ret_code": 301, "uri": "$scheme://$http_host/new", "append_query_string": true}}`,
		},
		{
			name: "path redirect with its own query ignores strip_query",
			route: redirectRoute(nil, &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/new?a=1"},
				StripQuery:           true,
				ResponseCode:         routev3.RedirectAction_SEE_OTHER,
			}),
			plugins: `{"redirect": {"ret_code": 303, "uri": "$scheme://$http_host/new?a=1"}}`,
		},
		{
			name: "path redirect without leading slash, strip query",
			route: redirectRoute(nil, &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "new"},
				StripQuery:           true,
				ResponseCode:         routev3.RedirectAction_FOUND,
			}),
			plugins: `{"redirect": {"ret_code": 302, "uri": "$scheme://$http_host/new"}}`,
		},
		{
			name: "https redirect keeps path and query",
			route: redirectRoute(nil, &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				ResponseCode:           routev3.RedirectAction_PERMANENT_REDIRECT,
			}),
			plugins:  `{"redirect": {"ret_code": 308, "uri": "https://$http_host$request_uri"}}`,
			reported: []string{"route.redirect=approximated"},
		},
		{
			name: "host and port redirect",
			route: redirectRoute(nil, &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "HTTP"},
				HostRedirect:           "example.com",
				PortRedirect:           8443,
				ResponseCode:           routev3.RedirectAction_TEMPORARY_REDIRECT,
			}),
			plugins: `{"redirect": {"ret_code": 307, "uri": "http://example.com:8443$request_uri"}}`,
		},
		{
			name:    "port redirect keeps the request host",
			route:   redirectRoute(nil, &routev3.RedirectAction{PortRedirect: 8080}),
			plugins: `{"redirect": {"ret_code": 301, "uri": "$scheme://$host:8080$request_uri"}}`,
		},
		{
			name:     "strip query without path rewrite",
			route:    redirectRoute(nil, &routev3.RedirectAction{StripQuery: true, HostRedirect: "a.example"}),
			plugins:  `{"redirect": {"ret_code": 301, "uri": "$scheme://a.example$uri"}}`,
			reported: []string{"route.redirect.strip_query=approximated"},
		},
		{
			name: "prefix rewrite on a prefix match, relative Location",
			route: redirectRoute(prefixMatch("/old/"), &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"},
			}),
			plugins:  `{"redirect": {"ret_code": 301, "regex_uri": ["(?s)\\A\\/old\\/(.*)", "/new/${1}"], "append_query_string": true}}`,
			reported: []string{"route.redirect.prefix_rewrite=approximated"},
		},
		{
			name: "prefix rewrite with fixed scheme and host, case-insensitive prefix",
			route: redirectRoute(&routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/Old"},
				CaseSensitive: wrapperspb.Bool(false),
			}, &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				HostRedirect:           "new.example",
				PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/$x"},
				StripQuery:             true,
			}),
			plugins: `{"redirect": {"ret_code": 301, "regex_uri": ["(?s)\\A(?i)\\/Old(.*)", "https://new.example/$$x${1}"]}}`,
		},
		{
			name: "prefix rewrite on an exact path replaces the whole path",
			route: redirectRoute(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/a"}}, &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/b"},
			}),
			plugins: `{"redirect": {"ret_code": 301, "uri": "$scheme://$http_host/b", "append_query_string": true}}`,
		},
		{
			name: "prefix rewrite with scheme change but request host cannot be expressed",
			route: redirectRoute(prefixMatch("/old"), &routev3.RedirectAction{
				SchemeRewriteSpecifier: &routev3.RedirectAction_HttpsRedirect{HttpsRedirect: true},
				PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new"},
			}),
			fail:     true,
			reported: []string{"route.redirect.prefix_rewrite=unsupported"},
		},
		{
			name: "regex rewrite anchored",
			route: redirectRoute(nil, &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
					Pattern:      &matcherv3.RegexMatcher{Regex: `^/svc/([^/]+)(/.*)$`},
					Substitution: `\2/instance/\1`,
				}},
			}),
			plugins:  `{"redirect": {"ret_code": 301, "append_query_string": true, "regex_uri": ["\\A\\/svc\\/((?:[\\x00-\\x2e0-\\x7f\\x80-\\xff])+)(\\/(?:[^\\n])*)\\z", "${2}/instance/${1}"]}}`,
			reported: []string{"route.redirect.regex_rewrite=approximated"},
		},
		{
			name: "regex rewrite not anchored fails closed",
			route: redirectRoute(nil, &routev3.RedirectAction{
				PathRewriteSpecifier: &routev3.RedirectAction_RegexRewrite{RegexRewrite: &matcherv3.RegexMatchAndSubstitute{
					Pattern: &matcherv3.RegexMatcher{Regex: `a`}, Substitution: "b",
				}},
			}),
			fail:     true,
			reported: []string{"route.redirect.regex_rewrite=unsupported"},
		},
		{
			name:     "dollar in path redirect fails closed",
			route:    redirectRoute(nil, &routev3.RedirectAction{PathRewriteSpecifier: &routev3.RedirectAction_PathRedirect{PathRedirect: "/$var"}}),
			fail:     true,
			reported: []string{"route.redirect.path_redirect=unsupported"},
		},
		{
			name:     "unknown response code",
			route:    redirectRoute(nil, &routev3.RedirectAction{ResponseCode: 42}),
			fail:     true,
			reported: []string{"route.redirect.response_code=invalid"},
		},
	})
}
