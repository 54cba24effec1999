package plugins

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultcommonv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/common/fault/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func pct(n uint32, d typev3.FractionalPercent_DenominatorType) *typev3.FractionalPercent {
	return &typev3.FractionalPercent{Numerator: n, Denominator: d}
}

func withFilter(t testing.TB, r *routev3.Route, name string, m proto.Message) *routev3.Route {
	if r.TypedPerFilterConfig == nil {
		r.TypedPerFilterConfig = map[string]*anypb.Any{}
	}
	r.TypedPerFilterConfig[name] = mustAny(t, m)
	return r
}

func delay(d *durationpb.Duration, p *typev3.FractionalPercent) *faultcommonv3.FaultDelay {
	return &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_FixedDelay{FixedDelay: d}, Percentage: p}
}

func abort(status uint32, p *typev3.FractionalPercent) *faultv3.FaultAbort {
	return &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HttpStatus{HttpStatus: status}, Percentage: p}
}

const abortTail = `"body": "fault filter abort", "headers": {"content-type": "text/plain"}`

func TestFault(t *testing.T) {
	vhFault := &routev3.VirtualHost{Name: "reviews:9080", TypedPerFilterConfig: map[string]*anypb.Any{
		filterFault: mustAny(t, &faultv3.HTTPFault{Abort: abort(500, pct(100, typev3.FractionalPercent_HUNDRED))}),
	}}
	runCases(t, []featureCase{
		{
			name: "sub-second delay, ten-thousandths",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Delay: delay(durationpb.New(1500e6), pct(2500, typev3.FractionalPercent_TEN_THOUSAND)),
			}),
			plugins: `{"fault-injection": {"delay": {"duration": 1.5, "percentage": 25}}}`,
		},
		{
			name: "fractional percentage is rounded and reported; over 100% capped",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Delay: delay(durationpb.New(1e9), pct(1000, typev3.FractionalPercent_MILLION)),
				Abort: abort(418, pct(150, typev3.FractionalPercent_HUNDRED)),
			}),
			plugins:  `{"fault-injection": {"delay": {"duration": 1, "percentage": 1}, "abort": {"http_status": 418, "percentage": 100, ` + abortTail + `}}}`,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.fault].delay.percentage=approximated"},
		},
		{
			name: "zero or unset percentage never fires",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Delay: delay(durationpb.New(1e9), nil),
				Abort: abort(503, pct(0, typev3.FractionalPercent_MILLION)),
			}),
		},
		{
			name: "header-controlled faults are reported",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Delay: &faultcommonv3.FaultDelay{FaultDelaySecifier: &faultcommonv3.FaultDelay_HeaderDelay_{HeaderDelay: &faultcommonv3.FaultDelay_HeaderDelay{}}},
				Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_HeaderAbort_{HeaderAbort: &faultv3.FaultAbort_HeaderAbort{}}},
			}),
			reported: []string{
				"route.typed_per_filter_config[envoy.filters.http.fault].delay.header_delay=unsupported",
				"route.typed_per_filter_config[envoy.filters.http.fault].abort.header_abort=unsupported",
			},
		},
		{
			name: "grpc abort fails closed",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Abort: &faultv3.FaultAbort{ErrorType: &faultv3.FaultAbort_GrpcStatus{GrpcStatus: 14}},
			}),
			fail:     true,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.fault].abort.grpc_status=unsupported"},
		},
		{
			name: "header matchers fail closed",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Abort:   abort(503, pct(1, typev3.FractionalPercent_HUNDRED)),
				Headers: []*routev3.HeaderMatcher{{Name: "x"}},
			}),
			fail:     true,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.fault].headers=unsupported"},
		},
		{
			name: "upstream_cluster of another cluster: never fires",
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Abort: abort(503, pct(1, typev3.FractionalPercent_HUNDRED)), UpstreamCluster: "other",
			}),
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.fault].upstream_cluster=ignored"},
		},
		{
			name:    "virtual host config applies",
			vh:      vhFault,
			route:   forwardRoute("c"),
			plugins: `{"fault-injection": {"abort": {"http_status": 500, "percentage": 100, ` + abortTail + `}}}`,
		},
		{
			name: "route config overrides the virtual host's whole",
			vh:   vhFault,
			route: withFilter(t, forwardRoute("c"), filterFault, &faultv3.HTTPFault{
				Delay: delay(durationpb.New(2e9), pct(10, typev3.FractionalPercent_HUNDRED)),
			}),
			plugins: `{"fault-injection": {"delay": {"duration": 2, "percentage": 10}}}`,
		},
		{
			name:  "FilterConfig wrapper, and disabled at the route",
			vh:    vhFault,
			route: withFilter(t, forwardRoute("c"), filterFault, &routev3.FilterConfig{Disabled: true}),
		},
		{
			name: "FilterConfig wrapper with config",
			route: withFilter(t, forwardRoute("c"), filterFault, &routev3.FilterConfig{
				Config: mustAny(t, &faultv3.HTTPFault{Abort: abort(502, pct(5, typev3.FractionalPercent_HUNDRED))}),
			}),
			plugins: `{"fault-injection": {"abort": {"http_status": 502, "percentage": 5, ` + abortTail + `}}}`,
		},
		{
			name:     "unknown filter configs are reported",
			route:    withFilter(t, forwardRoute("c"), "envoy.filters.http.lua", &routev3.FilterConfig{}),
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.lua]=ignored"},
		},
	})
}

