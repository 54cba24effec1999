package plugins

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func hv(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
}

const (
	appendOrAdd    = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	addIfAbsent    = corev3.HeaderValueOption_ADD_IF_ABSENT
	overwriteOrAdd = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	overwriteIfSet = corev3.HeaderValueOption_OVERWRITE_IF_EXISTS
)

func forwardRoute(cluster string) *routev3.Route {
	return &routev3.Route{
		Match:  prefixMatch("/"),
		Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
	}
}

func withReqHeaders(r *routev3.Route, add []*corev3.HeaderValueOption, remove ...string) *routev3.Route {
	r.RequestHeadersToAdd, r.RequestHeadersToRemove = add, remove
	return r
}

func TestRequestHeaders(t *testing.T) {
	runCases(t, []featureCase{
		{
			name: "append, overwrite, remove; names lowercased",
			route: withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{
				hv("X-A", "1", appendOrAdd), hv("x-b", "2", overwriteOrAdd),
			}, "X-Gone"),
			plugins: `{"proxy-rewrite": {"headers": {"add": {"x-a": "1"}, "set": {"x-b": "2"}, "remove": ["x-gone"]}}}`,
		},
		{
			name: "overwrites apply before appends within one level",
			route: withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{
				hv("x", "appended", appendOrAdd), hv("x", "first", overwriteOrAdd), hv("x", "second", overwriteOrAdd),
			}),
			plugins: `{"proxy-rewrite": {"headers": {"set": {"x": ["second", "appended"]}}}}`,
		},
		{
			name: "deprecated append=false overwrites; empty value dropped unless kept",
			route: withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x", Value: "v"}, Append: wrapperspb.Bool(false)},
				{Header: &corev3.HeaderValue{Key: "y", Value: "v"}, Append: wrapperspb.Bool(true)},
				hv("empty", "", overwriteOrAdd),
				{Header: &corev3.HeaderValue{Key: "kept"}, KeepEmptyValue: true, AppendAction: overwriteOrAdd},
				{Header: &corev3.HeaderValue{Key: "raw", RawValue: []byte("bytes")}},
			}),
			plugins: `{"proxy-rewrite": {"headers": {"set": {"x": "v", "kept": ""}, "add": {"y": "v", "raw": "bytes"}}}}`,
		},
		{
			name: "remove then add in the same level",
			route: withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{
				hv("x", "new", appendOrAdd), hv("x", "ignored", overwriteIfSet), hv("x", "also", addIfAbsent),
			}, "x"),
			// After the removal x is absent: ADD_IF_ABSENT adds, OVERWRITE_IF_EXISTS does not.
			plugins: `{"proxy-rewrite": {"headers": {"set": {"x": ["new", "also"]}}}}`,
		},
		{
			name:     "conditional action on a header of unknown presence fails closed",
			route:    withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("x", "v", addIfAbsent)}),
			fail:     true,
			reported: []string{"route.request_headers_to_add=unsupported"},
		},
		{
			name:     "percent-encoded literal and a substitution command",
			route:    withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("x", "%DOWNSTREAM_REMOTE_ADDRESS%", appendOrAdd)}),
			fail:     true,
			reported: []string{"route.request_headers_to_add=unsupported"},
		},
		{
			name:    "double percent is a literal percent",
			route:   withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("x", "50%%", appendOrAdd)}),
			plugins: `{"proxy-rewrite": {"headers": {"add": {"x": "50%"}}}}`,
		},
		{
			name:     "dollar variable would be substituted by APISIX",
			route:    withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("x", "cost $5", appendOrAdd)}),
			fail:     true,
			reported: []string{"route.request_headers_to_add=unsupported"},
		},
		{
			name:    "lone dollar is literal",
			route:   withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("x", "a $ b", appendOrAdd)}),
			plugins: `{"proxy-rewrite": {"headers": {"add": {"x": "a $ b"}}}}`,
		},
		{
			name:     "host cannot be mutated",
			route:    withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{hv("Host", "x", overwriteOrAdd)}),
			fail:     true,
			reported: []string{"route.request_headers_to_add=invalid"},
		},
		{
			name: "append and append_action together are invalid",
			route: withReqHeaders(forwardRoute("c"), []*corev3.HeaderValueOption{
				{Header: &corev3.HeaderValue{Key: "x", Value: "v"}, Append: wrapperspb.Bool(true), AppendAction: overwriteOrAdd},
			}),
			fail:     true,
			reported: []string{"route.request_headers_to_add=invalid"},
		},
		{
			name:    "request headers are not applied to redirects",
			route:   withReqHeaders(redirectRoute(nil, &routev3.RedirectAction{HostRedirect: "h"}), []*corev3.HeaderValueOption{hv("x", "v", appendOrAdd)}),
			plugins: `{"redirect": {"ret_code": 301, "uri": "$scheme://h$request_uri"}}`,
		},
	})
}

