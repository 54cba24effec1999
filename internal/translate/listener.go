package translate

// Listeners decide where route configurations apply. Each HTTP filter chain that
// amesh serves becomes an httpCtx: the route configuration (RDS name or inline), the
// id prefix of its routes, the conditions every one of its routes carries (the
// original destination port; inbound vs outbound) and what the filters in front of the
// routes decide (guard.go). TCP proxy chains become stream routes. Network filters are
// recognised by the type of their config, as Envoy does, not by name. Everything else
// is reported.

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// Istio's listeners for captured connections: inbound ones (15006), and outbound ones
// whose original destination no other listener claims (15001, use_original_dst).
const (
	virtualInbound  = "virtualInbound"
	virtualOutbound = "virtualOutbound"
)

// httpCtx is one place a route configuration applies.
type httpCtx struct {
	key       string // id prefix of the routes: "out-9080", "in-19080", "in-any"
	listener  string
	rds       string                      // RDS name, or "" when inline
	inline    *routev3.RouteConfiguration // inline route_config
	websocket bool                        // HCM upgrade_configs enables websocket
	// originalDst: the connection's original destination is known (traffic capture;
	// not server_port), so routes may forward to it (ORIGINAL_DST clusters).
	originalDst bool
	vars        []apisix.Expr // conditions every route carries
	filters     *ctxFilters   // what the filters in front of the routes decide
}

// fingerprint identifies everything about the context that affects output.
func (c *httpCtx) fingerprint() string {
	sig := ""
	if c.filters != nil {
		sig = c.filters.sig
	}
	return fmt.Sprintf("%s|%s|%s|%p|%v|%v|%v|%s", c.key, c.listener, c.rds, c.inline, c.websocket, c.originalDst, c.vars, sig)
}

// streamOut is a stream route and the cluster it needs.
type streamOut struct {
	route   apisix.StreamRoute
	cluster string
}

// listenerOut is what one listener contributes.
type listenerOut struct {
	ctxs    []httpCtx
	streams []streamOut
	report  []report.Entry
}

// peers is what a listener's translation needs to know about the other listeners.
type peers struct {
	inPort int // the virtualInbound listener's own port (APISIX's inbound listen port)
	// outPorts, for the catch-all outbound listener only, are the ports of the other
	// outbound listeners, sorted and comma-separated: the connections it gets are
	// those to other ports. narrowPorts are those of them that only listeners for one
	// address have.
	outPorts, narrowPorts string
}

