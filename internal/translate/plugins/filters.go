package plugins

import (
	"sort"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/report"
)

// HTTP filter names istiod uses as typed_per_filter_config keys.
const (
	filterFault = "envoy.filters.http.fault"
	filterCORS  = "envoy.filters.http.cors"
)

// filterLevel is one level's typed_per_filter_config.
type filterLevel struct {
	field string
	cfgs  map[string]*anypb.Any
}

// filterLevels returns the levels most specific first: a weighted cluster, the route,
// the virtual host, the route configuration.
func (b *builder) filterLevels() []filterLevel {
	var ls []filterLevel
	if b.shared != nil {
		ls = append(ls, filterLevel{"route.weighted_clusters.clusters.typed_per_filter_config", b.shared.GetTypedPerFilterConfig()})
	}
	return append(ls,
		filterLevel{"route.typed_per_filter_config", b.in.Route.GetTypedPerFilterConfig()},
		filterLevel{"virtual_host.typed_per_filter_config", b.in.VirtualHost.GetTypedPerFilterConfig()},
		filterLevel{"route_config.typed_per_filter_config", b.in.RouteConfig.GetTypedPerFilterConfig()},
	)
}

// filterConfig is one decoded per-filter config and where it came from.
type filterConfig struct {
	field string
	msg   proto.Message
}

// perFilter returns the configs for one filter, most specific first, unwrapping
// envoy.config.route.v3.FilterConfig. disabled is set when the most specific entry
// disables the filter for this route. ok is false when a config cannot be decoded
// (the route has been failed).
func (b *builder) perFilter(name string) (cfgs []filterConfig, disabled, ok bool) {
	first := true
	for _, lv := range b.filterLevels() {
		a := lv.cfgs[name]
		if a == nil {
			continue
		}
		field := lv.field + "[" + name + "]"
		msg, err := a.UnmarshalNew()
		if err != nil {
			b.fail(field, report.Invalid, "cannot decode %s: %v", a.GetTypeUrl(), err)
			return nil, false, false
		}
		if fc, isFC := msg.(*routev3.FilterConfig); isFC {
			if fc.GetDisabled() {
				if first {
					return nil, true, true
				}
				continue
			}
			if fc.GetConfig() == nil {
				first = false
				continue
			}
			if msg, err = fc.GetConfig().UnmarshalNew(); err != nil {
				b.fail(field, report.Invalid, "cannot decode %s: %v", fc.GetConfig().GetTypeUrl(), err)
				return nil, false, false
			}
		}
		first = false
		cfgs = append(cfgs, filterConfig{field, msg})
	}
	return cfgs, false, true
}

// present reports whether the connection manager has a filter named name whose
// per-route configs this package translates or reports, and returns it.
func (b *builder) present(name string) (HTTPFilter, bool) {
	if b.in.HTTPFilters == nil {
		return HTTPFilter{}, true
	}
	f, ok := b.in.HTTPFilters[name]
	return f, ok && !f.Handled
}

// filterConfigs translates the per-route configs of the HTTP filters amesh knows
// (fault, cors) and reports the others.
func (b *builder) filterConfigs() {
	//lint:ignore SA1019 Envoy still honours the deprecated fields; so must amesh.
	legacy := b.in.Route.GetRoute().GetCors() != nil || b.in.VirtualHost.GetCors() != nil
	faultFilter, hasFault := b.present(filterFault)
	_, hasCORS := b.present(filterCORS)
	defaultFault := hasFault && faultFilter.Fault != nil && !faultFilter.Disabled
	if !legacy && !defaultFault && len(b.in.Route.GetTypedPerFilterConfig())+len(b.in.VirtualHost.GetTypedPerFilterConfig())+
		len(b.in.RouteConfig.GetTypedPerFilterConfig())+len(b.shared.GetTypedPerFilterConfig()) == 0 {
		return
	}
	for _, lv := range b.filterLevels() {
		names := make([]string, 0, len(lv.cfgs))
		for n := range lv.cfgs {
			if !(n == filterFault && hasFault || n == filterCORS && hasCORS) {
				names = append(names, n)
			}
		}
		sort.Strings(names)
		for _, n := range names {
			f, known := b.in.HTTPFilters[n]
			switch {
			case b.in.HTTPFilters != nil && !known:
				b.note(lv.field+"["+n+"]", report.Ignored, "per-route config for HTTP filter %q has no effect: the connection manager has no filter of that name", n)
			case !f.Handled:
				b.note(lv.field+"["+n+"]", report.Ignored, "per-route config for HTTP filter %q is not translated", n)
			}
		}
	}

	if hasFault {
		cfgs, disabled, ok := b.perFilter(filterFault)
		switch {
		case !ok || disabled:
		case len(cfgs) > 0:
			// The fault filter uses the most specific config only.
			c := cfgs[0]
			f, isFault := c.msg.(*faultv3.HTTPFault)
			if !isFault {
				b.fail(c.field, report.Invalid, "expected HTTPFault, got %T", c.msg)
			} else {
				b.fault(c.field, f)
			}
		case defaultFault:
			b.fault("http_filters["+filterFault+"]", faultFilter.Fault)
		}
	}

	if !hasCORS {
		return
	}
	cfgs, disabled, ok := b.perFilter(filterCORS)
	if !ok || disabled {
		return
	}
	if b.terminal {
		// Envoy's cors filter skips routes without a route entry: redirects and
		// direct responses get no CORS handling.
		if len(cfgs) > 0 {
			b.note(cfgs[0].field, report.Ignored, "Envoy's cors filter does not act on redirects and direct responses")
		}
		return
	}
	var policies []corsSource
	for _, c := range cfgs {
		p, isCORS := c.msg.(*corsv3.CorsPolicy)
		if !isCORS {
			b.fail(c.field, report.Invalid, "expected CorsPolicy, got %T", c.msg)
			return
		}
		policies = append(policies, corsSource{c.field, p})
	}
	if len(policies) == 0 {
		// Envoy falls back to the deprecated cors fields only when no level has a
		// typed per-filter config.
		//lint:ignore SA1019 Envoy still honours the deprecated field; so must amesh.
		if rcors := b.in.Route.GetRoute().GetCors(); rcors != nil {
			policies = append(policies, corsSource{"route.route.cors", legacyCORS(rcors)})
		}
		//lint:ignore SA1019 Envoy still honours the deprecated field; so must amesh.
		if vc := b.in.VirtualHost.GetCors(); vc != nil {
			policies = append(policies, corsSource{"virtual_host.cors", legacyCORS(vc)})
		}
	}
	if len(policies) > 0 {
		b.cors(policies)
	}
}

// legacyCORS converts the deprecated route-level CorsPolicy into the filter's type.
func legacyCORS(c *routev3.CorsPolicy) *corsv3.CorsPolicy {
	return &corsv3.CorsPolicy{
		AllowOriginStringMatch:       c.GetAllowOriginStringMatch(),
		AllowMethods:                 c.GetAllowMethods(),
		AllowHeaders:                 c.GetAllowHeaders(),
		ExposeHeaders:                c.GetExposeHeaders(),
		MaxAge:                       c.GetMaxAge(),
		AllowCredentials:             c.GetAllowCredentials(),
		FilterEnabled:                c.GetFilterEnabled(),
		ShadowEnabled:                c.GetShadowEnabled(),
		AllowPrivateNetworkAccess:    c.GetAllowPrivateNetworkAccess(),
		ForwardNotMatchingPreflights: c.GetForwardNotMatchingPreflights(),
	}
}