// levelsConfig puts one overwrite of header x on every level.
func levelsConfig(mostSpecificWins bool) (*routev3.RouteConfiguration, *routev3.VirtualHost, *routev3.Route) {
	rc := &routev3.RouteConfiguration{
		Name:                            "9080",
		MostSpecificHeaderMutationsWins: mostSpecificWins,
		RequestHeadersToAdd:             []*corev3.HeaderValueOption{hv("x", "global", overwriteOrAdd), hv("g", "1", appendOrAdd)},
		ResponseHeadersToAdd:            []*corev3.HeaderValueOption{hv("x", "global", overwriteOrAdd)},
	}
	vh := &routev3.VirtualHost{
		Name:                 "reviews:9080",
		RequestHeadersToAdd:  []*corev3.HeaderValueOption{hv("x", "vhost", overwriteOrAdd), hv("v", "vh", overwriteIfSet)},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{hv("x", "vhost", overwriteOrAdd)},
	}
	r := forwardRoute("c")
	r.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x", "route", overwriteOrAdd), hv("v", "r", appendOrAdd)}
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{hv("x", "route", overwriteOrAdd)}
	return rc, vh, r
}

func TestHeaderLevelPrecedence(t *testing.T) {
	rc, vh, r := levelsConfig(false)
	rc2, vh2, r2 := levelsConfig(true)
	runCases(t, []featureCase{
		{
			// Default: route, then virtual host, then route config; the last write wins.
			// v is appended by the route, so the virtual host's OVERWRITE_IF_EXISTS
			// knows it is present.
			name: "least specific wins by default", rc: rc, vh: vh, route: r,
			plugins: `{"proxy-rewrite": {"headers": {"set": {"x": "global", "v": "vh"}, "add": {"g": "1"}}},
			           "response-rewrite": {"headers": {"set": {"x": "global"}}}}`,
		},
		{
			// most_specific_header_mutations_wins: route config, virtual host, route. The
			// virtual host's OVERWRITE_IF_EXISTS now runs before anything set v.
			name: "most specific wins", rc: rc2, vh: vh2, route: r2,
			fail:     true,
			reported: []string{"virtual_host.request_headers_to_add=unsupported"},
		},
	})
	r2.RequestHeadersToAdd = r2.RequestHeadersToAdd[:1]
	vh2.RequestHeadersToAdd = vh2.RequestHeadersToAdd[:1]
	runCases(t, []featureCase{{
		name: "most specific wins without conditionals", rc: rc2, vh: vh2, route: r2,
		plugins: `{"proxy-rewrite": {"headers": {"set": {"x": "route"}, "add": {"g": "1"}}},
		           "response-rewrite": {"headers": {"set": {"x": "route"}}}}`,
	}})
}

func TestResponseHeaders(t *testing.T) {
	withResp := func(r *routev3.Route, add []*corev3.HeaderValueOption, remove ...string) *routev3.Route {
		r.ResponseHeadersToAdd, r.ResponseHeadersToRemove = add, remove
		return r
	}
	runCases(t, []featureCase{
		{
			name:    "append, set, remove",
			route:   withResp(forwardRoute("c"), []*corev3.HeaderValueOption{hv("A", "1", appendOrAdd), hv("a", "2", appendOrAdd), hv("b", "x", overwriteOrAdd)}, "c"),
			plugins: `{"response-rewrite": {"headers": {"add": ["a: 1", "a: 2"], "set": {"b": "x"}, "remove": ["c"]}}}`,
		},
		{
			name:     "appended value with a colon cannot be expressed",
			route:    withResp(forwardRoute("c"), []*corev3.HeaderValueOption{hv("a", "http://x", appendOrAdd)}),
			fail:     true,
			reported: []string{"route.response_headers_to_add=unsupported"},
		},
		{
			name:     "replacing with two values cannot be expressed",
			route:    withResp(forwardRoute("c"), []*corev3.HeaderValueOption{hv("a", "1", overwriteOrAdd), hv("a", "2", appendOrAdd)}),
			fail:     true,
			reported: []string{"route.response_headers_to_add=unsupported"},
		},
		{
			name:    "response headers apply to direct responses",
			route:   withResp(&routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok"}}}}}, []*corev3.HeaderValueOption{hv("a", "1", overwriteOrAdd)}),
			plugins: `{"mocking": {"response_status": 200, "response_example": "ok", "content_type": "text/plain", "with_mock_header": false}, "response-rewrite": {"headers": {"set": {"a": "1"}}}}`,
		},
	})
}

func TestWeightedClusterHeaders(t *testing.T) {
	weighted := func(cws ...*routev3.WeightedCluster_ClusterWeight) *routev3.Route {
		return &routev3.Route{Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{Clusters: cws}},
		}}}
	}
	cw := func(name, dest string) *routev3.WeightedCluster_ClusterWeight {
		return &routev3.WeightedCluster_ClusterWeight{
			Name: name, Weight: wrapperspb.UInt32(50),
			RequestHeadersToAdd: []*corev3.HeaderValueOption{hv("x-dest", dest, overwriteOrAdd)},
		}
	}
	same := weighted(cw("a", "v"), cw("b", "v"))
	same.RequestHeadersToAdd = []*corev3.HeaderValueOption{hv("x-dest", "route", overwriteOrAdd)}
	runCases(t, []featureCase{
		{
			// The cluster's mutations run first, so the route's overwrite wins.
			name: "identical per-cluster headers apply before the route's", route: same,
			plugins: `{"proxy-rewrite": {"headers": {"set": {"x-dest": "route"}}}}`,
		},
		{
			name: "different per-cluster headers fail closed", route: weighted(cw("a", "v1"), cw("b", "v2")),
			fail:     true,
			reported: []string{"route.weighted_clusters.clusters=unsupported"},
		},
	})
}
