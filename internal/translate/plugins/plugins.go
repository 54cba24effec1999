// Package plugins translates the features of one Envoy route that APISIX expresses as
// route plugins: redirects and direct responses, path and host rewrites, header
// mutations, fault injection, CORS and request mirroring. Route matching, cluster
// choice, timeouts, retries and hash policies belong to package translate, which calls
// ForRoute for every route it emits.
//
// The translation keeps Envoy's semantics or says why it cannot: every field that is
// not carried over exactly produces a report.Entry, and a feature whose absence would
// change what a client or an upstream sees sets Output.FailClosed, so that the caller
// emits a route that answers 5xx instead of one that behaves differently.
//
// Plugin configurations only contain maps, slices, strings, booleans and numbers, so
// encoding/json gives the same bytes for the same input.
//
// Differences that hold for every route and are therefore not reported per route:
// APISIX rewrites and regex-redirects nginx's $uri, which is percent-decoded and
// normalized, where Envoy works on the path as received; and PCRE runs on bytes where
// RE2 runs on UTF-8 characters (see regex.go).
package plugins

import (
	"fmt"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"

	"github.com/amesh-dev/amesh/internal/report"
)

// Input is one route with the virtual host and route configuration it belongs to
// (both are needed: headers, typed_per_filter_config and mirror policies inherit).
type Input struct {
	RouteConfig *routev3.RouteConfiguration
	VirtualHost *routev3.VirtualHost
	Route       *routev3.Route
	// MirrorTarget resolves a cluster name to the URL proxy-mirror sends to
	// ("http://10.0.0.1:9080"); ok=false when the cluster has no usable endpoint.
	// Nil means no cluster can be resolved.
	MirrorTarget func(cluster string) (hostURL string, ok bool)
	// Resource names the route in report entries. Default:
	// "<route config>/<virtual host>/<route name>".
	Resource string
	// HTTPFilters are the HTTP filters of the connection manager serving the route, by
	// name (the key of their per-route configs). Per-route configs of names it lacks
	// have no effect, as in Envoy. Nil: the connection manager is not known, and every
	// name is taken as a filter that is present and enabled (fault and CORS under the
	// names Istio gives them).
	HTTPFilters map[string]HTTPFilter
}

// HTTPFilter is what the connection manager has under one filter name.
type HTTPFilter struct {
	// Handled: the caller takes care of this filter's per-route configs (it enforces
	// them or fails the route closed); they are not reported here.
	Handled bool
	// Disabled: the filter is disabled by default; a per-route config enables it.
	Disabled bool
	// Fault is the fault filter's own config, which applies to routes without a
	// per-route one; nil when it injects nothing.
	Fault *faultv3.HTTPFault
}

// Output is what ForRoute produced for one route.
type Output struct {
	// Plugins maps plugin name to configuration. Nil when there is nothing to add or
	// when FailClosed is set.
	Plugins map[string]any
	// Report lists, sorted, every field that was not carried over exactly.
	Report []report.Entry
	// Terminal: the route answers itself (redirect, direct_response); it needs no
	// upstream.
	Terminal bool
	// FailClosed: a feature cannot be expressed equivalently; the caller must emit the
	// route so that it fails closed (5xx) instead of behaving differently.
	FailClosed bool
}

// Plugin names, as APISIX knows them.
const (
	pluginRedirect        = "redirect"
	pluginMocking         = "mocking"
	pluginProxyRewrite    = "proxy-rewrite"
	pluginResponseRewrite = "response-rewrite"
	pluginFault           = "fault-injection"
	pluginCORS            = "cors"
	pluginMirror          = "proxy-mirror"
)

// ForRoute translates the plugin-borne features of in.Route. It never panics on
// well-typed input, whatever the field values.
func ForRoute(in Input) Output {
	b := &builder{in: in}
	b.translate()
	out := Output{Report: b.entries, Terminal: b.terminal, FailClosed: b.failClosed}
	if !b.failClosed && len(b.plugins) > 0 {
		out.Plugins = b.plugins
	}
	report.Sort(out.Report)
	return out
}