// buildListener translates a listener: the places its route configurations apply,
// its stream routes (without their upstreams, which the translator references) and
// its findings. It is pure.
func buildListener(l *listenerv3.Listener, in peers, opts Options) listenerOut {
	var out listenerOut
	name := l.GetName()
	rep := func(field string, sev report.Severity, msg string) {
		out.report = append(out.report, report.Entry{Kind: "listener", Resource: name, Field: field, Severity: sev, Message: msg})
	}
	defer func() { out.report = dedupEntries(out.report) }()
	sa := l.GetAddress().GetSocketAddress()
	port := int(sa.GetPortValue())
	addr := sa.GetAddress()
	switch {
	case name == virtualInbound:
		buildInbound(l, &out, rep, opts)
		return out
	case name == virtualOutbound || l.GetUseOriginalDst().GetValue():
		buildPassthrough(l, in, &out, rep, opts)
		return out
	case port == 0:
		rep("address", report.Unsupported, "listener without a port is not translated")
		return out
	}
	wildcard := addr == "0.0.0.0" || addr == "::" || addr == ""
	loopback := addr == "127.0.0.1" || addr == "::1"
	var observed, accounted []string
	tls := 0
	for _, fc := range l.GetFilterChains() {
		if !plaintextChain(fc) {
			tls++
			continue
		}
		a := analyzeChain(fc, opts.OriginalDstVar)
		observed, accounted = append(observed, a.observed...), append(accounted, a.accounted...)
		switch {
		case a.hcm != nil:
			ctx := httpCtx{key: "out-" + strconv.Itoa(port), listener: name, websocket: websocketOn(a.hcm), filters: &a.filters,
				originalDst: opts.OriginalDstVar != "server_port"}
			if !wildcard {
				ctx.key = "out-" + addr + "_" + strconv.Itoa(port)
			}
			a.report(rep, "routes of "+ctx.key)
			ctx.vars = []apisix.Expr{{opts.OriginalDstVar, "==", strconv.Itoa(port)}}
			if opts.OriginalDstVar == "server_port" {
				if !wildcard {
					ctx.vars = append(ctx.vars, apisix.Expr{"server_addr", "==", addr})
				}
			} else {
				if in.inPort > 0 {
					ctx.vars = append(ctx.vars, apisix.Expr{"server_port", "~=", strconv.Itoa(in.inPort)})
				}
				if !wildcard && !loopback {
					rep("address", report.Approximated, fmt.Sprintf(
						"routes are restricted to destination port %d but not to address %s (%s carries only the port)", port, addr, opts.OriginalDstVar))
				}
			}
			if !setRouteSource(&ctx, a.hcm) {
				rep("filter_chains.filters.http_connection_manager", report.Unsupported, "HTTP connection manager without rds or route_config is not translated")
				continue
			}
			out.ctxs = append(out.ctxs, ctx)
		case a.tcp != nil:
			cl := a.tcp.GetCluster()
			if cl == "" {
				rep("filter_chains.filters.tcp_proxy", report.Unsupported, "tcp_proxy without a single cluster (weighted_clusters) is not translated")
				continue
			}
			sr := apisix.StreamRoute{ID: apisix.SafeID("tcp-" + addr + "_" + strconv.Itoa(port)), ServerPort: port}
			a.report(rep, "stream route "+sr.ID)
			if v := a.filters.noRoute; v != nil {
				rep("filter_chains.filters", report.Unsupported, fmt.Sprintf(
					"%s; no stream route is emitted for port %d (connections are refused)", v.reason, port))
				continue
			}
			if opts.OriginalDstVar == "server_port" {
				if !wildcard {
					sr.ServerAddr = addr
				}
			} else {
				rep("filter_chains.filters.tcp_proxy", report.Approximated, fmt.Sprintf(
					"stream route matches APISIX's own listening port %d; with iptables interception APISIX must listen on it", port))
			}
			out.streams = append(out.streams, streamOut{route: sr, cluster: cl})
		case a.terminal != "":
			rep("filter_chains.filters["+a.terminal+"]", report.Unsupported, "network filter "+a.terminal+" is not translated; this filter chain serves nothing")
		default:
			a.report(rep, "filter chain "+fc.GetName())
			rep("filter_chains.filters", report.Unsupported, "a filter chain without an HTTP connection manager or tcp_proxy amesh can translate serves nothing")
		}
	}
	if n, ok := summary(observed, accounted); ok {
		rep(n.field, n.sev, n.msg)
	}
	if tls > 0 {
		rep("filter_chains.transport_socket", report.Unsupported, fmt.Sprintf("%d TLS filter chain(s) not translated; only plaintext chains are served", tls))
	}
	if l.GetDefaultFilterChain() != nil {
		rep("default_filter_chain", report.Ignored, "non-HTTP traffic on this port is not passed through")
	}
	return out
}

// report adds the chain's notes to a listener's report; where says what they apply to.
func (a *chainAnalysis) report(rep func(string, report.Severity, string), where string) {
	for _, n := range a.notes {
		rep(n.field, n.sev, n.msg+" ("+where+")")
	}
}

// dedupEntries sorts entries and drops repeats (chains of one listener often have
// the same filters).
func dedupEntries(es []report.Entry) []report.Entry {
	report.Sort(es)
	return slices.Compact(es)
}

