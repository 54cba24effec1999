package translate

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// peerAuthSnapshot is istiod's sotw data with the virtualInbound istiod sends under a
// PeerAuthentication mode (testdata/istiod/peerauth/<mode>), and the inbound cluster of
// the pod's TCP port 19306 it names.
func peerAuthSnapshot(t *testing.T, mode string) *resource.State {
	t.Helper()
	dir := t.TempDir()
	src := istiodDir(t, "sotw")
	for _, sub := range []string{"lds", "rds", "cds", "eds"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(src, sub))); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(istiodDir(t, "peerauth"), mode, "virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lds", "virtualInbound.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := dump.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	snap := res.Snapshot()
	return withListener(snap, snap.Listeners[virtualInbound], inboundCluster("inbound|19306||"))
}

// PeerAuthentication as Envoy applies it through istiod's virtualInbound: under
// PERMISSIVE a port takes plaintext and Istio mTLS alike; under STRICT plaintext gets no
// chain and is closed (for every port, and with a port-level STRICT for that port
// only); Istio mTLS for HTTP is terminated by APISIX's HTTP server (amesh-http "tls",
// the routes with scheme https), for TCP by the stream server's TLS socket (amesh-mtls),
// whose terminated bytes take the place's "mtls" route to the chain's cluster; TLS that is not
// Istio's passes through where a chain passes it (any port, the TCP port), and is closed
// where only Istio mTLS chains are.
func TestInboundPeerAuthentication(t *testing.T) {
	const pod = "10.244.0.7"
	inbound := &upstream.OriginalDstConf{Bind: "127.0.0.6"}
	in := func(port int, http bool, alpn ...string) conn {
		return conn{listen: "15006", addr: pod, port: port, http: http, tls: alpn != nil, alpn: alpn}
	}
	const sleepID = "spiffe://cluster.local/ns/default/sa/sleep"
	terminated := func(port int) conn {
		return conn{listen: "15006", addr: pod, port: port, terminated: true, peer: sleepID}
	}
	// A certificate of the mesh's roots for another trust domain: istiod's chains
	// accept the prefix spiffe://cluster.local/ only.
	foreign := func(port int, peer string) conn {
		return conn{listen: "15006", addr: pod, port: port, terminated: true, peer: peer}
	}
	refused := func(a streamAnswer, route string) streamAnswer { a.route, a.refused = route, true; return a }
	mtlsTCP := func(route string) streamAnswer { return streamAnswer{route: route, mtlsTCP: true} }
	istioHTTP := []string{"istio-http/1.1", "istio", "http/1.1"}
	istioTCP := []string{"istio-peer-exchange", "istio"}
	otherTLS := []string{"h2", "http/1.1"}
	closed := func(route string) streamAnswer { return streamAnswer{route: route, closed: true} }
	const (
		appTLS = "15006-19080-tls-istio_istio-peer-exchange_istio-http_-389c30d783"
		tcpTLS = "15006-19306-tls-istio_istio-peer-exchange_istio-http_-86dee66916"
		anyTLS = "15006-any-tls-istio-http_1.0_istio-http_1.1_istio-h2-61c341f08f"
	)
	mtlsHTTP := func(route string) streamAnswer { return streamAnswer{route: route, http: true, mtls: true} }
	toTCP := streamAnswer{upstream: "inbound|19306||", odst: inbound}
	passthrough := streamAnswer{upstream: "InboundPassthroughCluster", odst: inbound}
	with := func(a streamAnswer, route string) streamAnswer { a.route = route; return a }
	for _, mode := range []struct {
		name  string
		cases []stc
	}{
		{"permissive", []stc{
			{"plaintext HTTP to the HTTP port", in(19080, true), streamAnswer{route: "15006-19080", http: true}},
			{"Istio mTLS to the HTTP port", in(19080, false, istioHTTP...), mtlsHTTP(appTLS)},
			{"other TLS to the HTTP port", in(19080, false, otherTLS...), closed("15006-19080-tls")},
			{"plaintext to the TCP port", in(19306, false), with(toTCP, "15006-19306")},
			{"Istio mTLS to the TCP port", in(19306, false, istioTCP...), mtlsTCP(tcpTLS)},
			{"Istio mTLS to the TCP port, terminated", terminated(19306), with(toTCP, "15006-19306-mtls")},
			{"other TLS to the TCP port", in(19306, false, otherTLS...), with(toTCP, "15006-19306-tls")},
			{"Istio mTLS TCP to another port, terminated", terminated(5432), with(passthrough, "15006-any-mtls")},
			{"Istio mTLS to the TCP port from another trust domain", foreign(19306, "spiffe://evil.example/ns/default/sa/sleep"), refused(toTCP, "15006-19306-mtls")},
			{"Istio mTLS to the TCP port from a look-alike trust domain", foreign(19306, "spiffe://cluster.localhost/ns/a/sa/b"), refused(toTCP, "15006-19306-mtls")},
			{"Istio mTLS to the TCP port, a trusted URI SAN second", foreign(19306, "spiffe://evil.example/x,"+sleepID), with(toTCP, "15006-19306-mtls")},
			{"Istio mTLS to the TCP port without URI SANs", foreign(19306, ""), refused(toTCP, "15006-19306-mtls")},
			{"Istio mTLS TCP to another port from another trust domain", foreign(5432, "spiffe://evil.example/ns/a/sa/b"), refused(passthrough, "15006-any-mtls")},
			{"plaintext to another port", in(5432, false), with(passthrough, "15006-any")},
			{"plaintext HTTP to another port", in(8080, true), streamAnswer{route: "15006-any-http", http: true}},
			{"Istio mTLS HTTP to another port", in(8080, false, istioHTTP...), mtlsHTTP(anyTLS)},
			{"other TLS to another port", in(8443, false, otherTLS...), with(passthrough, "15006-any-tls")},
		}},
		{"strict", []stc{
			{"plaintext HTTP to the HTTP port", in(19080, true), closed("15006-19080")},
			{"plaintext other bytes to the HTTP port", in(19080, false), closed("15006-19080")},
			{"Istio mTLS to the HTTP port", in(19080, false, istioHTTP...), mtlsHTTP("15006-19080-tls")},
			{"other TLS to the HTTP port (terminated, a client certificate required)", in(19080, false, otherTLS...), mtlsHTTP("15006-19080-tls")},
			{"plaintext to the TCP port", in(19306, false), closed("15006-19306")},
			{"Istio mTLS to the TCP port", in(19306, false, istioTCP...), mtlsTCP("15006-19306-tls")},
			{"Istio mTLS to the TCP port, terminated", terminated(19306), with(toTCP, "15006-19306-mtls")},
			{"Istio mTLS to the TCP port from another trust domain", foreign(19306, "spiffe://evil.example/ns/default/sa/sleep"), refused(toTCP, "15006-19306-mtls")},
			{"Istio mTLS TCP to another port", in(5432, false, istioTCP...), mtlsTCP("15006-any-tls")},
			{"Istio mTLS TCP to another port, terminated", terminated(5432), with(passthrough, "15006-any-mtls")},
			{"plaintext HTTP to another port", in(8080, true), streamAnswer{}},
			{"plaintext to another port", in(5432, false), streamAnswer{}},
			{"Istio mTLS HTTP to another port", in(8080, false, istioHTTP...), mtlsHTTP(anyTLS)},
		}},
		{"port-strict", []stc{
			{"plaintext HTTP to the HTTP port", in(19080, true), closed("15006-19080")},
			{"Istio mTLS to the HTTP port", in(19080, false, istioHTTP...), mtlsHTTP("15006-19080-tls")},
			{"plaintext to the TCP port", in(19306, false), with(toTCP, "15006-19306")},
			{"plaintext HTTP to another port", in(8080, true), streamAnswer{route: "15006-any-http", http: true}},
			{"Istio mTLS HTTP to another port", in(8080, false, istioHTTP...), mtlsHTTP(anyTLS)},
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tr := newTracked(Options{})
			rep := tr.Translate(peerAuthSnapshot(t, mode.name)).Report
			objs := tr.Objects()
			validateAll(t, objs)
			checkStreams(t, objs, mode.cases)
			if findEntry(rep, "filter_chains.transport_socket", report.Unsupported) {
				t.Errorf("the report says that istiod's Istio mTLS is not terminated: %v", rep)
			}
			// The HTTP routes of the TLS chains are those HTTP requests on the TLS
			// socket get, and plaintext ones never do.
			for _, c := range []struct {
				r    request
				want string
			}{
				{request{host: "productpage", path: "/", port: "19080", listen: "15006", tls: true}, "in-19080-tls."},
				{request{host: "x", path: "/", port: "8080", listen: "15006", tls: true}, "in-any-tls."},
			} {
				c.r.method = "GET"
				if got := answerOf(t, objs, c.r); got.route == "" || got.route[:len(c.want)] != c.want {
					t.Errorf("%+v: route %q, want %s...", c.r, got.route, c.want)
				}
			}
			// istiod's chains accept client certificates of its trust domain only
			// (match_subject_alt_names prefix spiffe://cluster.local/).
			for _, peer := range []string{"spiffe://evil.example/ns/default/sa/reviews", "spiffe://cluster.localhost/ns/a/sa/b",
				"urn:spiffe://cluster.local/ns/a/sa/b", ""} {
				r := request{host: "productpage", path: "/", port: "19080", listen: "15006", tls: true, method: "GET", peer: peer}
				if peer == "" {
					r.peer = "x,spiffe://other/cluster.local/"
				}
				if got := answerOf(t, objs, r); got.route != "" {
					t.Errorf("mTLS request from %q: route %q, want none", r.peer, got.route)
				}
			}
			two := request{host: "productpage", path: "/", port: "19080", listen: "15006", tls: true, method: "GET",
				peer: "spiffe://evil.example/x,spiffe://cluster.local/ns/default/sa/reviews"}
			if got := answerOf(t, objs, two); got.route == "" {
				t.Errorf("mTLS request whose second URI SAN is of the trust domain: no route")
			}
			plain := request{host: "productpage", path: "/", port: "19080", listen: "15006", method: "GET"}
			if got := answerOf(t, objs, plain); (mode.name == "permissive") != (got.route != "") {
				t.Errorf("plaintext request to 19080: route %q", got.route)
			}
		})
	}
}

