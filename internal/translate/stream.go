package translate

// Stream routes under capture. Every connection of the pod arrives on APISIX's stream
// server, on 15001 (outbound) or 15006 (inbound), and amesh's stream router picks a
// stream route for it: among the routes of its capture port (label amesh-listen), one
// for its original destination port beats one for any port, then the longest
// server_addr prefix wins (none: /0), then one for its protocol (label
// amesh-protocol) beats one for any. Envoy picks a listener (the one for the
// connection's exact address and port, else the one for its port, else the capture
// listener keeps it), then a filter chain by destination port, destination prefix,
// server names, transport protocol, application protocols and source. Each place of
// the first order (a streamCell) is given the chain Envoy picks there, so that both
// choose alike:
//
//   - every destination port and prefix that some chain names gets a route for any
//     protocol: its plaintext chain's, else the default chain's, else one that closes
//     the connection. Envoy never falls back from a port or prefix with chains to the
//     chains of a wider one, so a connection must not fall through to a less specific
//     route either;
//   - the cells of a listener for one port carry that port (and its addresses): the
//     router puts them above the capture listener's, as Envoy's hand-off does; a cell
//     claimed by more than one listener goes to the one Envoy hands connections to
//     (Translator.syncStreams);
//   - a TLS connection (its first bytes a TLS ClientHello, on a listener with Envoy's
//     tls_inspector) has places of its own: label amesh-protocol "tls", and with
//     amesh-alpn the application protocols (ALPN) of a chain. The router gives it the
//     route of the first protocol of its ClientHello that a route of its place names,
//     else the place's "tls" route, else the route for any protocol: Envoy's
//     transport protocol and application protocol steps, whose chains for TLS the
//     translator picks here. A "tls" route is only added where it differs from the
//     route for any protocol. Chains with server names (SNI) are not translated: a TLS
//     connection takes the chains without server names of its place;
//   - a chain that terminates Istio mTLS (the workload certificate, client
//     certificates verified against the mesh root) with an HTTP connection manager
//     hands the still encrypted connection to APISIX's HTTP server on its TLS socket
//     (amesh-http with "tls"), where APISIX's ssl phase terminates it with the ssl
//     object istio-mtls-server; the HTTP routes of the chain carry scheme https
//     (listener.go). In front of tcp_proxy, amesh-mtls hands it to the stream
//     server's TLS socket, which terminates it the same way and asks the router
//     again, for the place's route with amesh-protocol "mtls": the chain's tcp_proxy.
//
// What a route does is what its chain does: an HTTP connection manager's carries
// amesh-http (APISIX's HTTP server takes the connection and its HTTP routes decide);
// tcp_proxy's names its cluster's upstream, with amesh-original-dst for an ORIGINAL_DST
// cluster and amesh-upstream-tls for one whose endpoints Envoy reaches with TLS; a chain amesh cannot serve, filters that fail closed and BlackHoleCluster
// get a route without upstream or plugin, whose connections APISIX closes. At the
// bottom (any port, address and protocol) such a route is left out: nothing less
// specific would take its connections.

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

// What amesh's stream router and stream plugins read.
const (
	// labelListen is the capture port a route is for (15001, 15006).
	labelListen = "amesh-listen"
	// labelProtocol restricts a route to connections whose first bytes are of a
	// protocol: protoHTTP (an HTTP/1.1 request line or the h2c preface: what Envoy's
	// http_inspector reports as http/1.1 and h2c; HTTP/1.0 is neither).
	labelProtocol = "amesh-protocol"
	protoHTTP     = "http"
	// protoTLS restricts a route to TLS connections (a ClientHello, as Envoy's
	// tls_inspector detects it); labelALPN further to those whose ALPN names one of
	// its protocols (comma-separated).
	protoTLS  = "tls"
	labelALPN = "amesh-alpn"
	// protoMTLS is the protocol of the connections the stream server's TLS socket has
	// terminated (Istio mTLS in front of TCP): the router looks at these routes only
	// for them, and at nothing else.
	protoMTLS = "mtls"
	// streamMTLSPlugin hands a connection to the stream server's TLS socket.
	streamMTLSPlugin = "amesh-mtls"
	// protoNever stands for application protocols no plaintext connection has: the
	// chain still takes part in Envoy's transport protocol step.
	protoNever = "-"
	// streamHTTPPlugin hands a connection to APISIX's HTTP server for the route's
	// capture port.
	streamHTTPPlugin = "amesh-http"
)

