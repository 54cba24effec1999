package translate

// A small evaluator of amesh's stream router over the translated stream routes (the
// order of the stream front's contract; no translation code): among the routes of the
// connection's capture port (label amesh-listen), one for its original destination
// port beats one for any port, then the longest server_addr prefix (none: /0), then
// one for its protocol (label amesh-protocol) beats one for any. Two routes a
// connection could take at the same rank are an error.

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"net/netip"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/http_inspector/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// conn is a connection as the stream router sees it.
type conn struct {
	listen string // APISIX's capture port: "15001" outbound, "15006" inbound
	addr   string // original destination
	port   int
	http   bool // its first bytes are an HTTP/1.1 request line or the h2c preface
	// tls: its first bytes are a TLS ClientHello, without a server name any chain
	// names, offering the application protocols alpn.
	tls  bool
	alpn []string
	// terminated: it is the plaintext of an Istio mTLS connection the stream server's
	// TLS socket terminated (what amesh-mtls sent there); peer is its client
	// certificate's URI SANs as $amesh_peer_uri_sans has them.
	terminated bool
	peer       string
}

// sRoute is a stream route as the router reads it.
type sRoute struct {
	ID         string            `json:"id"`
	ServerAddr string            `json:"server_addr"`
	ServerPort int               `json:"server_port"`
	Labels     map[string]string `json:"labels"`
	UpstreamID string            `json:"upstream_id"`
	Plugins    map[string]json.RawMessage
	prefix     netip.Prefix // of ServerAddr; invalid when it is empty
}

// streamRoutesOf decodes the stream routes of objs.
func streamRoutesOf(t *testing.T, objs map[string][]byte) []*sRoute {
	t.Helper()
	var out []*sRoute
	for k, v := range objs {
		if !strings.HasPrefix(k, "/stream_routes/") {
			continue
		}
		r := &sRoute{}
		if err := json.Unmarshal(v, r); err != nil {
			t.Fatal(err)
		}
		if r.ServerAddr != "" {
			var err error
			if strings.Contains(r.ServerAddr, "/") {
				r.prefix, err = netip.ParsePrefix(r.ServerAddr)
			} else {
				var a netip.Addr
				a, err = netip.ParseAddr(r.ServerAddr)
				r.prefix = netip.PrefixFrom(a, a.BitLen())
			}
			if err != nil {
				t.Fatalf("%s: server_addr %q: %v", k, r.ServerAddr, err)
			}
		}
		out = append(out, r)
	}
	return out
}

// rank is the route's place in the router's order for c: greater is more specific.
// Among a place's routes for TLS, one whose ALPN names the connection's first protocol
// that a route names beats the others.
func (r *sRoute) rank(c conn) [3]int {
	var k [3]int
	if r.ServerPort != 0 {
		k[0] = 1
	}
	if r.prefix.IsValid() {
		k[1] = r.prefix.Bits()
	}
	if r.Labels["amesh-protocol"] != "" {
		k[2] = 1
	}
	if a := r.Labels["amesh-alpn"]; a != "" {
		names := strings.Split(a, ",")
		k[2] = 1000 - slices.IndexFunc(c.alpn, func(p string) bool { return slices.Contains(names, p) })
	}
	return k
}

func (r *sRoute) matches(t *testing.T, c conn) bool {
	if r.ServerPort != 0 && r.ServerPort != c.port {
		return false
	}
	if r.prefix.IsValid() && !r.prefix.Contains(netip.MustParseAddr(c.addr)) {
		return false
	}
	if c.terminated != (r.Labels["amesh-protocol"] == "mtls") {
		return false
	}
	switch p := r.Labels["amesh-protocol"]; p {
	case "mtls":
	case "":
	case "http":
		if !c.http || c.tls {
			return false
		}
	case "tls":
		if !c.tls {
			return false
		}
		if a := r.Labels["amesh-alpn"]; a != "" && !slices.ContainsFunc(strings.Split(a, ","), func(p string) bool { return slices.Contains(c.alpn, p) }) {
			return false
		}
	default:
		t.Errorf("stream route %s: protocol %q", r.ID, p)
		return false
	}
	return r.Labels["amesh-listen"] == c.listen
}