// builder accumulates the output of one ForRoute call.
type builder struct {
	in         Input
	plugins    map[string]any // created on first use: most routes have no plugin
	entries    []report.Entry
	terminal   bool
	failClosed bool
	// shared is the part of a weighted_clusters action that every cluster has in
	// common (headers, host rewrite, per-filter config); nil when not weighted.
	shared *routev3.WeightedCluster_ClusterWeight
}

func (b *builder) note(field string, sev report.Severity, format string, args ...any) {
	res := b.in.Resource
	if res == "" {
		res = b.in.RouteConfig.GetName() + "/" + b.in.VirtualHost.GetName() + "/" + b.in.Route.GetName()
	}
	b.entries = append(b.entries, report.Entry{
		Kind:     "route",
		Resource: res,
		Field:    field,
		Severity: sev,
		Message:  fmt.Sprintf(format, args...),
	})
}

// fail records a feature that cannot be carried and makes the route fail closed.
func (b *builder) fail(field string, sev report.Severity, format string, args ...any) {
	b.note(field, sev, format+"; the route fails closed (5xx)", args...)
	b.failClosed = true
}

func (b *builder) translate() {
	r := b.in.Route
	if r == nil {
		b.fail("route", report.Invalid, "no route")
		return
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_Route:
		b.sharedClusterWeight(a.Route)
		b.filterConfigs()
		b.forwarding(a.Route)
		b.requestHeaders()
	case *routev3.Route_Redirect:
		b.terminal = true
		b.filterConfigs()
		b.redirect(a.Redirect)
	case *routev3.Route_DirectResponse:
		b.terminal = true
		b.filterConfigs()
		b.directResponse(a.DirectResponse)
	case nil:
		b.fail("route.action", report.Invalid, "route has no action")
	default:
		b.fail("route.action", report.Unsupported, "action %T has no APISIX equivalent", a)
	}
	// Envoy applies response header mutations to upstream responses and to the
	// redirects and direct responses the router generates alike.
	b.responseHeaders()
	b.orderPlugins()
}

// orderPlugins makes APISIX run the plugins in Envoy's filter order where their
// default priorities disagree: Istio's chain is cors, then fault, then the router. By
// default fault-injection (11000) runs before cors (4000), so an injected abort would
// answer a CORS preflight that Envoy's cors filter answers first.
func (b *builder) orderPlugins() {
	if b.plugins == nil {
		return
	}
	f, ok := b.plugins[pluginFault].(map[string]any)
	if !ok {
		return
	}
	if _, ok := b.plugins[pluginCORS]; ok {
		f["_meta"] = map[string]any{"priority": 3999}
	}
}

// setPlugin adds a plugin configuration.
func (b *builder) setPlugin(name string, conf map[string]any) {
	if b.plugins == nil {
		b.plugins = map[string]any{}
	}
	b.plugins[name] = conf
}

// pluginConf returns the configuration map of a plugin, creating it.
func (b *builder) pluginConf(name string) map[string]any {
	m, _ := b.plugins[name].(map[string]any)
	if m == nil {
		m = map[string]any{}
		b.setPlugin(name, m)
	}
	return m
}

// sharedClusterWeight records what all clusters of a weighted_clusters action have in
// common. APISIX's traffic-split picks an upstream but cannot run different plugins per
// upstream, so per-cluster mutations that differ cannot be expressed.
func (b *builder) sharedClusterWeight(ra *routev3.RouteAction) {
	cws := ra.GetWeightedClusters().GetClusters()
	if len(cws) == 0 {
		return
	}
	first := cws[0]
	for _, cw := range cws[1:] {
		if !sameClusterExtras(first, cw) {
			b.fail("route.weighted_clusters.clusters", report.Unsupported,
				"clusters %q and %q carry different header mutations, host rewrite or per-filter config; APISIX's traffic-split cannot apply plugins per upstream",
				first.GetName(), cw.GetName())
			return
		}
	}
	b.shared = first
}