// defaultOutboundListen is Istio's outbound capture port, for outbound listeners when
// no virtualOutbound listener says otherwise.
const defaultOutboundListen = 15001

// Listener ranks: which listener Envoy hands a connection to when several have a
// place for it (use_original_dst): the one for its exact address, then the one for
// its port; the capture listener keeps the rest.
const (
	rankAddr = iota
	rankWildcard
	rankCapture
)

// streamCell is a place in the stream router's order.
type streamCell struct {
	listen int    // APISIX's capture port (label amesh-listen); 0 without capture
	port   int    // original destination port; 0: any
	addr   string // original destination address or prefix; "": any
	proto  string // protoHTTP, protoTLS, or "": any
	alpn   string // with protoTLS: the chain's application protocols, comma-separated
}

// id is the id of the cell's route: the cell itself, so unique.
func (c streamCell) id() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(c.listen))
	if c.port == 0 {
		b.WriteString("-any")
	} else {
		b.WriteString("-" + strconv.Itoa(c.port))
	}
	if c.addr != "" {
		b.WriteString("-" + c.addr)
	}
	if c.proto != "" {
		b.WriteString("-" + c.proto)
	}
	if c.alpn != "" {
		b.WriteString("-" + c.alpn)
	}
	return apisix.SafeID(b.String())
}

// bottom reports whether the cell is the least specific place: a connection no other
// route takes.
func (c streamCell) bottom() bool { return c.port == 0 && c.addr == "" && c.proto == "" }

// streamClaim is the stream route a listener asks for at a cell. What the route does:
// http (amesh-http), cluster (tcp_proxy's cluster, whose kind the translator resolves),
// or neither: it closes connections, closed says why.
type streamClaim struct {
	cell    streamCell
	rank    int
	http    bool
	cluster string
	closed  string
	// tls: amesh-http hands the connection to the HTTP server's TLS socket, where
	// APISIX terminates Istio mTLS; mtls: amesh-mtls hands it to the stream server's
	// TLS socket, where the route of the place's protoMTLS cell takes the bytes.
	tls, mtls bool
	// peerSANs and rbac authorize the connections before they are sent on
	// (streamauthz.go): the PCRE a terminated mTLS peer's URI SANs must match, the
	// network RBAC filters.
	peerSANs string
	rbac     []json.RawMessage
	// id is set without capture: the route's id (tcp-<address>_<port>).
	id string
}

// routeID returns the id of the claim's route.
func (c *streamClaim) routeID() string {
	if c.id != "" {
		return c.id
	}
	return c.cell.id()
}

// chainPlace is where a filter chain sits in Envoy's filter chain match, as a
// plaintext connection sees it.
type chainPlace struct {
	fc   *listenerv3.FilterChain
	port int // destination_port; 0: any
	// prefixes are its destination prefixes (but /0); anyAddr: it also takes any
	// address (no prefix_ranges, or a /0 among them).
	prefixes []netip.Prefix
	anyAddr  bool
	plain    bool   // it may take a plaintext connection (no server names, no TLS transport protocol)
	raw      bool   // transport_protocol raw_buffer, which beats none
	proto    string // protoHTTP for HTTP's application protocols, "" for none, protoNever
	// tlsOK: it may take a TLS connection (no server names; transport protocol tls or
	// none); tls: transport protocol tls, which beats none; alpn: its application
	// protocols as a TLS connection's ALPN must name one.
	tlsOK, tls bool
	alpn       []string
	// unsupported says why the chain's place cannot be expressed; the connections it
	// would take are closed.
	unsupported string
}

// httpInspector is the type of Envoy's http_inspector listener filter: without it a
// plaintext connection has no application protocol.
const httpInspector = "type.googleapis.com/envoy.extensions.filters.listener.http_inspector.v3.HttpInspector"

// tlsInspector is the type of Envoy's tls_inspector listener filter: without it no
// connection is TLS to the filter chain match.
const tlsInspector = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"