// streamRouteOf returns the route the stream router picks for c, nil for none.
func streamRouteOf(t *testing.T, objs map[string][]byte, c conn) *sRoute {
	t.Helper()
	var best *sRoute
	for _, r := range streamRoutesOf(t, objs) {
		if !r.matches(t, c) {
			continue
		}
		switch {
		case best == nil || less(best.rank(c), r.rank(c)):
			best = r
		case best.rank(c) == r.rank(c):
			t.Errorf("connection %+v: stream routes %s and %s tie", c, best.ID, r.ID)
		}
	}
	return best
}

func less(a, b [3]int) bool {
	for i := range a {
		if a[i] != b[i] {
			return a[i] < b[i]
		}
	}
	return false
}

// streamAnswer is what the stream route a connection gets does with it: nothing
// (route ""), hands it to APISIX's HTTP server (http), forwards it to the upstream of
// a cluster (to the original destination with odst), or closes it (a route without
// upstream or plugin).
type streamAnswer struct {
	route    string
	http     bool
	mtls     bool // http, on the HTTP server's TLS socket
	mtlsTCP  bool // to the stream server's TLS socket (amesh-mtls)
	upstream string
	odst     *upstream.OriginalDstConf
	closed   bool
	// refused: amesh-mtls-peer closes it (its peer has no URI SAN the chain accepts);
	// rbac: the network RBAC filters amesh-network-rbac enforces on it (JSON).
	refused bool
	rbac    string
}

func (a streamAnswer) String() string {
	s := fmt.Sprintf("{route %q http %v mtls %v mtlsTCP %v upstream %q closed %v refused %v rbac %s", a.route, a.http, a.mtls, a.mtlsTCP, a.upstream, a.closed, a.refused, a.rbac)
	if a.odst != nil {
		s += fmt.Sprintf(" odst %+v", *a.odst)
	}
	return s + "}"
}

func (a streamAnswer) equal(b streamAnswer) bool {
	return a.route == b.route && a.http == b.http && a.mtls == b.mtls && a.mtlsTCP == b.mtlsTCP && a.upstream == b.upstream && a.closed == b.closed &&
		a.refused == b.refused && a.rbac == b.rbac &&
		(a.odst == nil) == (b.odst == nil) && (a.odst == nil || *a.odst == *b.odst)
}

// streamAnswerOf returns what the translated objects do with c.
func streamAnswerOf(t *testing.T, objs map[string][]byte, c conn) streamAnswer {
	t.Helper()
	r := streamRouteOf(t, objs, c)
	if r == nil {
		return streamAnswer{}
	}
	a := streamAnswer{route: r.ID}
	for name, raw := range r.Plugins {
		switch name {
		case "amesh-http":
			a.http = true
			var conf struct {
				TLS bool `json:"tls"`
			}
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatal(err)
			}
			a.mtls = conf.TLS
		case "amesh-mtls":
			a.mtlsTCP = true
		case streamPeerPlugin:
			var conf streamPeerConf
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatal(err)
			}
			if r.Labels["amesh-protocol"] != protoMTLS {
				t.Errorf("stream route %s: %s on a route for connections not terminated", r.ID, name)
			}
			a.refused = !pcreToGo(t, conf.URISANs).MatchString(c.peer)
		case networkRBACPlugin:
			var conf networkRBACConf
			if err := json.Unmarshal(raw, &conf); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(conf.Filters)
			a.rbac = string(b)
		case upstream.OriginalDstPlugin:
			a.odst = &upstream.OriginalDstConf{}
			if err := json.Unmarshal(raw, a.odst); err != nil {
				t.Fatal(err)
			}
		default:
			t.Errorf("stream route %s: plugin %s", r.ID, name)
		}
	}
	switch {
	case (a.http || a.mtlsTCP) && (r.UpstreamID != "" || len(r.Plugins) != 1):
		t.Errorf("stream route %s: amesh-http or amesh-mtls with an upstream or another plugin", r.ID)
	case a.odst != nil && r.UpstreamID == "":
		t.Errorf("stream route %s: amesh-original-dst without an upstream", r.ID)
	case r.UpstreamID == "" && len(r.Plugins) == 0:
		a.closed = true
	}
	if r.UpstreamID != "" {
		var u struct {
			Name  string            `json:"name"`
			Nodes []json.RawMessage `json:"nodes"`
		}
		if err := json.Unmarshal(objs["/upstreams/"+r.UpstreamID], &u); err != nil {
			t.Fatalf("stream route %s: upstream %s: %v", r.ID, r.UpstreamID, err)
		}
		a.upstream = u.Name
		if a.odst != nil && len(u.Nodes) != 0 {
			t.Errorf("stream route %s: the upstream of an original-destination route has nodes", r.ID)
		}
	}
	return a
}

