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
	"slices"
	"sort"
	"strconv"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

const virtualInbound = "virtualInbound"

// httpCtx is one place a route configuration applies.
type httpCtx struct {
	key       string // id prefix of the routes: "out-9080", "in-19080", "in-any"
	listener  string
	rds       string                      // RDS name, or "" when inline
	inline    *routev3.RouteConfiguration // inline route_config
	websocket bool                        // HCM upgrade_configs enables websocket
	vars      []apisix.Expr               // conditions every route carries
	filters   *ctxFilters                 // what the filters in front of the routes decide
}

// fingerprint identifies everything about the context that affects output.
func (c *httpCtx) fingerprint() string {
	sig := ""
	if c.filters != nil {
		sig = c.filters.sig
	}
	return fmt.Sprintf("%s|%s|%s|%p|%v|%v|%s", c.key, c.listener, c.rds, c.inline, c.websocket, c.vars, sig)
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

// inboundInfo is what outbound contexts need to know about the inbound listener.
type inboundInfo struct {
	port int // the virtualInbound listener's own port (APISIX's inbound listen port)
}

// buildListener translates a listener: the places its route configurations apply,
// its stream routes (without their upstreams, which the translator references) and
// its findings. It is pure.
func buildListener(l *listenerv3.Listener, in inboundInfo, opts Options) listenerOut {
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
	case name == "virtualOutbound" || l.GetUseOriginalDst().GetValue():
		rep("use_original_dst", report.Ignored, "the iptables catch-all listener has no APISIX equivalent; traffic to unknown destinations is not passed through")
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
			ctx := httpCtx{key: "out-" + strconv.Itoa(port), listener: name, websocket: websocketOn(a.hcm), filters: &a.filters}
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
				if in.port > 0 {
					ctx.vars = append(ctx.vars, apisix.Expr{"server_port", "~=", strconv.Itoa(in.port)})
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
// one per destination port plus a catch-all that excludes those ports.
func buildInbound(l *listenerv3.Listener, out *listenerOut, rep func(string, report.Severity, string), opts Options) {
	if opts.OriginalDstVar == "server_port" {
		rep("filter_chains", report.Unsupported, "inbound routes need the original destination port; with server_port they are not translated")
		return
	}
	inPort := strconv.Itoa(int(l.GetAddress().GetSocketAddress().GetPortValue()))
	var ports []string
	var catchAll *httpCtx
	seen := map[string]bool{}
	var observed, accounted []string
	for _, fc := range l.GetFilterChains() {
		if !plaintextChain(fc) {
			continue
		}
		a := analyzeChain(fc, opts.OriginalDstVar)
		if a.hcm == nil {
			// Inbound TCP is not served (no stream routes): what would guard it has
			// nothing to guard, but is not dropped without a word.
			a.report(rep, "inbound TCP filter chain "+fc.GetName()+", which is not translated")
			continue
		}
		observed, accounted = append(observed, a.observed...), append(accounted, a.accounted...)
		dp := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
		ctx := httpCtx{listener: l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters}
		if !setRouteSource(&ctx, a.hcm) {
			continue
		}
		if dp == 0 {
			if catchAll == nil {
				ctx.key = "in-any"
				a.report(rep, "routes of "+ctx.key)
				c := ctx
				catchAll = &c
			}
			continue
		}
		p := strconv.Itoa(int(dp))
		if seen[p] {
			continue
		}
		seen[p] = true
		ports = append(ports, p)
		ctx.key = "in-" + p
		a.report(rep, "routes of "+ctx.key)
		ctx.vars = []apisix.Expr{{"server_port", "==", inPort}, {opts.OriginalDstVar, "==", p}}
		out.ctxs = append(out.ctxs, ctx)
	}
	if n, ok := summary(observed, accounted); ok {
		rep(n.field, n.sev, n.msg)
	}
	if catchAll != nil {
		sort.Strings(ports)
		catchAll.vars = []apisix.Expr{{"server_port", "==", inPort}}
		if len(ports) > 0 {
			catchAll.vars = append(catchAll.vars, apisix.Expr{opts.OriginalDstVar, "!", "in", ports})
		}
		out.ctxs = append(out.ctxs, *catchAll)
	}
	rep("filter_chains.transport_socket", report.Unsupported, "inbound mTLS (istio-peer-exchange/TLS chains) is not translated; only plaintext inbound HTTP is served")
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