// inspectsTLS reports whether the listener tells TLS connections from others, and the
// destination ports it does not for (the inspector's filter_disabled port range), or
// why its filter_disabled is not translated.
func inspectsTLS(l *listenerv3.Listener) (on bool, off [2]uint32, why string) {
	for _, f := range l.GetListenerFilters() {
		if f.GetTypedConfig().GetTypeUrl() != tlsInspector {
			continue
		}
		if d := f.GetFilterDisabled(); d != nil {
			r := d.GetDestinationPortRange()
			if r == nil {
				return false, off, "tls_inspector's filter_disabled is not a destination port range"
			}
			return true, [2]uint32{uint32(r.GetStart()), uint32(r.GetEnd())}, ""
		}
		return true, off, ""
	}
	return false, off, ""
}

// inspectsHTTP reports whether the listener tells HTTP connections from others.
func inspectsHTTP(l *listenerv3.Listener) bool {
	return slices.ContainsFunc(l.GetListenerFilters(), func(f *listenerv3.ListenerFilter) bool {
		return f.GetTypedConfig().GetTypeUrl() == httpInspector
	})
}

// placeOf returns where fc sits; inspect: the listener runs http_inspector.
func placeOf(fc *listenerv3.FilterChain, inspect bool) chainPlace {
	m := fc.GetFilterChainMatch()
	p := chainPlace{fc: fc, port: int(m.GetDestinationPort().GetValue()), anyAddr: len(m.GetPrefixRanges()) == 0}
	for _, r := range m.GetPrefixRanges() {
		ip, err := netip.ParseAddr(r.GetAddressPrefix())
		bits := int(r.GetPrefixLen().GetValue())
		if err != nil || ip.Zone() != "" || bits > ip.BitLen() {
			p.unsupported = fmt.Sprintf("destination prefix %s/%d is not an address prefix", r.GetAddressPrefix(), bits)
			continue
		}
		// Envoy matches a chain without prefixes as 0.0.0.0/0 and ::/0.
		if bits == 0 {
			p.anyAddr = true
			continue
		}
		p.prefixes = append(p.prefixes, netip.PrefixFrom(ip, bits).Masked())
	}
	tp := m.GetTransportProtocol()
	// A plaintext connection has no SNI: Envoy gives it the chains without server
	// names only.
	p.plain = (tp == "" || tp == "raw_buffer") && len(m.GetServerNames()) == 0
	p.raw = tp == "raw_buffer"
	p.tlsOK = (tp == "" || tp == "tls") && len(m.GetServerNames()) == 0
	p.tls = tp == "tls"
	p.alpn = m.GetApplicationProtocols()
	aps := m.GetApplicationProtocols()
	h11, h2c, h10 := slices.Contains(aps, "http/1.1"), slices.Contains(aps, "h2c"), slices.Contains(aps, "http/1.0")
	switch {
	case len(aps) == 0:
	case !inspect:
		// Without http_inspector no plaintext connection has them.
		p.proto = protoNever
	case h11 && h2c:
		// What Envoy's http_inspector reports for HTTP/1.1 and h2c.
		p.proto = protoHTTP
	case h11 || h2c || h10:
		p.proto = protoHTTP
		p.unsupported = fmt.Sprintf("application_protocols %v take only some HTTP versions", aps)
	default:
		// Protocols a plaintext connection never has (they come from TLS's ALPN).
		p.proto = protoNever
	}
	if len(m.GetDirectSourcePrefixRanges()) > 0 || len(m.GetSourcePrefixRanges()) > 0 || len(m.GetSourcePorts()) > 0 ||
		m.GetSourceType() != listenerv3.FilterChainMatch_ANY {
		p.unsupported = "the chain matches on the connection's source"
	}
	return p
}

// outboundStreams adds the stream routes of an outbound listener for port, on the
// outbound capture port listen.
func (b *listenerBuild) outboundStreams(listen, port int) {
	addrs, err := listenerAddrs(b.l)
	if err != "" {
		b.rep("address", report.Unsupported, err+"; connections to it are not served")
		return
	}
	rank := rankAddr
	if addrs == nil {
		rank = rankWildcard
	}
	b.streams(listen, rank, port, addrs)
}