// checkStreamRoutes checks what holds for every stream route under capture: it is for
// one of the capture ports, and no two have the same place in the router's order.
func checkStreamRoutes(t *testing.T, objs map[string][]byte) {
	t.Helper()
	type place struct {
		listen, addr, proto, alpn string
		port                      int
	}
	seen := map[place]string{}
	for _, r := range streamRoutesOf(t, objs) {
		if l := r.Labels["amesh-listen"]; l != "15001" && l != "15006" {
			t.Errorf("stream route %s is for capture port %q", r.ID, l)
		}
		p := place{r.Labels["amesh-listen"], r.prefix.String(), r.Labels["amesh-protocol"], r.Labels["amesh-alpn"], r.ServerPort}
		if other, ok := seen[p]; ok {
			t.Errorf("stream routes %s and %s tie", other, r.ID)
		}
		seen[p] = r.ID
	}
}

// stc is a connection and what it should get.
type stc struct {
	name string
	c    conn
	want streamAnswer
}

func checkStreams(t *testing.T, objs map[string][]byte, cases []stc) {
	t.Helper()
	checkStreamRoutes(t, objs)
	for _, c := range cases {
		if got := streamAnswerOf(t, objs, c.c); !got.equal(c.want) {
			t.Errorf("%s (%+v): %v, want %v", c.name, c.c, got, c.want)
		}
	}
}

// tcpChain is a plaintext filter chain with tcp_proxy to cluster behind filters.
func tcpChain(cluster string, filters ...*listenerv3.Filter) *listenerv3.FilterChain {
	tp := &listenerv3.Filter{Name: "envoy.filters.network.tcp_proxy", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(
		&tcpv3.TcpProxy{StatPrefix: cluster, ClusterSpecifier: &tcpv3.TcpProxy_Cluster{Cluster: cluster}})}}
	return &listenerv3.FilterChain{Filters: append(filters, tp)}
}

// denyAll is a network RBAC filter that denies every connection.
func denyAll() *listenerv3.Filter {
	return &listenerv3.Filter{Name: "envoy.filters.network.rbac", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(
		&rbacnetv3.RBAC{StatPrefix: "tcp.", Rules: &rbacv3.RBAC{}})}}
}

// inboundCluster is Istio's inbound|port|| cluster: to the original destination, from
// 127.0.0.6.
func inboundCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout: durationpb.New(10e9), LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED,
		UpstreamBindConfig: &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6",
			PortSpecifier: &corev3.SocketAddress_PortValue{}}}}
}

// withListener returns snap with listener l added or replaced, and clusters added.
func withListener(snap *resource.State, l *listenerv3.Listener, cs ...*clusterv3.Cluster) *resource.State {
	out := *snap
	out.Listeners = map[string]*listenerv3.Listener{}
	for n, x := range snap.Listeners {
		out.Listeners[n] = x
	}
	out.Listeners[l.GetName()] = l
	out.Clusters = map[string]*resource.Cluster{}
	for n, c := range snap.Clusters {
		out.Clusters[n] = c
	}
	for _, c := range cs {
		out.Clusters[c.GetName()] = resource.MustCluster(c)
	}
	out.Changes = resource.Changes{Full: true}
	return &out
}