// The subject alt name matchers of a chain's validation context become one condition on
// the TLS peer's URI SANs, encoded as nginx gives them.
func TestSANVars(t *testing.T) {
	m := func(f func(*matcherv3.StringMatcher)) *matcherv3.StringMatcher {
		x := &matcherv3.StringMatcher{}
		f(x)
		return x
	}
	vars := sanVars([]*matcherv3.StringMatcher{
		m(func(x *matcherv3.StringMatcher) {
			x.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: "spiffe://a/b,c"}
		}),
		m(func(x *matcherv3.StringMatcher) {
			x.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: "/SA/X"}
			x.IgnoreCase = true
		}),
		m(func(x *matcherv3.StringMatcher) {
			x.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: "ns/y/"}
		}),
	})
	if len(vars) != 1 || vars[0][0] != "amesh_peer_uri_sans" || vars[0][1] != "~~" {
		t.Fatalf("vars %v", vars)
	}
	re := pcreToGo(t, vars[0][2].(string))
	for sans, want := range map[string]bool{
		"spiffe://a/b%2Cc":           true,
		"x,spiffe://a/b%2Cc":         true,
		"spiffe://a/b%2Cc/d":         false,
		"spiffe://a/b,c":             false,
		"spiffe://t/ns/z/sa/x":       true,
		"spiffe://t/ns/z/sa/x/more":  false,
		"spiffe://t/ns/y/sa/z":       true,
		"spiffe://t/ns/z/sa/z,ns/y/": true,
		"spiffe://t/ns/z/sa/z,other": false,
		"":                           false,
	} {
		if re.MatchString(sans) != want {
			t.Errorf("SANs %q: match %v, want %v", sans, !want, want)
		}
	}
	if sanVars(nil) != nil {
		t.Errorf("no matchers: a condition")
	}
}