// listenerAddrs returns the destination addresses a listener takes connections for:
// nil for any (it has a wildcard address), or why an address is not one.
func listenerAddrs(l *listenerv3.Listener) ([]netip.Addr, string) {
	all := []string{l.GetAddress().GetSocketAddress().GetAddress()}
	for _, a := range l.GetAdditionalAddresses() {
		all = append(all, a.GetAddress().GetSocketAddress().GetAddress())
	}
	var out []netip.Addr
	for _, s := range all {
		if s == "" || s == "0.0.0.0" || s == "::" {
			return nil, ""
		}
		ip, err := netip.ParseAddr(s)
		if err != nil || ip.Zone() != "" {
			return nil, fmt.Sprintf("listener address %q is not an IP address", s)
		}
		if !slices.Contains(out, ip) {
			out = append(out, ip)
		}
	}
	return out, ""
}

// streams adds the stream routes of the listener's chains on the capture port listen:
// for a listener of one port (port != 0) and addresses (nil: any), the cells of
// those; for a capture listener (port 0), one per destination port its chains name
// and those for any port.
func (b *listenerBuild) streams(listen, rank, port int, addrs []netip.Addr) {
	places := make([]chainPlace, 0, len(b.l.GetFilterChains()))
	inspect := inspectsHTTP(b.l)
	for _, fc := range b.l.GetFilterChains() {
		places = append(places, placeOf(fc, inspect))
	}
	b.tlsOn, b.tlsOff, b.tlsWhy = inspectsTLS(b.l)
	if b.tlsWhy != "" {
		b.rep("listener_filters", report.Unsupported, b.tlsWhy+"; TLS connections take the routes of plaintext ones")
	}
	if port != 0 {
		// Connections to this listener all have its port: its chains for that port,
		// or, without any, those for any port.
		group := placesFor(places, port)
		if len(group) == 0 {
			group = placesFor(places, 0)
		}
		if addrs == nil {
			b.prefixes(streamCell{listen: listen, port: port}, rank, group)
		}
		for _, a := range addrs {
			b.place(streamCell{listen: listen, port: port, addr: a.String()}, rank, placesOfAddr(group, a))
		}
		return
	}
	var ports []int
	for _, p := range places {
		if p.port != 0 && !slices.Contains(ports, p.port) {
			ports = append(ports, p.port)
		}
	}
	slices.Sort(ports)
	for q := b.tlsOff[0]; q < b.tlsOff[1] && q < b.tlsOff[0]+1024; q++ {
		if !slices.Contains(ports, int(q)) {
			b.rep("listener_filters", report.Approximated, fmt.Sprintf(
				"tls_inspector is disabled for destination ports %d-%d, some of which have no filter chains of their own: TLS connections to them are told from plaintext ones as to other ports", b.tlsOff[0], b.tlsOff[1]-1))
			break
		}
	}
	for _, dp := range ports {
		b.prefixes(streamCell{listen: listen, port: dp}, rank, placesFor(places, dp))
	}
	b.prefixes(streamCell{listen: listen}, rank, placesFor(places, 0))
}

// placesFor returns the places of the chains for destination port dp (0: any).
func placesFor(places []chainPlace, dp int) []chainPlace {
	var out []chainPlace
	for _, p := range places {
		if p.port == dp {
			out = append(out, p)
		}
	}
	return out
}

// placesOfAddr returns the places Envoy picks among group for a connection to a: the
// chains of the longest prefix that holds it, else those for any address.
func placesOfAddr(group []chainPlace, a netip.Addr) []chainPlace {
	best := -1
	for _, p := range group {
		for _, pf := range p.prefixes {
			if pf.Contains(a) && pf.Bits() > best {
				best = pf.Bits()
			}
		}
	}
	var out []chainPlace
	for _, p := range group {
		if best < 0 && p.anyAddr || best >= 0 && slices.ContainsFunc(p.prefixes, func(pf netip.Prefix) bool { return pf.Bits() == best && pf.Contains(a) }) {
			out = append(out, p)
		}
	}
	return out
}

