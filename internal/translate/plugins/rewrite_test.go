package plugins

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func rewriteRoute(m *routev3.RouteMatch, set func(*routev3.RouteAction)) *routev3.Route {
	ra := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}}
	set(ra)
	return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: ra}}
}

func prefixRewrite(p string) func(*routev3.RouteAction) {
	return func(ra *routev3.RouteAction) { ra.PrefixRewrite = p }
}

func TestPathRewrite(t *testing.T) {
	runCases(t, []featureCase{
		{
			name:    "prefix match keeps the rest of the path",
			route:   rewriteRoute(prefixMatch("/api/"), prefixRewrite("/")),
			plugins: `{"proxy-rewrite": {"regex_uri": ["(?s)\\A\\/api\\/(.*)", "/${1}"]}}`,
		},
		{
			name: "case-insensitive path-separated prefix",
			route: rewriteRoute(&routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/v1.0"},
				CaseSensitive: wrapperspb.Bool(false),
			}, prefixRewrite("/v2$")),
			plugins: `{"proxy-rewrite": {"regex_uri": ["(?s)\\A(?i)\\/v1\\.0(.*)", "/v2$$${1}"]}}`,
		},
		{
			name:    "exact path is replaced whole",
			route:   rewriteRoute(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/old"}}, prefixRewrite("/new")),
			plugins: `{"proxy-rewrite": {"uri": "/new"}}`,
		},
		{
			name: "regex match is replaced whole, dollar kept literal",
			route: rewriteRoute(&routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "/a.*"}}},
				prefixRewrite("/$x")),
			plugins: `{"proxy-rewrite": {"regex_uri": ["(?s)\\A.*", "/$$x"]}}`,
		},
		{
			name: "regex rewrite",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
					Pattern:      &matcherv3.RegexMatcher{Regex: `^/(\d+)/x$`},
					Substitution: `/id/\1\\`,
				}
			}),
			plugins: `{"proxy-rewrite": {"regex_uri": ["\\A\\/((?:[0-9])+)\\/x\\z", "/id/${1}\\"]}}`,
		},
		{
			name: "regex rewrite referring to a missing group",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: `^/a`}, Substitution: `\1`}
			}),
			fail:     true,
			reported: []string{"route.route.regex_rewrite=invalid"},
		},
		{
			name: "unanchored regex rewrite fails closed",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: `/+`}, Substitution: `/`}
			}),
			fail:     true,
			reported: []string{"route.route.regex_rewrite=unsupported"},
		},
		{
			name: "host rewrite",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "a.example:8080"}
			}),
			plugins: `{"proxy-rewrite": {"host": "a.example:8080"}}`,
		},
		{
			name: "auto host rewrite fails closed",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.HostRewriteSpecifier = &routev3.RouteAction_AutoHostRewrite{AutoHostRewrite: wrapperspb.Bool(true)}
			}),
			fail:     true,
			reported: []string{"route.route.auto_host_rewrite=unsupported"},
		},
		{
			name: "host rewrite from header fails closed",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteHeader{HostRewriteHeader: "x-host"}
			}),
			fail:     true,
			reported: []string{"route.route.host_rewrite_header=unsupported"},
		},
		{
			name: "host the schema refuses",
			route: rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) {
				ra.HostRewriteSpecifier = &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "a_b"}
			}),
			fail:     true,
			reported: []string{"route.route.host_rewrite_literal=unsupported"},
		},
	})
}

func TestDirectResponse(t *testing.T) {
	direct := func(status uint32, body *corev3.DataSource) *routev3.Route {
		return &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: status, Body: body}}}
	}
	inline := func(s string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
	}
	runCases(t, []featureCase{
		{
			name:    "inline bytes",
			route:   direct(503, &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: []byte("down")}}),
			plugins: `{"mocking": {"response_status": 503, "response_example": "down", "content_type": "text/plain", "with_mock_header": false}}`,
		},
		{
			name:     "no body",
			route:    direct(204, nil),
			plugins:  `{"mocking": {"response_status": 204, "response_example": "", "content_type": "text/plain", "with_mock_header": false}}`,
			reported: []string{"route.direct_response.body=approximated"},
		},
		{
			name:     "3xx lacks Location",
			route:    direct(302, inline("moved")),
			plugins:  `{"mocking": {"response_status": 302, "response_example": "moved", "content_type": "text/plain", "with_mock_header": false}}`,
			reported: []string{"route.direct_response.status=approximated"},
		},
		{
			name:     "file body",
			route:    direct(200, &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/etc/x"}}),
			fail:     true,
			reported: []string{"route.direct_response.body=unsupported"},
		},
		{
			name:     "body over Envoy's default limit",
			route:    direct(200, inline(strings.Repeat("x", 4097))),
			fail:     true,
			reported: []string{"route.direct_response.body=invalid"},
		},
		{
			name:    "body within a raised limit",
			rc:      &routev3.RouteConfiguration{Name: "9080", MaxDirectResponseBodySizeBytes: wrapperspb.UInt32(5000)},
			route:   direct(200, inline(strings.Repeat("x", 4097))),
			plugins: `{"mocking": {"response_status": 200, "response_example": "` + strings.Repeat("x", 4097) + `", "content_type": "text/plain", "with_mock_header": false}}`,
		},
		{
			name:     "body with a variable",
			route:    direct(200, inline("pay ${amount}")),
			fail:     true,
			reported: []string{"route.direct_response.body=unsupported"},
		},
		{
			name:     "invalid status",
			route:    direct(100, nil),
			fail:     true,
			reported: []string{"route.direct_response.status=invalid"},
		},
	})
}
