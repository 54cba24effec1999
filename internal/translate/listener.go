package translate

// Listeners decide where route configurations apply. Each HTTP filter chain that
// amesh serves becomes an httpCtx: the route configuration (RDS name or inline), the
// id prefix of its routes, the conditions every one of its routes carries (the
// original destination port; inbound vs outbound) and what the filters in front of the
// routes decide (guard.go). Under capture every filter chain also has its place among
// the stream routes (stream.go); without capture, TCP proxy chains become stream routes
// on APISIX's own port. Network filters are recognised by the type of their config, as
// Envoy does, not by name. Everything else is reported.

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
	"github.com/amesh-dev/amesh/internal/jwks"
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

// listenerOut is what one listener contributes.
type listenerOut struct {
	ctxs    []httpCtx
	streams []streamClaim
	report  []report.Entry
	// remote are the remote JWKS its jwt_authn providers name, by source.
	remote []remoteJWKS
	// mtls: the client certificate matchers of its chains that APISIX terminates with
	// istio-mtls-server (inboundtls.go).
	mtls peerMatchers
}

// peers is what a listener's translation needs to know about the other listeners.
type peers struct {
	inPort int // the virtualInbound listener's own port (APISIX's inbound listen port)
	// outListen is APISIX's outbound capture port (virtualOutbound's), which the stream
	// routes of the other outbound listeners carry.
	outListen int
	// outPorts, for the catch-all outbound listener only, are the ports of the other
	// outbound listeners, sorted and comma-separated: the connections its HTTP routes
	// get are those to other ports.
	outPorts string
}

// listenerBuild is one listener's translation in progress: its output, and each
// filter chain's analysis, shared by its HTTP contexts and its stream routes.
type listenerBuild struct {
	l        *listenerv3.Listener
	opts     Options
	out      *listenerOut
	analyses map[*listenerv3.FilterChain]*chainAnalysis
	// observed and accounted are those of the chains served, for the summary.
	observed, accounted []string
	// tlsOn, tlsOff, tlsWhy: the listener's TLS inspection (inspectsTLS).
	tlsOn  bool
	tlsOff [2]uint32
	tlsWhy string
	// tlsHTTP are the chains that terminate Istio mTLS whose HTTP routes APISIX's TLS
	// socket serves (buildInbound), by the key of their context.
	tlsHTTP map[*listenerv3.FilterChain]string
	// inbound: the listener is the inbound capture listener, the only one whose Istio
	// mTLS APISIX terminates (its TLS sockets are the inbound capture port's).
	inbound bool
	// mtlsTCP are the chains that terminate Istio mTLS in front of TCP, by the cell of
	// the terminated connections (protoMTLS) they serve.
	mtlsTCP map[streamCell]*listenerv3.FilterChain
	// fetched are the remote JWKS fetched so far, which jwt_authn providers read.
	fetched jwks.Set
}

func (b *listenerBuild) rep(field string, sev report.Severity, msg string) {
	b.out.report = append(b.out.report, report.Entry{Kind: "listener", Resource: b.l.GetName(), Field: field, Severity: sev, Message: msg})
}

// analyze returns the analysis of fc, made once.
func (b *listenerBuild) analyze(fc *listenerv3.FilterChain) *chainAnalysis {
	if a := b.analyses[fc]; a != nil {
		return a
	}
	a := analyzeChain(fc, b.opts.OriginalDstVar, b.fetched)
	if b.analyses == nil {
		b.analyses = map[*listenerv3.FilterChain]*chainAnalysis{}
	}
	b.analyses[fc] = &a
	return &a
}

// use records that a served chain's filters are in the summary.
func (b *listenerBuild) use(a *chainAnalysis) {
	b.observed, b.accounted = append(b.observed, a.observed...), append(b.accounted, a.accounted...)
}

// capture reports whether connections arrive through Istio's capture (the original
// destination is known), so that stream routes match on it.
func (o Options) capture() bool { return o.OriginalDstVar != "server_port" }