func exact(s string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}}
}

const preflightRule = `["OR", ["request_method", "~=", "OPTIONS"], ["http_access_control_request_method", "~~", "."]]`

func TestCORS(t *testing.T) {
	vhCORS := &routev3.VirtualHost{Name: "reviews:9080", TypedPerFilterConfig: map[string]*anypb.Any{
		filterCORS: mustAny(t, &corsv3.CorsPolicy{
			AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://vh.example")},
			AllowMethods:           "GET",
			MaxAge:                 "60",
			AllowCredentials:       wrapperspb.Bool(true),
		}),
	}}
	runCases(t, []featureCase{
		{
			name: "matcher kinds, wildcard headers",
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{
					{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "https://"}, IgnoreCase: true},
					{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: ".example.com"}},
					{MatchPattern: &matcherv3.StringMatcher_Contains{Contains: "internal"}},
				},
				AllowMethods: "*", AllowHeaders: "*", ExposeHeaders: "*",
			}),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "*", "allow_headers": "**", "expose_headers": "*",
				"_meta": {"filter": [["http_origin", "~~", "."],
					["OR", ["http_origin", "~*", "\\Ahttps\\:\\/\\/"], ["http_origin", "~~", "\\.example\\.com\\z"], ["http_origin", "~~", "internal"]],
					` + preflightRule + `]}}}`,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.cors]=approximated"},
		},
		{
			name: "a matcher accepting \"*\" accepts every origin",
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a"), {MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}},
			}),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "", "allow_headers": "",
				"_meta": {"filter": [["http_origin", "~~", "."], ` + preflightRule + `]}}}`,
		},
		{
			name: "route policy overrides the virtual host's field by field",
			vh:   vhCORS,
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowMethods: "PUT", AllowCredentials: wrapperspb.Bool(false),
			}),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "PUT", "allow_headers": "", "max_age": 60,
				"_meta": {"filter": [["http_origin", "~~", "."], ["http_origin", "==", "https://vh.example"], ` + preflightRule + `]}}}`,
		},
		{
			name:  "virtual host policy with credentials; methods * becomes APISIX's list",
			vh:    vhCORS,
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{AllowMethods: "*", ExposeHeaders: "*"}),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "**", "allow_headers": "", "max_age": 60, "allow_credential": true,
				"_meta": {"filter": [["http_origin", "~~", "."], ["http_origin", "==", "https://vh.example"], ` + preflightRule + `]}}}`,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.cors].allow_methods=approximated"},
		},
		{
			name: "disabled by filter_enabled 0",
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a")},
				FilterEnabled:          &corev3.RuntimeFractionalPercent{DefaultValue: pct(0, typev3.FractionalPercent_HUNDRED)},
			}),
		},
		{
			name: "partially enabled fails closed",
			route: withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a")},
				FilterEnabled:          &corev3.RuntimeFractionalPercent{DefaultValue: pct(50, typev3.FractionalPercent_HUNDRED)},
			}),
			fail:     true,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.cors].filter_enabled=unsupported"},
		},
		{
			name: "deprecated virtual host cors field",
			//lint:ignore SA1019 testing the deprecated field on purpose
			vh: &routev3.VirtualHost{Name: "reviews:9080", Cors: &routev3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://old")},
			}},
			route: forwardRoute("c"),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "", "allow_headers": "",
				"_meta": {"filter": [["http_origin", "~~", "."], ["http_origin", "==", "https://old"], ` + preflightRule + `]}}}`,
		},
		{
			name: "no CORS handling on a redirect",
			route: withFilter(t, redirectRoute(nil, &routev3.RedirectAction{HostRedirect: "h"}), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a")},
			}),
			plugins:  `{"redirect": {"ret_code": 301, "uri": "$scheme://h$request_uri"}}`,
			reported: []string{"route.typed_per_filter_config[envoy.filters.http.cors]=ignored"},
		},
		{
			name: "with fault injection, fault runs after cors",
			route: withFilter(t, withFilter(t, forwardRoute("c"), filterCORS, &corsv3.CorsPolicy{
				AllowOriginStringMatch: []*matcherv3.StringMatcher{exact("https://a")},
			}), filterFault, &faultv3.HTTPFault{Abort: abort(503, pct(1, typev3.FractionalPercent_HUNDRED))}),
			plugins: `{"cors": {"allow_origins": "**", "allow_methods": "", "allow_headers": "",
				"_meta": {"filter": [["http_origin", "~~", "."], ["http_origin", "==", "https://a"], ` + preflightRule + `]}},
				"fault-injection": {"_meta": {"priority": 3999}, "abort": {"http_status": 503, "percentage": 1, ` + abortTail + `}}}`,
		},
	})
}

func TestMirror(t *testing.T) {
	mirror := func(ps ...*routev3.RouteAction_RequestMirrorPolicy) *routev3.Route {
		return rewriteRoute(prefixMatch("/"), func(ra *routev3.RouteAction) { ra.RequestMirrorPolicies = ps })
	}
	const ratings = "outbound|9080|v1|ratings.default.svc.cluster.local"
	runCases(t, []featureCase{
		{
			name:     "full mirror without disabling the -shadow suffix",
			route:    mirror(&routev3.RouteAction_RequestMirrorPolicy{Cluster: ratings}),
			plugins:  `{"proxy-mirror": {"host": "http://10.0.0.7:9080"}}`,
			reported: []string{"route.route.request_mirror_policies[0].disable_shadow_host_suffix_append=approximated"},
		},
		{
			name: "fraction from ten-thousandths; the second policy is reported",
			route: mirror(
				&routev3.RouteAction_RequestMirrorPolicy{Cluster: ratings, DisableShadowHostSuffixAppend: true,
					RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(5, typev3.FractionalPercent_TEN_THOUSAND)}},
				&routev3.RouteAction_RequestMirrorPolicy{Cluster: "other", DisableShadowHostSuffixAppend: true},
			),
			plugins:  `{"proxy-mirror": {"host": "http://10.0.0.7:9080", "sample_ratio": 0.0005}}`,
			reported: []string{"route.route.request_mirror_policies[1]=unsupported"},
		},
		{
			name: "unresolvable first policy falls through to the next",
			route: mirror(
				&routev3.RouteAction_RequestMirrorPolicy{Cluster: "nowhere", DisableShadowHostSuffixAppend: true},
				&routev3.RouteAction_RequestMirrorPolicy{Cluster: ratings, DisableShadowHostSuffixAppend: true,
					RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(1, typev3.FractionalPercent_MILLION)}},
			),
			plugins: `{"proxy-mirror": {"host": "http://10.0.0.7:9080", "sample_ratio": 0.00001}}`,
			reported: []string{
				"route.route.request_mirror_policies[0].cluster=ignored",
				"route.route.request_mirror_policies[1].runtime_fraction=approximated",
			},
		},
		{
			name: "virtual host policies apply when the route has none",
			vh: &routev3.VirtualHost{Name: "reviews:9080", RequestMirrorPolicies: []*routev3.RouteAction_RequestMirrorPolicy{
				{Cluster: ratings, DisableShadowHostSuffixAppend: true},
			}},
			route:   forwardRoute("c"),
			plugins: `{"proxy-mirror": {"host": "http://10.0.0.7:9080"}}`,
		},
		{
			name: "zero fraction mirrors nothing",
			route: mirror(&routev3.RouteAction_RequestMirrorPolicy{Cluster: ratings,
				RuntimeFraction: &corev3.RuntimeFractionalPercent{DefaultValue: pct(0, typev3.FractionalPercent_HUNDRED)}}),
		},
	})
}