// Inbound TCP to a port a TCP chain of virtualInbound names goes to the port's inbound
// cluster, from 127.0.0.6, whatever its first bytes; behind a network RBAC filter that
// denies everything, the connection is closed, not passed through by the catch-all.
func TestStreamInboundTCP(t *testing.T) {
	base := istiodSnapshot(t, "sotw")
	vi := func(filters ...*listenerv3.Filter) *listenerv3.Listener {
		l := proto.Clone(base.Listeners[virtualInbound]).(*listenerv3.Listener)
		fc := tcpChain("inbound|5432||", filters...)
		fc.Name = "0.0.0.0_5432"
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(5432), TransportProtocol: "raw_buffer"}
		l.FilterChains = append(l.FilterChains, fc)
		return l
	}
	inbound := &upstream.OriginalDstConf{Bind: "127.0.0.6"}
	to5432 := conn{listen: "15006", addr: "10.244.0.7", port: 5432}
	toHTTP := to5432
	toHTTP.http = true

	tr := newTracked(Options{})
	tr.Translate(withListener(base, vi(), inboundCluster("inbound|5432||")))
	objs := tr.Objects()
	validateAll(t, objs)
	want := streamAnswer{route: "15006-5432", upstream: "inbound|5432||", odst: inbound}
	checkStreams(t, objs, []stc{
		{"TCP to the port", to5432, want},
		{"HTTP to the port", toHTTP, want},
		{"TCP to another port", conn{listen: "15006", addr: "10.244.0.7", port: 5433},
			streamAnswer{route: "15006-any", upstream: "InboundPassthroughCluster", odst: inbound}},
	})

	tr = newTracked(Options{})
	rep := tr.Translate(withListener(base, vi(denyAll()), inboundCluster("inbound|5432||"))).Report
	objs = tr.Objects()
	validateAll(t, objs)
	checkStreams(t, objs, []stc{
		{"TCP behind a denying RBAC filter", to5432, streamAnswer{route: "15006-5432", closed: true}},
		{"HTTP behind a denying RBAC filter", toHTTP, streamAnswer{route: "15006-5432", closed: true}},
	})
	if !findEntry(rep, "filter_chains.filters", report.Unsupported, "connections to inbound|5432|| are closed") {
		t.Errorf("the closed connections are not reported: %v", rep)
	}

	// A cluster that does not exist: Envoy closes the connections too.
	tr = newTracked(Options{})
	rep = tr.Translate(withListener(base, vi())).Report
	checkStreams(t, tr.Objects(), []stc{{"TCP to a missing cluster", to5432, streamAnswer{route: "15006-5432", closed: true}}})
	if !findEntry(rep, "filter_chains.filters.tcp_proxy.cluster", report.Invalid, "inbound|5432|| does not exist") {
		t.Errorf("the missing cluster is not reported: %v", rep)
	}
}

// Outbound chains by destination prefix and protocol, and a listener for one address
// on the same port: each connection takes the chain Envoy picks (the listener of its
// address, then the longest prefix, then the protocol), never virtualOutbound's
// passthrough, nor a chain of virtualOutbound for the port, while a listener has its
// port; a prefix and address that both listeners have goes to the listener of the
// address.
func TestStreamPrefixes(t *testing.T) {
	snap := istiodSnapshot(t, "sotw")
	wide := httpListener(5000, "9080")
	wide.ListenerFilters = []*listenerv3.ListenerFilter{inspector()}
	wide.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1", "h2c"}}
	cidr := func(a string, n uint32) *corev3.CidrRange {
		return &corev3.CidrRange{AddressPrefix: a, PrefixLen: wrapperspb.UInt32(n)}
	}
	for _, c := range []struct {
		cluster string
		ranges  []*corev3.CidrRange
	}{
		{"c8", []*corev3.CidrRange{cidr("10.0.0.0", 8)}},
		{"c16", []*corev3.CidrRange{cidr("10.1.0.0", 16), cidr("192.168.7.0", 24)}},
		{"c32", []*corev3.CidrRange{cidr("10.1.2.3", 32)}},
	} {
		fc := tcpChain(c.cluster)
		fc.FilterChainMatch = &listenerv3.FilterChainMatch{PrefixRanges: c.ranges}
		wide.FilterChains = append(wide.FilterChains, fc)
	}
	narrow := &listenerv3.Listener{Name: "10.1.2.3_5000", Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "10.1.2.3", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5000}}}},
		FilterChains: []*listenerv3.FilterChain{tcpChain("addr")}}
	vo := proto.Clone(snap.Listeners[virtualOutbound]).(*listenerv3.Listener)
	fc := tcpChain("vo")
	fc.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(5000), PrefixRanges: []*corev3.CidrRange{cidr("172.20.0.0", 16)}}
	vo.FilterChains = append(vo.FilterChains, fc)
	snap = withListener(withListener(withListener(snap, wide, staticCluster("c8"), staticCluster("c16"), staticCluster("c32"), staticCluster("addr")), narrow),
		vo, staticCluster("vo"))

	tr := newTracked(Options{})
	tr.Translate(snap)
	objs := tr.Objects()
	validateAll(t, objs)
	out := func(addr string, http bool) conn { return conn{listen: "15001", addr: addr, port: 5000, http: http} }
	checkStreams(t, objs, []stc{
		{"the listener's address", out("10.1.2.3", false), streamAnswer{route: "15001-5000-10.1.2.3", upstream: "addr"}},
		{"HTTP to the listener's address", out("10.1.2.3", true), streamAnswer{route: "15001-5000-10.1.2.3", upstream: "addr"}},
		{"a /16", out("10.1.9.9", false), streamAnswer{route: apisix.SafeID("15001-5000-10.1.0.0/16"), upstream: "c16"}},
		{"the /16's other range", out("192.168.7.1", true), streamAnswer{route: apisix.SafeID("15001-5000-192.168.7.0/24"), upstream: "c16"}},
		{"HTTP in a /8", out("10.2.0.1", true), streamAnswer{route: apisix.SafeID("15001-5000-10.0.0.0/8"), upstream: "c8"}},
		{"HTTP elsewhere", out("172.16.0.1", true), streamAnswer{route: "15001-5000-http", http: true}},
		// No chain and no default chain: Envoy closes the connection.
		{"TCP elsewhere", out("172.16.0.1", false), streamAnswer{route: "15001-5000", closed: true}},
		{"virtualOutbound's prefix for the port", out("172.20.1.1", false), streamAnswer{route: "15001-5000", closed: true}},
		{"HTTP to virtualOutbound's prefix for the port", out("172.20.1.1", true), streamAnswer{route: "15001-5000-http", http: true}},
		{"another port", conn{listen: "15001", addr: "172.16.0.1", port: 5001},
			streamAnswer{route: "15001-any", upstream: "PassthroughCluster", odst: &upstream.OriginalDstConf{}}},
	})
}

