package translate

import (
	"os"
	"path/filepath"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"

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