// prefixes adds, for the chains of one destination port (cell.port), a cell per
// destination prefix they name and the cell for any address.
func (b *listenerBuild) prefixes(cell streamCell, rank int, group []chainPlace) {
	var pfs []netip.Prefix
	for _, p := range group {
		for _, pf := range p.prefixes {
			if !slices.Contains(pfs, pf) {
				pfs = append(pfs, pf)
			}
		}
	}
	slices.SortFunc(pfs, func(x, y netip.Prefix) int { return strings.Compare(x.String(), y.String()) })
	for _, pf := range pfs {
		c := cell
		c.addr = prefixAddr(pf)
		b.place(c, rank, slices.DeleteFunc(slices.Clone(group), func(p chainPlace) bool { return !slices.Contains(p.prefixes, pf) }))
	}
	b.place(cell, rank, slices.DeleteFunc(slices.Clone(group), func(p chainPlace) bool { return !p.anyAddr }))
}

// prefixAddr is a prefix as server_addr: an address when it holds one.
func prefixAddr(pf netip.Prefix) string {
	if pf.IsSingleIP() {
		return pf.Addr().String()
	}
	return pf.String()
}

// place adds the routes of one destination port and address (cell, proto unset) whose
// candidate chains are chains: one for HTTP when a chain takes HTTP only, and one for
// any protocol.
func (b *listenerBuild) place(cell streamCell, rank int, chains []chainPlace) {
	// Envoy's transport protocol step: raw_buffer chains beat those without one, and
	// it never falls back from them; then the application protocol step.
	var plain []chainPlace
	raw := false
	for _, p := range chains {
		if p.plain {
			plain = append(plain, p)
			raw = raw || p.raw
		}
	}
	if raw {
		plain = slices.DeleteFunc(plain, func(p chainPlace) bool { return !p.raw })
	}
	// What the route for any protocol does: its chain (nil: the fallback), or closed
	// for a match amesh cannot express.
	var anyFC *listenerv3.FilterChain
	anyClosed := false
	for _, proto := range []string{protoHTTP, ""} {
		c := cell
		c.proto = proto
		i := slices.IndexFunc(plain, func(p chainPlace) bool { return p.proto == proto })
		switch {
		case i < 0 && proto != "":
			// HTTP takes the route for any protocol, as in Envoy.
		case i < 0:
			b.fallback(c, rank)
		default:
			// Several chains in one place differ in what amesh cannot express (Envoy
			// rejects identical matches).
			if j := slices.IndexFunc(plain, func(p chainPlace) bool { return p.proto == proto && p.unsupported != "" }); j >= 0 {
				b.unsupportedMatch(c, rank, plain[j].unsupported)
				anyClosed = proto == ""
				continue
			}
			if proto == "" {
				anyFC = plain[i].fc
			}
			b.claim(c, rank, plain[i].fc)
		}
	}
	if b.tlsOn && (uint32(cell.port) < b.tlsOff[0] || uint32(cell.port) >= b.tlsOff[1]) {
		b.placeTLS(cell, rank, chains, anyFC, anyClosed)
	}
}

// unsupportedMatch closes the connections of cell, which a chain whose match amesh
// cannot express (why) would take.
func (b *listenerBuild) unsupportedMatch(cell streamCell, rank int, why string) {
	b.rep("filter_chains.filter_chain_match", report.Unsupported, why+"; the connections it would take are closed")
	b.close(cell, rank, "filter chain match not translated")
}