// Istio mTLS in front of TCP on a listener other than virtualInbound (istiod sends none)
// has no TLS socket to be terminated on: its connections are closed and reported, never
// handed to a socket that is not there.
func TestMTLSOutsideInboundClosed(t *testing.T) {
	snap := peerAuthSnapshot(t, "strict")
	var tcpTLS *listenerv3.FilterChain
	for _, fc := range snap.Listeners[virtualInbound].GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() == 19306 && fc.GetTransportSocket() != nil {
			tcpTLS = proto.Clone(fc).(*listenerv3.FilterChain)
		}
	}
	if tcpTLS == nil {
		t.Fatal("istiod's STRICT virtualInbound has no mTLS chain for 19306")
	}
	tcpTLS.FilterChainMatch.DestinationPort = nil
	l := proto.Clone(snap.Listeners[virtualInbound]).(*listenerv3.Listener)
	l.Name, l.FilterChains, l.UseOriginalDst = "0.0.0.0_5000", []*listenerv3.FilterChain{tcpTLS}, nil
	l.Address.GetSocketAddress().PortSpecifier = &corev3.SocketAddress_PortValue{PortValue: 5000}
	tr := newTracked(Options{})
	rep := tr.Translate(withListener(snap, l)).Report
	objs := tr.Objects()
	validateAll(t, objs)
	c := conn{listen: "15001", addr: "10.0.0.9", port: 5000, tls: true, alpn: []string{"istio-peer-exchange", "istio"}}
	if got := streamAnswerOf(t, objs, c); !got.closed || got.mtlsTCP {
		t.Errorf("outbound Istio mTLS to a TCP chain that terminates it: %v, want closed", got)
	}
	if !findEntry(rep, "filter_chains.transport_socket", report.Unsupported, "other than the inbound capture listener") {
		t.Errorf("not reported: %v", rep)
	}
}