// buildInbound turns virtualInbound's plaintext HTTP chains into inbound contexts,
// one per destination port plus a catch-all for the ports no chain names (Envoy picks
// a chain by destination port first: a port some chain names never reaches the
// chains without one, so a port whose chains amesh does not serve gets no route).
func buildInbound(l *listenerv3.Listener, out *listenerOut, rep func(string, report.Severity, string), opts Options) {
	if opts.OriginalDstVar == "server_port" {
		rep("filter_chains", report.Unsupported, "inbound routes need the original destination port; with server_port they are not translated")
		return
	}
	inPort := strconv.Itoa(int(l.GetAddress().GetSocketAddress().GetPortValue()))
	named := map[string]bool{} // every destination port a chain names
	seen := map[string]bool{}  // those with an HTTP context
	var observed, accounted []string
	catchAll, usedChain, used := catchAllChain(l, "in-any", opts.OriginalDstVar, rep)
	if used != nil {
		observed, accounted = append(observed, used.observed...), append(accounted, used.accounted...)
	}
	for _, fc := range l.GetFilterChains() {
		dp := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
		p := strconv.Itoa(int(dp))
		if dp != 0 {
			named[p] = true
		}
		if !plaintextChain(fc) || fc == usedChain {
			continue
		}
		a := analyzeChain(fc, opts.OriginalDstVar)
		if dp == 0 && a.hcm != nil {
			continue // another catch-all: Envoy takes the first that matches
		}
		if a.hcm == nil {
			// Inbound TCP is not served (no stream routes): what would guard it has
			// nothing to guard, but is not dropped without a word.
			a.report(rep, "inbound TCP filter chain "+fc.GetName()+", which is not translated")
			continue
		}
		observed, accounted = append(observed, a.observed...), append(accounted, a.accounted...)
		ctx := httpCtx{key: "in-" + p, listener: l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters, originalDst: true}
		if seen[p] || !setRouteSource(&ctx, a.hcm) {
			continue
		}
		seen[p] = true
		a.report(rep, "routes of "+ctx.key)
		ctx.vars = []apisix.Expr{{"server_port", "==", inPort}, {opts.OriginalDstVar, "==", p}}
		out.ctxs = append(out.ctxs, ctx)
	}
	if n, ok := summary(observed, accounted); ok {
		rep(n.field, n.sev, n.msg)
	}
	if catchAll != nil {
		catchAll.vars = []apisix.Expr{{"server_port", "==", inPort}}
		if ports := slices.Sorted(maps.Keys(named)); len(ports) > 0 {
			catchAll.vars = append(catchAll.vars, apisix.Expr{opts.OriginalDstVar, "!", "in", ports})
		}
		out.ctxs = append(out.ctxs, *catchAll)
	}
	rep("filter_chains.transport_socket", report.Unsupported, "inbound mTLS (istio-peer-exchange/TLS chains) is not translated; only plaintext inbound HTTP is served")
}

// buildPassthrough turns the catch-all outbound listener (virtualOutbound, which gets
// the captured connections whose original destination no other listener claims) into
// one context for the ports of no other listener: Istio's PassthroughCluster
// (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY). Its routes and every other
// outbound route differ in the original destination port, and the inbound ones in
// APISIX's port, so no route of it takes a request from another.
func buildPassthrough(l *listenerv3.Listener, in peers, out *listenerOut, rep func(string, report.Severity, string), opts Options) {
	if opts.OriginalDstVar == "server_port" {
		rep("use_original_dst", report.Ignored, "routes match on APISIX's own port (no traffic capture): connections to destinations no listener claims are not served")
		return
	}
	ctx, _, used := catchAllChain(l, "out-passthrough", opts.OriginalDstVar, rep)
	if ctx == nil {
		return
	}
	if n, ok := summary(used.observed, used.accounted); ok {
		rep(n.field, n.sev, n.msg)
	}
	var excluded []string
	if in.outPorts != "" {
		excluded = strings.Split(in.outPorts, ",")
	}
	for _, fc := range l.GetFilterChains() {
		if dp := fc.GetFilterChainMatch().GetDestinationPort().GetValue(); dp != 0 {
			// The listener's own port (to BlackHoleCluster): a connection made to it
			// directly must not be passed through to it again.
			excluded = append(excluded, strconv.Itoa(int(dp)))
		}
	}
	if in.narrowPorts != "" {
		rep("use_original_dst", report.Approximated, "requests to port(s) "+in.narrowPorts+
			", which other listeners have for one address, are not passed through to other addresses (routes match on the original destination port)")
	}
	slices.Sort(excluded)
	ctx.vars = []apisix.Expr{{"server_port", "==", strconv.Itoa(int(l.GetAddress().GetSocketAddress().GetPortValue()))}}
	if excluded = slices.Compact(excluded); len(excluded) > 0 {
		ctx.vars = append(ctx.vars, apisix.Expr{opts.OriginalDstVar, "!", "in", excluded})
	}
	out.ctxs = append(out.ctxs, *ctx)
}