// A change to an original-destination cluster's source address reaches the stream
// routes to it, as a full translation would give it.
func TestStreamFollowsClusterShape(t *testing.T) {
	base := istiodSnapshot(t, "sotw")
	tr := newTracked(Options{})
	tr.Translate(base)
	c := inboundCluster("InboundPassthroughCluster")
	c.UpstreamBindConfig.SourceAddress.Address = "127.0.0.7"
	next := withListener(base, base.Listeners[virtualInbound], c)
	next.Seq = base.Seq + 1
	next.Changes = resource.Changes{Since: base.Seq, Clusters: map[string]struct{}{"InboundPassthroughCluster": {}}}
	tr.Translate(next)
	tcpIn := conn{listen: "15006", addr: "10.244.0.7", port: 5432}
	want := streamAnswer{route: "15006-any", upstream: "InboundPassthroughCluster", odst: &upstream.OriginalDstConf{Bind: "127.0.0.7"}}
	checkStreams(t, tr.Objects(), []stc{{"after the change", tcpIn, want}})
	full := newTracked(Options{})
	full.Translate(withListener(base, base.Listeners[virtualInbound], c))
	if !sameObjects(full.Objects(), tr.Objects()) {
		t.Error("incremental output differs from a full translation")
	}
}

// envoyChain returns the filter chain Envoy gives a connection on capture port 15001,
// nil for none (the connection is closed): the listener for its address and port,
// else the one for its port, else virtualOutbound; then, among the listener's chains,
// those for its port (else those for any port), those of the longest prefix holding
// its address (no prefix: /0), those without server names (a plaintext connection has
// no SNI), raw_buffer ones (else those without a transport protocol), those with its
// application protocol (else those without), the first; without one, the default
// chain.
func envoyChain(ls []*listenerv3.Listener, c conn) *listenerv3.FilterChain {
	var l *listenerv3.Listener
	for _, wild := range []bool{false, true} {
		for _, x := range ls {
			sa := x.GetAddress().GetSocketAddress()
			if x.GetName() == virtualOutbound || int(sa.GetPortValue()) != c.port {
				continue
			}
			if w := sa.GetAddress() == "0.0.0.0"; w == wild && (wild || sa.GetAddress() == c.addr) && l == nil {
				l = x
			}
		}
	}
	if l == nil {
		for _, x := range ls {
			if x.GetName() == virtualOutbound {
				l = x
			}
		}
	}
	if l == nil {
		return nil
	}
	chains := l.GetFilterChains()
	step := func(keep func(*listenerv3.FilterChainMatch) bool) {
		var out []*listenerv3.FilterChain
		for _, fc := range chains {
			if keep(fc.GetFilterChainMatch()) {
				out = append(out, fc)
			}
		}
		chains = out
	}
	prefer := func(first, then func(*listenerv3.FilterChainMatch) bool) {
		for _, fc := range chains {
			if first(fc.GetFilterChainMatch()) {
				step(first)
				return
			}
		}
		step(then)
	}
	prefer(func(m *listenerv3.FilterChainMatch) bool { return int(m.GetDestinationPort().GetValue()) == c.port },
		func(m *listenerv3.FilterChainMatch) bool { return m.GetDestinationPort() == nil })
	addr := netip.MustParseAddr(c.addr)
	best := -1
	for _, fc := range chains {
		rs := fc.GetFilterChainMatch().GetPrefixRanges()
		if len(rs) == 0 {
			best = max(best, 0)
		}
		for _, r := range rs {
			if pf := netip.PrefixFrom(netip.MustParseAddr(r.GetAddressPrefix()), int(r.GetPrefixLen().GetValue())); pf.Contains(addr) {
				best = max(best, pf.Bits())
			}
		}
	}
	step(func(m *listenerv3.FilterChainMatch) bool {
		if len(m.GetPrefixRanges()) == 0 {
			return best == 0
		}
		for _, r := range m.GetPrefixRanges() {
			if pf := netip.PrefixFrom(netip.MustParseAddr(r.GetAddressPrefix()), int(r.GetPrefixLen().GetValue())); pf.Contains(addr) && pf.Bits() == best {
				return true
			}
		}
		return false
	})
	step(func(m *listenerv3.FilterChainMatch) bool { return len(m.GetServerNames()) == 0 })
	inspectHTTP, inspectTLS := false, false
	for _, f := range l.GetListenerFilters() {
		inspectHTTP = inspectHTTP || f.GetName() == "envoy.filters.listener.http_inspector"
		inspectTLS = inspectTLS || f.GetName() == "envoy.filters.listener.tls_inspector"
	}
	if c.tls && inspectTLS {
		prefer(func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == "tls" },
			func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == "" })
		// The first of the connection's protocols that a chain names picks it.
		for _, p := range c.alpn {
			if slices.ContainsFunc(chains, func(fc *listenerv3.FilterChain) bool {
				return slices.Contains(fc.GetFilterChainMatch().GetApplicationProtocols(), p)
			}) {
				step(func(m *listenerv3.FilterChainMatch) bool { return slices.Contains(m.GetApplicationProtocols(), p) })
				return first(chains)
			}
		}
		step(func(m *listenerv3.FilterChainMatch) bool { return len(m.GetApplicationProtocols()) == 0 })
		if len(chains) > 0 {
			return chains[0]
		}
		return l.GetDefaultFilterChain()
	}
	// Without tls_inspector a TLS connection is raw_buffer without protocols, as one
	// http_inspector does not take for HTTP.
	prefer(func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == "raw_buffer" },
		func(m *listenerv3.FilterChainMatch) bool { return m.GetTransportProtocol() == "" })
	prefer(func(m *listenerv3.FilterChainMatch) bool {
		return inspectHTTP && c.http && !c.tls && slices.Contains(m.GetApplicationProtocols(), "http/1.1")
	},
		func(m *listenerv3.FilterChainMatch) bool { return len(m.GetApplicationProtocols()) == 0 })
	if len(chains) > 0 {
		return chains[0]
	}
	return l.GetDefaultFilterChain()
}

