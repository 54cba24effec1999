package resource

// The messages every route has are walked with their generated getters: through
// reflection, the walk of a route configuration cost as much as the protos' own
// validation (tens of milliseconds at 10,000 services). A typed walk must take every
// field the reflective walk would, and report a failure at the same place: the test
// builds a failing message for each such field from the descriptors
// (TestTypedWalksMatchReflection), so a field added to the protos cannot be missed
// here unnoticed. Everything else goes through walkNode.

import (
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
)

// typedWalks are the typed walks walkNode uses, by type (set by init: they use
// walkNode themselves).
var typedWalks map[protoreflect.FullName]func(protoreflect.Message) *validationError

func init() {
	typedWalks = map[protoreflect.FullName]func(protoreflect.Message) *validationError{
		"envoy.config.route.v3.VirtualHost": func(m protoreflect.Message) *validationError {
			return walkVirtualHost(m.Interface().(*routev3.VirtualHost))
		},
		"envoy.config.route.v3.Route": func(m protoreflect.Message) *validationError {
			return walkRoute(m.Interface().(*routev3.Route))
		},
		"envoy.config.route.v3.RouteAction": func(m protoreflect.Message) *validationError {
			return walkRouteAction(m.Interface().(*routev3.RouteAction))
		},
	}
}

// walkMessage is walk for a message of any type.
func walkMessage(m proto.Message) *validationError {
	r := m.ProtoReflect()
	return walkNode(r, nodeOf(r.Descriptor()))
}

// walkList walks each element of a list with f, naming an element by name(e) when
// that is not empty.
func walkList[M proto.Message](field string, l []M, name func(M) string, f func(M) *validationError) *validationError {
	for i, e := range l {
		if err := f(e); err != nil {
			n := ""
			if name != nil {
				n = name(e)
			}
			return err.in(listSegment(n, i)).in(field)
		}
	}
	return nil
}

func walkDuration(field string, d *durationpb.Duration) *validationError {
	if d == nil {
		return nil
	}
	if err := checkDuration(d.GetSeconds(), int64(d.GetNanos())); err != nil {
		return err.in(field)
	}
	return nil
}

func walkRegex(field string, m *matcherv3.RegexMatcher) *validationError {
	if m == nil {
		return nil
	}
	if err := checkRegex(m.GetRegex()); err != nil {
		return err.in(field)
	}
	return nil
}

// walkOther walks a message typed code does not cover.
func walkOther[M interface {
	proto.Message
	comparable
}](field string, m M) *validationError {
	var zero M
	if m == zero {
		return nil
	}
	if err := walkMessage(m); err != nil {
		return err.in(field)
	}
	return nil
}

func walkVirtualHost(vh *routev3.VirtualHost) *validationError {
	if err := walkList("routes", vh.GetRoutes(), (*routev3.Route).GetName, walkRoute); err != nil {
		return err
	}
	if err := walkOther("matcher", vh.GetMatcher()); err != nil {
		return err
	}
	if err := walkList("virtual_clusters", vh.GetVirtualClusters(), (*routev3.VirtualCluster).GetName, walkMsg[*routev3.VirtualCluster]); err != nil {
		return err
	}
	if err := walkList("rate_limits", vh.GetRateLimits(), nil, walkMsg[*routev3.RateLimit]); err != nil {
		return err
	}
	//lint:ignore SA1019 deprecated fields are still read by Envoy, and checked like the others
	if err := walkOther("cors", vh.GetCors()); err != nil {
		return err
	}
	if p := vh.GetRetryPolicy(); p != nil {
		if err := walkRetryPolicy(p); err != nil {
			return err.in("retry_policy")
		}
	}
	return walkList("request_mirror_policies", vh.GetRequestMirrorPolicies(), nil, walkMsg[*routev3.RouteAction_RequestMirrorPolicy])
}

func walkMsg[M proto.Message](m M) *validationError { return walkMessage(m) }

func walkRoute(r *routev3.Route) *validationError {
	if m := r.GetMatch(); m != nil {
		if err := walkRouteMatch(m); err != nil {
			return err.in("match")
		}
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		if a.Route != nil {
			if err := walkRouteAction(a.Route); err != nil {
				return err.in("route")
			}
		}
	case *routev3.Route_Redirect:
		return walkOther("redirect", a.Redirect)
	}
	return nil
}