// placeTLS adds the routes of one place for TLS connections, among whose candidate
// chains Envoy picks as for a ClientHello without a server name that any chain names:
// those with transport protocol tls, else those without one; then the one naming the
// first of the connection's ALPN protocols that one names (a route per chain with
// application protocols), else the one without application protocols (the "tls"
// route, added only where it does not do what the route for any protocol, whose chain
// is anyFC, does), else the fallback.
func (b *listenerBuild) placeTLS(cell streamCell, rank int, chains []chainPlace, anyFC *listenerv3.FilterChain, anyClosed bool) {
	var set []chainPlace
	tls := false
	for _, p := range chains {
		if p.tlsOK {
			set = append(set, p)
			tls = tls || p.tls
		}
	}
	if tls {
		set = slices.DeleteFunc(set, func(p chainPlace) bool { return !p.tls })
	}
	named := map[string]bool{}
	for _, p := range set {
		if len(p.alpn) == 0 {
			continue
		}
		c := cell
		c.proto = protoTLS
		c.alpn = strings.Join(p.alpn, ",")
		var own []string // the protocols no earlier chain of the place names
		for _, a := range p.alpn {
			if !named[a] {
				own = append(own, a)
			}
			named[a] = true
		}
		switch {
		case len(own) < len(p.alpn):
			// Envoy rejects such a listener; the first chain keeps its protocols.
			b.rep("filter_chains.filter_chain_match.application_protocols", report.Invalid, fmt.Sprintf(
				"application protocols %v of filter chain %s repeat those of another chain in the same place; the connections it would take are closed", p.alpn, p.fc.GetName()))
			if len(own) > 0 {
				c.alpn = strings.Join(own, ",")
				b.close(c, rank, "application protocols repeated")
			}
		case len(c.alpn) > 256 || strings.ContainsFunc(c.alpn, func(r rune) bool { return r <= ' ' || r > '~' }):
			b.rep("filter_chains.filter_chain_match.application_protocols", report.Unsupported, fmt.Sprintf(
				"application protocols %v of filter chain %s are not an APISIX label value; the connections they would take are closed", p.alpn, p.fc.GetName()))
			b.close(c, rank, "application protocols not translated")
		case p.unsupported != "":
			b.unsupportedMatch(c, rank, p.unsupported)
		default:
			b.claimTLS(c, rank, p.fc)
		}
	}
	c := cell
	c.proto = protoTLS
	i := slices.IndexFunc(set, func(p chainPlace) bool { return len(p.alpn) == 0 })
	if i < 0 {
		if anyFC == nil && !anyClosed {
			return // both fall back alike
		}
		b.fallback(c, rank)
		return
	}
	p := set[i]
	if p.fc == anyFC && (p.unsupported != "") == anyClosed && p.fc.GetTransportSocket() == nil {
		return
	}
	if p.unsupported != "" {
		b.unsupportedMatch(c, rank, p.unsupported)
		return
	}
	b.claimTLS(c, rank, p.fc)
}

// claimTLS adds the route that serves TLS connections of cell as chain fc does: one
// without a transport socket passes them on as they are; one that terminates Istio
// mTLS in front of an HTTP connection manager hands them to the HTTP server's TLS
// socket, where the chain's routes are (listener.go); anything else closes them.
func (b *listenerBuild) claimTLS(cell streamCell, rank int, fc *listenerv3.FilterChain) {
	if fc.GetTransportSocket() == nil {
		b.claim(cell, rank, fc)
		return
	}
	a := b.analyze(fc)
	sans, why := istioServerTLS(fc.GetTransportSocket())
	switch {
	case why != "":
		b.rep("filter_chains.transport_socket", report.Unsupported, "filter chain "+fc.GetName()+": "+why+"; its connections are closed")
		b.close(cell, rank, "TLS not terminated")
	case a.hcm == nil && !b.inbound:
		b.rep("filter_chains.transport_socket", report.Unsupported, "filter chain "+fc.GetName()+
			" terminates Istio mTLS in front of TCP on a listener other than the inbound capture listener, where APISIX has no TLS socket; its connections are closed")
		b.close(cell, rank, "TLS not terminated")
	case a.hcm == nil:
		// The terminated bytes come back to the stream router on the stream server's
		// TLS socket, where the place's "mtls" route does what the chain's filters do.
		inner := cell
		inner.proto, inner.alpn = protoMTLS, ""
		if prev, ok := b.mtlsTCP[inner]; ok && prev != fc {
			b.rep("filter_chains.transport_socket", report.Unsupported, "filter chain "+fc.GetName()+
				" terminates Istio mTLS in front of TCP where another chain ("+prev.GetName()+") does too, for other ALPN protocols; APISIX terminates one per place, so its connections are closed")
			b.close(cell, rank, "TLS not terminated")
			return
		}
		if b.mtlsTCP == nil {
			b.mtlsTCP = map[streamCell]*listenerv3.FilterChain{}
		}
		if _, ok := b.mtlsTCP[inner]; !ok {
			b.mtlsTCP[inner] = fc
			b.claimFilters(inner, rank, fc)
			b.requirePeer(inner, sans)
		}
		b.out.mtls.add(sans)
		b.out.streams = append(b.out.streams, streamClaim{cell: cell, rank: rank, mtls: true})
	case b.tlsHTTP[fc] == "":
		b.rep("filter_chains.transport_socket", report.Unsupported, "filter chain "+fc.GetName()+
			" terminates Istio mTLS in front of HTTP routes that APISIX's TLS socket does not serve (another TLS chain's for the same port, or not an inbound listener's); its connections are closed")
		b.close(cell, rank, "TLS not terminated")
	default:
		b.use(a)
		b.out.mtls.add(sans)
		b.out.streams = append(b.out.streams, streamClaim{cell: cell, rank: rank, http: true, tls: true})
	}
}