func first(chains []*listenerv3.FilterChain) *listenerv3.FilterChain {
	if len(chains) == 0 {
		return nil
	}
	return chains[0]
}

// envoyAnswer is what Envoy does with a connection that chain fc takes, in the terms
// of streamAnswer (without the route). A chain with a TLS transport socket closes it
// here: a plaintext connection fails Envoy's handshake, and the random chains'
// sockets are no TLS context amesh terminates (it closes those connections).
func envoyAnswer(t *testing.T, fc *listenerv3.FilterChain, clusters map[string]*resource.Cluster) streamAnswer {
	closed := streamAnswer{closed: true}
	if fc == nil || fc.GetTransportSocket() != nil {
		return closed
	}
	for _, f := range fc.GetFilters() {
		switch {
		case f.GetTypedConfig().MessageIs(&rbacnetv3.RBAC{}):
			return closed // every generated RBAC filter denies everything
		case f.GetTypedConfig().MessageIs(&hcmv3.HttpConnectionManager{}):
			return streamAnswer{http: true}
		case f.GetTypedConfig().MessageIs(&tcpv3.TcpProxy{}):
			tp := &tcpv3.TcpProxy{}
			if err := f.GetTypedConfig().UnmarshalTo(tp); err != nil {
				t.Fatal(err)
			}
			switch name := tp.GetCluster(); {
			case clusters[name] == nil, name == "BlackHoleCluster":
				return closed
			case name == "PassthroughCluster":
				return streamAnswer{upstream: name, odst: &upstream.OriginalDstConf{}}
			default:
				return streamAnswer{upstream: name}
			}
		}
	}
	return closed
}