// withChainSANs returns snap with the client certificate matchers of virtualInbound's
// Istio mTLS chain for port replaced by sans (none: any SAN).
func withChainSANs(t *testing.T, snap *resource.State, port uint32, sans ...*matcherv3.StringMatcher) *resource.State {
	t.Helper()
	l := proto.Clone(snap.Listeners[virtualInbound]).(*listenerv3.Listener)
	found := false
	for _, fc := range l.GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != port || fc.GetTransportSocket() == nil {
			continue
		}
		ctx := &tlsv3.DownstreamTlsContext{}
		if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
			t.Fatal(err)
		}
		//lint:ignore SA1019 istiod sets the deprecated field
		ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().MatchSubjectAltNames = sans
		a, err := anypb.New(ctx)
		if err != nil {
			t.Fatal(err)
		}
		fc.GetTransportSocket().ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
		found = true
	}
	if !found {
		t.Fatalf("virtualInbound has no TLS chain for port %d", port)
	}
	return withListener(snap, l)
}

// peerHandshakeOf returns the handshake's matchers the output holds (nil: no object).
func peerHandshakeOf(t *testing.T, objs map[string][]byte) []upstream.SANMatcher {
	t.Helper()
	b, ok := objs["/plugin_metadata/amesh-mtls-peer"]
	if !ok {
		return nil
	}
	var m peerHandshakeMeta
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m.ID != "amesh-mtls-peer" || len(m.HandshakeURISANs) == 0 {
		t.Fatalf("plugin metadata %s", b)
	}
	return m.HandshakeURISANs
}