// fallback adds the route of a place without a plaintext chain: the default chain's,
// or one that closes connections, as Envoy does.
func (b *listenerBuild) fallback(cell streamCell, rank int) {
	if dc := b.l.GetDefaultFilterChain(); dc != nil {
		b.claim(cell, rank, dc)
		return
	}
	b.close(cell, rank, "no filter chain")
}

// close adds a route that closes the connections of cell, why says why; none at the
// bottom.
func (b *listenerBuild) close(cell streamCell, rank int, why string) {
	if cell.bottom() {
		return
	}
	b.out.streams = append(b.out.streams, streamClaim{cell: cell, rank: rank, closed: why})
}

// claim adds the route that serves cell as chain fc does.
func (b *listenerBuild) claim(cell streamCell, rank int, fc *listenerv3.FilterChain) {
	if fc.GetTransportSocket() != nil {
		// A chain that terminates TLS: Envoy's handshake fails on a plaintext
		// connection.
		b.close(cell, rank, "a plaintext connection to a TLS filter chain")
		return
	}
	b.claimFilters(cell, rank, fc)
}

// claimFilters adds the route that does what fc's filters do with the (plaintext, or
// terminated) bytes of cell's connections.
func (b *listenerBuild) claimFilters(cell streamCell, rank int, fc *listenerv3.FilterChain) {
	a := b.analyze(fc)
	b.use(a)
	switch cl := a.tcp.GetCluster(); {
	case a.hcm != nil:
		var ctx httpCtx
		if !setRouteSource(&ctx, a.hcm) {
			b.rep(noRouteSource())
			b.close(cell, rank, "HTTP connection manager without routes")
			return
		}
		b.out.streams = append(b.out.streams, streamClaim{cell: cell, rank: rank, http: true})
	case a.tcp != nil && cl != "":
		where := "connections to " + cl
		a.report(b.rep, where)
		if v := a.filters.noRoute; v != nil {
			b.rep("filter_chains.filters", report.Unsupported, v.reason+"; the "+where+" are closed")
			b.close(cell, rank, "filters fail closed")
			return
		}
		b.out.streams = append(b.out.streams, streamClaim{cell: cell, rank: rank, cluster: cl, rbac: a.filters.noRouteSteps.list})
	default:
		if a.tcp == nil && a.terminal == "" {
			a.report(b.rep, "filter chain "+fc.GetName())
		}
		b.rep(unservedChain(a))
		b.close(cell, rank, "filter chain not translated")
	}
}

// noRouteSource is the report entry on an HTTP connection manager without routes.
func noRouteSource() (string, report.Severity, string) {
	return "filter_chains.filters.http_connection_manager", report.Unsupported, "HTTP connection manager without rds or route_config is not translated"
}

// unservedChain is the report entry on a chain that is neither an HTTP connection
// manager nor a tcp_proxy to one cluster.
func unservedChain(a *chainAnalysis) (string, report.Severity, string) {
	switch {
	case a.tcp != nil:
		return "filter_chains.filters.tcp_proxy", report.Unsupported, "tcp_proxy without a single cluster (weighted_clusters) is not translated"
	case a.terminal != "":
		return "filter_chains.filters[" + a.terminal + "]", report.Unsupported, "network filter " + a.terminal + " is not translated; this filter chain serves nothing"
	}
	return "filter_chains.filters", report.Unsupported, "a filter chain without an HTTP connection manager or tcp_proxy amesh can translate serves nothing"
}