// tlsInspectorFilter is Envoy's tls_inspector listener filter.
func tlsInspectorFilter() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.tls_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&tlsinspectorv3.TlsInspector{})}}
}

// inspector is Envoy's http_inspector listener filter.
func inspector() *listenerv3.ListenerFilter {
	return &listenerv3.ListenerFilter{Name: "envoy.filters.listener.http_inspector",
		ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(&httpinspectorv3.HttpInspector{})}}
}

// randomChain is a filter chain with a random match and terminal filter.
func randomChain(rng *rand.Rand, ports []uint32) *listenerv3.FilterChain {
	var fc *listenerv3.FilterChain
	switch rng.Intn(6) {
	case 0, 1:
		fc = httpListener(1, "r").FilterChains[0]
	case 2:
		fc = tcpChain("c1", denyAll())
	default:
		fc = tcpChain([]string{"c1", "c2", "PassthroughCluster", "BlackHoleCluster", "missing"}[rng.Intn(5)])
	}
	m := &listenerv3.FilterChainMatch{}
	if p := ports[rng.Intn(len(ports))]; p != 0 {
		m.DestinationPort = wrapperspb.UInt32(p)
	}
	for _, r := range [][2]any{{"10.0.0.0", 8}, {"10.1.0.0", 16}, {"10.1.2.3", 32}, {"192.168.7.0", 24}, {"0.0.0.0", 0}} {
		if rng.Intn(5) == 0 {
			m.PrefixRanges = append(m.PrefixRanges, &corev3.CidrRange{AddressPrefix: r[0].(string), PrefixLen: wrapperspb.UInt32(uint32(r[1].(int)))})
		}
	}
	m.TransportProtocol = []string{"", "", "raw_buffer", "tls"}[rng.Intn(4)]
	switch rng.Intn(6) {
	case 0, 1, 2:
		m.ApplicationProtocols = []string{"http/1.1", "h2c"}
	case 3:
		m.ApplicationProtocols = []string{"istio-http/1.1", "istio"}
	case 4:
		m.ApplicationProtocols = []string{"istio-peer-exchange", "h2"}
	}
	if rng.Intn(10) == 0 {
		m.ServerNames = []string{"a.example"}
	}
	if rng.Intn(8) == 0 {
		fc.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls"}
	}
	fc.FilterChainMatch = m
	return fc
}

// randomListener is an outbound listener with random chains (port 0: virtualOutbound).
func randomListener(rng *rand.Rand, name, addr string, port uint32) *listenerv3.Listener {
	l := httpListener(port, "r")
	l.Name = name
	l.Address.GetSocketAddress().Address = addr
	ports := []uint32{0}
	if name == virtualOutbound {
		l.UseOriginalDst = wrapperspb.Bool(true)
		ports = []uint32{0, 0, 5000, 5001, 15001}
	} else if rng.Intn(4) == 0 {
		ports = []uint32{0, port, 5002}
	}
	l.FilterChains = nil
	for range 1 + rng.Intn(4) {
		l.FilterChains = append(l.FilterChains, randomChain(rng, ports))
	}
	if rng.Intn(5) != 0 {
		l.ListenerFilters = []*listenerv3.ListenerFilter{inspector()}
	}
	if rng.Intn(3) != 0 {
		l.ListenerFilters = append(l.ListenerFilters, tlsInspectorFilter())
	}
	if rng.Intn(3) == 0 {
		l.DefaultFilterChain = randomChain(rng, []uint32{0})
		l.DefaultFilterChain.FilterChainMatch = nil
	}
	return l
}