// The client certificate check in the TLS sockets' handshake takes the union of the URI
// SAN matchers of every chain that APISIX terminates with istio-mtls-server (each once),
// written as amesh-mtls-peer's plugin metadata; a chain that accepts any SAN makes the
// union any, and the object goes. Each chain's own matchers stay on its routes.
func TestPeerHandshakeUnion(t *testing.T) {
	trust := upstream.SANMatcher{Match: "prefix", Value: "spiffe://cluster.local/"}
	partner := upstream.SANMatcher{Match: "exact", Value: "spiffe://partner.example/ns/a/sa/b", IgnoreCase: true}
	prefix := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: trust.Value}}
	exact := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: partner.Value}, IgnoreCase: true}

	for _, mode := range []string{"permissive", "strict"} {
		t.Run(mode, func(t *testing.T) {
			base := peerAuthSnapshot(t, mode)
			tr := newTracked(Options{})
			tr.Translate(base)
			validateAll(t, tr.Objects())
			if got := peerHandshakeOf(t, tr.Objects()); !slices.Equal(got, []upstream.SANMatcher{trust}) {
				t.Errorf("istiod's chains: %+v, want the trust domain's prefix once", got)
			}

			// The TCP port's chain also accepts a partner's identity: the union has both,
			// the trust domain's prefix still once.
			tr.Translate(withChainSANs(t, base, 19306, exact, prefix))
			objs := tr.Objects()
			validateAll(t, objs)
			got := peerHandshakeOf(t, objs)
			if len(got) != 2 || !slices.Contains(got, trust) || !slices.Contains(got, partner) {
				t.Errorf("a chain with another matcher: %+v, want %+v and %+v", got, trust, partner)
			}
			// The HTTP port's chain keeps its own matchers after the handshake.
			r := request{host: "productpage", path: "/", port: "19080", listen: "15006", tls: true, method: "GET",
				peer: "spiffe://partner.example/ns/a/sa/b"}
			if a := answerOf(t, objs, r); a.route != "" {
				t.Errorf("the partner's identity to the HTTP port, whose chain does not accept it: route %q", a.route)
			}

			// A chain without matchers accepts any SAN: the handshake checks none.
			tr.Translate(withChainSANs(t, base, 19306))
			if _, ok := tr.Objects()["/plugin_metadata/amesh-mtls-peer"]; ok {
				t.Errorf("a chain accepting any SAN: the handshake still checks SANs")
			}

			// Back to istiod's chains.
			tr.Translate(base)
			if got := peerHandshakeOf(t, tr.Objects()); !slices.Equal(got, []upstream.SANMatcher{trust}) {
				t.Errorf("istiod's chains again: %+v", got)
			}
		})
	}

	// No chain terminates Istio mTLS: no virtualInbound.
	snap := peerAuthSnapshot(t, "permissive")
	out := *snap
	out.Listeners = maps.Clone(snap.Listeners)
	delete(out.Listeners, virtualInbound)
	tr := newTracked(Options{})
	tr.Translate(&out)
	if _, ok := tr.Objects()["/plugin_metadata/amesh-mtls-peer"]; ok {
		t.Errorf("no chain terminates Istio mTLS: the handshake checks SANs")
	}
}

// The plugin metadata's schema in lua/amesh/peer_handshake.lua (which checks the object
// before it uses it) is the one the translation's output is validated against.
func TestPeerHandshakeSchemaMatchesLua(t *testing.T) {
	lua, err := os.ReadFile(filepath.Join("..", "..", "lua", "amesh", "peer_handshake.lua"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?s)\[==\[(.*?)\]==\]`).FindSubmatch(lua)
	if m == nil {
		t.Fatal("no [==[ schema ]==] in lua/amesh/peer_handshake.lua")
	}
	var inLua, inGo map[string]any
	if err := json.Unmarshal(m[1], &inLua); err != nil {
		t.Fatal(err)
	}
	embedded, err := os.ReadFile(filepath.Join("..", "apisix", "schema", "schemas", "plugin_metadata", streamPeerPlugin+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(embedded, &inGo); err != nil {
		t.Fatal(err)
	}
	delete(inGo, "$comment")
	delete(inGo, "$schema")
	a, _ := json.Marshal(inLua)
	b, _ := json.Marshal(inGo)
	if string(a) != string(b) {
		t.Errorf("the schemas differ:\nlua: %s\ngo:  %s", a, b)
	}
}