// catchAllChain returns the context of a capture listener's plaintext chain without a
// destination port, key its key: its HTTP connection manager's routes, or, without
// one, a route to its tcp_proxy cluster for every HTTP request (APISIX's capture
// ports are HTTP listeners, so only HTTP reaches them); and the chain it serves and its
// analysis, whose notes it has reported. All nil when it has neither.
func catchAllChain(l *listenerv3.Listener, key, portVar string, rep func(string, report.Severity, string)) (*httpCtx, *listenerv3.FilterChain, *chainAnalysis) {
	var tcp *chainAnalysis
	var tcpChain *listenerv3.FilterChain
	for _, fc := range l.GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != 0 || !plaintextChain(fc) {
			continue
		}
		a := analyzeChain(fc, portVar)
		switch {
		case a.hcm != nil:
			ctx := &httpCtx{key: key, listener: l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters, originalDst: true}
			if setRouteSource(ctx, a.hcm) {
				a.report(rep, "routes of "+key)
				return ctx, fc, &a
			}
		case a.tcp != nil && tcp == nil:
			tcp, tcpChain = &a, fc
		}
	}
	if tcp == nil || tcp.tcp.GetCluster() == "" {
		return nil, nil, nil
	}
	cl := tcp.tcp.GetCluster()
	tcp.report(rep, "routes of "+key)
	rep("filter_chains.filters.tcp_proxy", report.Approximated, fmt.Sprintf(
		"connections no other chain takes are served as HTTP: each request goes to %s (routes of %s)", cl, key))
	rep("filter_chains.filters.tcp_proxy", report.Unsupported,
		"TLS and other non-HTTP connections no other chain takes are not proxied: APISIX's capture ports are HTTP listeners")
	// tcp_proxy passes an upgraded connection's bytes like any others.
	return &httpCtx{key: key, listener: l.GetName(), websocket: true, filters: &tcp.filters, originalDst: true, inline: tcpRoutes(key, cl)}, tcpChain, tcp
}

// tcpRoutes is the route configuration that sends every HTTP request to cluster, for a
// tcp_proxy chain served as HTTP: no timeout (tcp_proxy has none per request).
func tcpRoutes(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name:    "tcp_proxy",
		Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Name:  "tcp_proxy",
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(0),
			}},
		}},
	}}}
}

func setRouteSource(ctx *httpCtx, hcm *hcmv3.HttpConnectionManager) bool {
	switch {
	case hcm.GetRds() != nil:
		ctx.rds = hcm.GetRds().GetRouteConfigName()
		return ctx.rds != ""
	case hcm.GetRouteConfig() != nil:
		ctx.inline = hcm.GetRouteConfig()
		return true
	}
	return false
}

// plaintextChain reports whether a filter chain serves plaintext connections (TLS
// chains are for mTLS, which comes later).
func plaintextChain(fc *listenerv3.FilterChain) bool {
	if fc.GetTransportSocket() != nil {
		return false
	}
	tp := fc.GetFilterChainMatch().GetTransportProtocol()
	return tp == "" || tp == "raw_buffer"
}

func websocketOn(h *hcmv3.HttpConnectionManager) bool {
	for _, u := range h.GetUpgradeConfigs() {
		if u.GetUpgradeType() == "websocket" && (u.GetEnabled() == nil || u.GetEnabled().GetValue()) {
			return true
		}
	}
	return false
}