// Differential: for random outbound listeners (virtualOutbound, listeners for a port
// and for one address and port; chains by destination port, prefix, server names,
// transport and application protocol; TLS sockets; http_inspector or not; default
// chains), every
// connection on a grid of
// destinations and protocols gets from the stream routes what Envoy's listener and
// filter chain choice gives it.
func TestStreamDifferential(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	addrs := []string{"10.1.2.3", "10.1.9.9", "10.2.0.1", "192.168.7.1", "172.16.0.1"}
	cs := []*clusterv3.Cluster{staticCluster("c1"), staticCluster("c2"), staticCluster("BlackHoleCluster"),
		{Name: "PassthroughCluster", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}}
	for i := range 300 {
		ls := []*listenerv3.Listener{randomListener(rng, virtualOutbound, "0.0.0.0", 15001)}
		for _, l := range []struct {
			name, addr string
			port       uint32
		}{{"0.0.0.0_5000", "0.0.0.0", 5000}, {"10.1.2.3_5000", "10.1.2.3", 5000}, {"10.1.2.3_5001", "10.1.2.3", 5001}, {"0.0.0.0_5002", "0.0.0.0", 5002}} {
			if rng.Intn(3) != 0 {
				ls = append(ls, randomListener(rng, l.name, l.addr, l.port))
			}
		}
		snap := snapshotOf(ls, []*routev3.RouteConfiguration{{Name: "r"}}, cs)
		tr := newTracked(Options{})
		tr.Translate(snap)
		objs := tr.Objects()
		validateAll(t, objs)
		checkStreamRoutes(t, objs)
		for _, a := range addrs {
			for _, p := range []int{5000, 5001, 5002, 5003, 15001} {
				for _, c := range []conn{{http: false}, {http: true},
					{tls: true}, {tls: true, alpn: []string{"h2", "http/1.1"}}, {tls: true, alpn: []string{"istio-http/1.1", "istio", "http/1.1"}},
					{tls: true, alpn: []string{"istio-peer-exchange", "istio"}}} {
					c.listen, c.addr, c.port = "15001", a, p
					want := envoyAnswer(t, envoyChain(ls, c), snap.Clusters)
					got := streamAnswerOf(t, objs, c)
					if got.route == "" {
						got.closed = true
					}
					got.route = ""
					if !got.equal(want) {
						t.Fatalf("case %d, %+v: stream routes give %v, Envoy %v\nlisteners: %v", i, c, got, want, ls)
					}
				}
			}
		}
	}
}

// A chain whose match amesh cannot express (the connection's source, some HTTP
// versions only) closes the connections it would take, with a report entry, rather
// than leaving them to another chain.
func TestStreamUnsupportedMatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		m    *listenerv3.FilterChainMatch
		c    conn
		msg  string
	}{
		{"source prefix", &listenerv3.FilterChainMatch{SourcePrefixRanges: []*corev3.CidrRange{{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)}}},
			conn{listen: "15001", addr: "10.1.1.1", port: 5000}, "source"},
		{"HTTP/1.1 only", &listenerv3.FilterChainMatch{ApplicationProtocols: []string{"http/1.1"}},
			conn{listen: "15001", addr: "10.1.1.1", port: 5000, http: true}, "only some HTTP versions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := httpListener(5000, "r")
			l.ListenerFilters = []*listenerv3.ListenerFilter{inspector()}
			l.FilterChains = append(l.FilterChains, tcpChain("c"))
			l.FilterChains[0].FilterChainMatch = tc.m
			// virtualOutbound passes everything else to "c".
			vo := httpListener(15001, "")
			vo.Name, vo.UseOriginalDst, vo.FilterChains = virtualOutbound, wrapperspb.Bool(true), []*listenerv3.FilterChain{tcpChain("c")}
			objs, rep := translateOne(t, []*listenerv3.Listener{l, vo})
			if got := streamAnswerOf(t, objs, tc.c); !got.closed {
				t.Errorf("%+v: %v, want the connection closed", tc.c, got)
			}
			if !findEntry(rep, "filter_chains.filter_chain_match", report.Unsupported, tc.msg) {
				t.Errorf("not reported: %v", rep)
			}
		})
	}
}