// buildListener translates a listener: the places its route configurations apply,
// its stream routes (without their upstreams, which the translator references) and
// its findings. It is pure.
func buildListener(l *listenerv3.Listener, in peers, opts Options, fetched jwks.Set) (out listenerOut) {
	b := &listenerBuild{l: l, opts: opts, out: &out, fetched: fetched}
	defer func() { out.report = dedupEntries(out.report) }()
	defer func() {
		for _, a := range b.analyses {
			out.remote = append(out.remote, a.remote...)
		}
		out.remote = sortRemote(out.remote)
	}()
	defer func() {
		if n, ok := summary(b.observed, b.accounted); ok {
			b.rep(n.field, n.sev, n.msg)
		}
	}()
	name := l.GetName()
	sa := l.GetAddress().GetSocketAddress()
	port := int(sa.GetPortValue())
	switch {
	case name == virtualInbound:
		buildInbound(b)
		return out
	case name == virtualOutbound || l.GetUseOriginalDst().GetValue():
		buildPassthrough(b, in)
		return out
	case port == 0:
		b.rep("address", report.Unsupported, "listener without a port is not translated")
		return out
	}
	buildOutbound(b, in)
	return out
}

// buildOutbound translates an outbound listener for one port: an HTTP context per
// HTTP connection manager chain and, under capture, the stream routes of all its
// chains; without capture, a stream route for a tcp_proxy chain on APISIX's own port.
func buildOutbound(b *listenerBuild, in peers) {
	l, opts := b.l, b.opts
	name := l.GetName()
	sa := l.GetAddress().GetSocketAddress()
	port := int(sa.GetPortValue())
	addr := sa.GetAddress()
	wildcard := addr == "0.0.0.0" || addr == "::" || addr == ""
	loopback := addr == "127.0.0.1" || addr == "::1"
	tls := 0
	for _, fc := range l.GetFilterChains() {
		if !plaintextChain(fc) {
			tls++
			continue
		}
		a := b.analyze(fc)
		b.use(a)
		switch {
		case a.hcm != nil:
			ctx := httpCtx{key: "out-" + strconv.Itoa(port), listener: name, websocket: websocketOn(a.hcm), filters: &a.filters,
				originalDst: opts.capture()}
			if !wildcard {
				ctx.key = "out-" + addr + "_" + strconv.Itoa(port)
			}
			a.report(b.rep, "routes of "+ctx.key)
			ctx.vars = []apisix.Expr{{opts.OriginalDstVar, "==", strconv.Itoa(port)}}
			if !opts.capture() {
				if !wildcard {
					ctx.vars = append(ctx.vars, apisix.Expr{"server_addr", "==", addr})
				}
			} else {
				if in.inPort > 0 {
					ctx.vars = append(ctx.vars, apisix.Expr{"server_port", "~=", strconv.Itoa(in.inPort)})
				}
				if !wildcard && !loopback {
					b.rep("address", report.Approximated, fmt.Sprintf(
						"routes are restricted to destination port %d but not to address %s (%s carries only the port)", port, addr, opts.OriginalDstVar))
				}
			}
			if !setRouteSource(&ctx, a.hcm) {
				b.rep(noRouteSource())
				continue
			}
			b.out.ctxs = append(b.out.ctxs, ctx)
		case a.tcp != nil:
			if opts.capture() {
				continue // stream routes below
			}
			cl := a.tcp.GetCluster()
			if cl == "" {
				b.rep(unservedChain(a))
				continue
			}
			c := streamClaim{id: apisix.SafeID("tcp-" + addr + "_" + strconv.Itoa(port)), cell: streamCell{port: port}, cluster: cl}
			a.report(b.rep, "stream route "+c.id)
			if v := a.filters.noRoute; v != nil {
				b.rep("filter_chains.filters", report.Unsupported, fmt.Sprintf(
					"%s; no stream route is emitted for port %d (connections are refused)", v.reason, port))
				continue
			}
			if !wildcard {
				c.cell.addr = addr
			}
			b.out.streams = append(b.out.streams, c)
		default:
			if a.terminal == "" {
				a.report(b.rep, "filter chain "+fc.GetName())
			}
			b.rep(unservedChain(a))
		}
	}
	if tls > 0 {
		b.rep("filter_chains.transport_socket", report.Unsupported, fmt.Sprintf("%d TLS filter chain(s) not translated; only plaintext chains are served", tls))
	}
	if !opts.capture() {
		if l.GetDefaultFilterChain() != nil {
			b.rep("default_filter_chain", report.Ignored, "non-HTTP traffic on this port is not passed through")
		}
		return
	}
	b.outboundStreams(in.outListen, port)
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
// chains without one, so a port whose chains amesh does not serve gets no route), and
// all its chains into stream routes.
func buildInbound(b *listenerBuild) {
	l, opts := b.l, b.opts
	if !opts.capture() {
		b.rep("filter_chains", report.Unsupported, "inbound routes need the original destination port; with server_port they are not translated")
		return
	}
	inPort := int(l.GetAddress().GetSocketAddress().GetPortValue())
	named := map[string]bool{} // every destination port a chain names
	seen := map[string]bool{}  // those with an HTTP context
	catchAll, usedChain := catchAllChain(b, "in-any")
	for _, fc := range l.GetFilterChains() {
		dp := fc.GetFilterChainMatch().GetDestinationPort().GetValue()
		p := strconv.Itoa(int(dp))
		if dp != 0 {
			named[p] = true
		}
		if !plaintextChain(fc) || fc == usedChain {
			continue
		}
		a := b.analyze(fc)
		if a.hcm == nil || dp == 0 {
			// TCP chains are stream routes only; another HTTP catch-all is not
			// served (Envoy takes the first that matches).
			continue
		}
		b.use(a)
		ctx := httpCtx{key: "in-" + p, listener: l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters, originalDst: true}
		if seen[p] || !setRouteSource(&ctx, a.hcm) {
			continue
		}
		seen[p] = true
		a.report(b.rep, "routes of "+ctx.key)
		ctx.vars = []apisix.Expr{{"server_port", "==", strconv.Itoa(inPort)}, {opts.OriginalDstVar, "==", p}, schemeHTTP}
		b.out.ctxs = append(b.out.ctxs, ctx)
	}
	ports := slices.Sorted(maps.Keys(named))
	if catchAll != nil {
		catchAll.vars = []apisix.Expr{{"server_port", "==", strconv.Itoa(inPort)}, schemeHTTP}
		if len(ports) > 0 {
			catchAll.vars = append(catchAll.vars, apisix.Expr{opts.OriginalDstVar, "!", "in", ports})
		}
		b.out.ctxs = append(b.out.ctxs, *catchAll)
	}
	b.inbound = true
	b.tlsContexts(inPort, ports)
	b.streams(inPort, rankCapture, 0, nil)
}

// Inbound HTTP routes for plaintext chains and for chains that terminate Istio mTLS
// are told apart by the socket the connection reached APISIX's HTTP server on: the TLS
// one gives scheme https.
var (
	schemeHTTP  = apisix.Expr{"scheme", "==", "http"}
	schemeHTTPS = apisix.Expr{"scheme", "==", "https"}
)

// tlsContexts adds the HTTP contexts of virtualInbound's chains that terminate Istio
// mTLS in front of an HTTP connection manager, on inbound port inPort, ports being
// those some chain names: per destination port the first such chain (and for any
// port), as every connection APISIX terminates for a port reaches the same routes.
// The chains whose routes they are go to b.tlsHTTP, for the stream routes.
func (b *listenerBuild) tlsContexts(inPort int, ports []string) {
	seen := map[int]bool{}
	for _, fc := range b.l.GetFilterChains() {
		m := fc.GetFilterChainMatch()
		dp := int(m.GetDestinationPort().GetValue())
		tp := m.GetTransportProtocol()
		if fc.GetTransportSocket() == nil || seen[dp] || len(m.GetServerNames()) > 0 || tp != "" && tp != "tls" {
			continue
		}
		sans, why := istioServerTLS(fc.GetTransportSocket())
		if why != "" {
			continue // its stream routes close its connections, and say why
		}
		a := b.analyze(fc)
		if a.hcm == nil {
			continue
		}
		key := "in-any-tls"
		if dp != 0 {
			key = "in-" + strconv.Itoa(dp) + "-tls"
		}
		ctx := httpCtx{key: key, listener: b.l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters, originalDst: true}
		if !setRouteSource(&ctx, a.hcm) {
			continue
		}
		seen[dp] = true
		b.use(a)
		a.report(b.rep, "routes of "+key)
		ctx.vars = append([]apisix.Expr{{"server_port", "==", strconv.Itoa(inPort)}, schemeHTTPS}, sanVars(sans)...)
		if dp != 0 {
			ctx.vars = append(ctx.vars, apisix.Expr{b.opts.OriginalDstVar, "==", strconv.Itoa(dp)})
		} else if len(ports) > 0 {
			ctx.vars = append(ctx.vars, apisix.Expr{b.opts.OriginalDstVar, "!", "in", ports})
		}
		b.out.ctxs = append(b.out.ctxs, ctx)
		if b.tlsHTTP == nil {
			b.tlsHTTP = map[*listenerv3.FilterChain]string{}
		}
		b.tlsHTTP[fc] = key
	}
}

// buildPassthrough turns the catch-all outbound listener (virtualOutbound, which gets
// the captured connections whose original destination no other listener claims) into
// one context for the ports of no other listener: Istio's PassthroughCluster
// (ALLOW_ANY) or BlackHoleCluster (REGISTRY_ONLY). Its routes and every other
// outbound route differ in the original destination port, and the inbound ones in
// APISIX's port, so no route of it takes a request from another. Its chains become
// stream routes, which are what connections take: the stream routes of other
// listeners are more specific wherever Envoy would hand them a connection.
func buildPassthrough(b *listenerBuild, in peers) {
	l, opts := b.l, b.opts
	if !opts.capture() {
		b.rep("use_original_dst", report.Ignored, "routes match on APISIX's own port (no traffic capture): connections to destinations no listener claims are not served")
		return
	}
	port := int(l.GetAddress().GetSocketAddress().GetPortValue())
	b.streams(port, rankCapture, 0, nil)
	ctx, _ := catchAllChain(b, "out-passthrough")
	if ctx == nil {
		return
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
	slices.Sort(excluded)
	ctx.vars = []apisix.Expr{{"server_port", "==", strconv.Itoa(port)}}
	if excluded = slices.Compact(excluded); len(excluded) > 0 {
		ctx.vars = append(ctx.vars, apisix.Expr{opts.OriginalDstVar, "!", "in", excluded})
	}
	b.out.ctxs = append(b.out.ctxs, *ctx)
}

// catchAllChain returns the context of a capture listener's plaintext chain without a
// destination port, key its key: its HTTP connection manager's routes, or, without
// one, a route to its tcp_proxy cluster for every HTTP request; and the chain it
// serves, whose notes it has reported. Both nil when it has neither.
func catchAllChain(b *listenerBuild, key string) (*httpCtx, *listenerv3.FilterChain) {
	var tcp *chainAnalysis
	var tcpChain *listenerv3.FilterChain
	for _, fc := range b.l.GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != 0 || !plaintextChain(fc) {
			continue
		}
		a := b.analyze(fc)
		switch {
		case a.hcm != nil:
			ctx := &httpCtx{key: key, listener: b.l.GetName(), websocket: websocketOn(a.hcm), filters: &a.filters, originalDst: true}
			if setRouteSource(ctx, a.hcm) {
				b.use(a)
				a.report(b.rep, "routes of "+key)
				return ctx, fc
			}
		case a.tcp != nil && tcp == nil:
			tcp, tcpChain = a, fc
		}
	}
	if tcp == nil || tcp.tcp.GetCluster() == "" {
		return nil, nil
	}
	b.use(tcp)
	tcp.report(b.rep, "routes of "+key)
	// tcp_proxy passes an upgraded connection's bytes like any others.
	return &httpCtx{key: key, listener: b.l.GetName(), websocket: true, filters: &tcp.filters, originalDst: true,
		inline: tcpRoutes(key, tcp.tcp.GetCluster())}, tcpChain
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