func walkRouteMatch(m *routev3.RouteMatch) *validationError {
	if err := walkRegex("safe_regex", m.GetSafeRegex()); err != nil {
		return err
	}
	if err := walkList("headers", m.GetHeaders(), (*routev3.HeaderMatcher).GetName, walkHeaderMatcher); err != nil {
		return err
	}
	if err := walkList("query_parameters", m.GetQueryParameters(), (*routev3.QueryParameterMatcher).GetName, walkQueryParameterMatcher); err != nil {
		return err
	}
	if err := walkList("cookies", m.GetCookies(), nil, walkMsg[*routev3.CookieMatcher]); err != nil {
		return err
	}
	if err := walkList("dynamic_metadata", m.GetDynamicMetadata(), nil, walkMsg[*matcherv3.MetadataMatcher]); err != nil {
		return err
	}
	return walkList("filter_state", m.GetFilterState(), nil, walkMsg[*matcherv3.FilterStateMatcher])
}

func walkHeaderMatcher(h *routev3.HeaderMatcher) *validationError {
	//lint:ignore SA1019 deprecated matchers are still valid xDS, compiled by Envoy
	if err := walkRegex("safe_regex_match", h.GetSafeRegexMatch()); err != nil {
		return err
	}
	if sm := h.GetStringMatch(); sm != nil {
		if err := walkRegex("safe_regex", sm.GetSafeRegex()); err != nil {
			return err.in("string_match")
		}
	}
	return nil
}

func walkQueryParameterMatcher(q *routev3.QueryParameterMatcher) *validationError {
	if sm := q.GetStringMatch(); sm != nil {
		if err := walkRegex("safe_regex", sm.GetSafeRegex()); err != nil {
			return err.in("string_match")
		}
	}
	return nil
}

func walkRouteAction(a *routev3.RouteAction) *validationError {
	if wc := a.GetWeightedClusters(); wc != nil {
		if err := checkWeights(wc); err != nil {
			return err.in("weighted_clusters")
		}
	}
	if err := walkOther("regex_rewrite", a.GetRegexRewrite()); err != nil {
		return err
	}
	if err := walkOther("host_rewrite_path_regex", a.GetHostRewritePathRegex()); err != nil {
		return err
	}
	for _, d := range []struct {
		field string
		d     *durationpb.Duration
	}{
		{"timeout", a.GetTimeout()},
		{"idle_timeout", a.GetIdleTimeout()},
		{"flush_timeout", a.GetFlushTimeout()},
		//lint:ignore SA1019 deprecated fields are still read by Envoy, and checked like the others
		{"max_grpc_timeout", a.GetMaxGrpcTimeout()},
		//lint:ignore SA1019 deprecated fields are still read by Envoy, and checked like the others
		{"grpc_timeout_offset", a.GetGrpcTimeoutOffset()},
	} {
		if err := walkDuration(d.field, d.d); err != nil {
			return err
		}
	}
	if p := a.GetRetryPolicy(); p != nil {
		if err := walkRetryPolicy(p); err != nil {
			return err.in("retry_policy")
		}
	}
	if err := walkList("request_mirror_policies", a.GetRequestMirrorPolicies(), nil, walkMsg[*routev3.RouteAction_RequestMirrorPolicy]); err != nil {
		return err
	}
	if err := walkList("rate_limits", a.GetRateLimits(), nil, walkMsg[*routev3.RateLimit]); err != nil {
		return err
	}
	if err := walkList("hash_policy", a.GetHashPolicy(), nil, walkMsg[*routev3.RouteAction_HashPolicy]); err != nil {
		return err
	}
	//lint:ignore SA1019 deprecated fields are still read by Envoy, and checked like the others
	if err := walkOther("cors", a.GetCors()); err != nil {
		return err
	}
	if m := a.GetMaxStreamDuration(); m != nil {
		for _, d := range []struct {
			field string
			d     *durationpb.Duration
		}{
			{"max_stream_duration", m.GetMaxStreamDuration()},
			{"grpc_timeout_header_max", m.GetGrpcTimeoutHeaderMax()},
			{"grpc_timeout_header_offset", m.GetGrpcTimeoutHeaderOffset()},
		} {
			if err := walkDuration(d.field, d.d); err != nil {
				return err.in("max_stream_duration")
			}
		}
	}
	return nil
}

func walkRetryPolicy(p *routev3.RetryPolicy) *validationError {
	if err := walkDuration("per_try_timeout", p.GetPerTryTimeout()); err != nil {
		return err
	}
	if err := walkDuration("per_try_idle_timeout", p.GetPerTryIdleTimeout()); err != nil {
		return err
	}
	if err := walkOther("retry_back_off", p.GetRetryBackOff()); err != nil {
		return err
	}
	if err := walkOther("rate_limited_retry_back_off", p.GetRateLimitedRetryBackOff()); err != nil {
		return err
	}
	if err := walkList("retriable_headers", p.GetRetriableHeaders(), (*routev3.HeaderMatcher).GetName, walkHeaderMatcher); err != nil {
		return err
	}
	return walkList("retriable_request_headers", p.GetRetriableRequestHeaders(), (*routev3.HeaderMatcher).GetName, walkHeaderMatcher)
}
