package install_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/netns"
)

// seen is what an echo server saw of a request.
type seen struct {
	Server string `json:"server"` // which server answered
	Remote string `json:"remote"` // the connection's source address
	XFF    string `json:"xff"`    // X-Forwarded-For, which APISIX sets and a direct client does not
}

// echo serves, on addr in ns, a JSON description of each request (seen); it returns the
// number of requests it answered.
func echo(t *testing.T, ns *netns.NS, addr string) *atomic.Int64 {
	t.Helper()
	h, n := echoHandler(addr)
	serveIn(t, ns, addr, h)
	return n
}

// echoHandler is echo's handler for a server on addr, and its count of requests.
func echoHandler(addr string) (http.Handler, *atomic.Int64) {
	var n atomic.Int64
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		_ = json.NewEncoder(w).Encode(seen{Server: addr, Remote: host, XFF: r.Header.Get("X-Forwarded-For")})
	}), &n
}

// request sends GET / with Host host from ns to addr, on a connection of its own that it
// does not ask to close (APISIX would ask its upstream to close too, on routes that allow
// websockets), and decodes the echo server's answer.
func request(ns *netns.NS, addr, host string) (int, seen, string, error) {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) { return ns.Dial(ctx, network, a) }}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequest("GET", "http://"+addr+"/", nil)
	if err != nil {
		return 0, seen{}, "", err
	}
	req.Host = host
	resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: tr}).Do(req)
	if err != nil {
		return 0, seen{}, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	var s seen
	if err == nil && resp.StatusCode == http.StatusOK {
		err = json.Unmarshal(b, &s)
	}
	return resp.StatusCode, s, string(b), err
}

// serveIstiod serves istiod's own configuration (testdata/istiod/sotw: the sidecar of
// productpage, whose application port is 19080), with the resources of replace (by name:
// listener, route configuration or cluster of a load assignment) in place of istiod's.
func serveIstiod(xds *xdstest.Server, res *dump.Resources, replace map[string]proto.Message) {
	var ls, rcs, cs, es []proto.Message
	pick := func(name string, m proto.Message) proto.Message {
		if r := replace[name]; r != nil {
			return r
		}
		return m
	}
	for _, l := range res.Listeners {
		ls = append(ls, pick(l.GetName(), l))
	}
	for _, rc := range res.RouteConfigs {
		rcs = append(rcs, pick(rc.GetName(), rc))
	}
	for _, c := range res.Clusters {
		cs = append(cs, c)
	}
	for _, e := range res.Endpoints {
		es = append(es, pick(e.GetClusterName(), e))
	}
	xds.Set(resource.ClusterType, cs...)
	xds.Set(resource.EndpointType, es...)
	xds.Set(resource.ListenerType, ls...)
	xds.Set(resource.RouteConfigType, rcs...)
}

// withInboundTCP adds to istiod's configuration what it sends for a TCP port of the
// application: a plaintext tcp_proxy chain for the port in virtualInbound, to an
// ORIGINAL_DST cluster inbound|<port>|| bound to 127.0.0.6. The chain is a clone of
// virtualInbound's own plaintext tcp_proxy chain (to InboundPassthroughCluster), the
// cluster one of inbound|19080||, so that only the port and the cluster's name differ.
func withInboundTCP(t *testing.T, res *dump.Resources, port uint32) {
	t.Helper()
	name := fmt.Sprintf("inbound|%d||", port)
	var chain *listenerv3.FilterChain
	for i, l := range res.Listeners {
		if l.GetName() != "virtualInbound" {
			continue
		}
		for _, fc := range l.GetFilterChains() {
			m := fc.GetFilterChainMatch()
			if m.GetDestinationPort() == nil && m.GetTransportProtocol() == "raw_buffer" && len(m.GetApplicationProtocols()) == 0 {
				chain = proto.Clone(fc).(*listenerv3.FilterChain)
			}
		}
		if chain == nil {
			t.Fatal("virtualInbound has no plaintext catch-all chain")
		}
		chain.Name = fmt.Sprintf("0.0.0.0_%d", port)
		chain.FilterChainMatch = &listenerv3.FilterChainMatch{DestinationPort: wrapperspb.UInt32(port), TransportProtocol: "raw_buffer"}
		for _, f := range chain.GetFilters() {
			var tp tcpproxyv3.TcpProxy
			if f.GetTypedConfig().UnmarshalTo(&tp) != nil {
				continue
			}
			tp.StatPrefix, tp.ClusterSpecifier = name, &tcpproxyv3.TcpProxy_Cluster{Cluster: name}
			a, err := anypb.New(&tp)
			if err != nil {
				t.Fatal(err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
		}
		l = proto.Clone(l).(*listenerv3.Listener)
		l.FilterChains = append(l.FilterChains, chain)
		res.Listeners[i] = l
	}
	withInboundCluster(t, res, port)
}

// withInboundCluster adds istiod's inbound|<port>|| cluster (a clone of inbound|19080||
// under the other name).
func withInboundCluster(t *testing.T, res *dump.Resources, port uint32) {
	t.Helper()
	name := fmt.Sprintf("inbound|%d||", port)
	for _, c := range res.Clusters {
		if c.GetName() == "inbound|19080||" {
			c = proto.Clone(c).(*clusterv3.Cluster)
			c.Name, c.AltStatName = name, name+";"
			res.Clusters = append(res.Clusters, c)
			return
		}
	}
	t.Fatal("istiod's configuration has no cluster inbound|19080||")
}

// TestSidecarDelivery: the sidecar's APISIX (startSidecar) with istiod's own configuration
// for productpage delivers captured traffic as Envoy does.
//
// Inbound: a client's request to the pod's application port 19080 is captured to 15006 and
// delivered to the application, which listens on the pod IP only, from 127.0.0.6 (Istio's
// rules do not capture that connection again); a port no inbound chain names goes through
// InboundPassthroughCluster the same way, HTTP and not; an application listening on
// 127.0.0.1 only is not reached from outside the pod; a connection to 15006 itself is
// closed (istiod's blackhole chain: no loop); over IPv6, which istiod's source address
// 127.0.0.6 cannot reach, the request is refused. Non-HTTP connections to a TCP port of
// the application (a tcp_proxy chain to inbound|19306||) and to a port no chain names
// reach it from 127.0.0.6, a server-first one too (the protocol detection gives up).
// Outbound (ALLOW_ANY): the application's connections to an address outside the mesh pass
// through to that address: HTTP and not to a port no listener has (IPv4 and IPv6), TLS
// with the server's own certificate, and non-HTTP bytes to port 9080, which has an HTTP
// listener (its default chain: PassthroughCluster); an HTTP request on 9080 with a host
// no virtual host has goes through APISIX's HTTP routes (allow_any) to that address. The
// TCP service 240.240.0.3:3306 (istiod's tcp_proxy listener) reaches its endpoint,
// server-first. The application's call to its own service takes both hops (captured
// again to 15006, then delivered from 127.0.0.6) between inbound requests, which take
// one: APISIX's idle connections from 127.0.0.6 and from the pod's address to the
// application's port are pooled apart. REGISTRY_ONLY (istiod's shapes, see
// xdstest.RegistryOnlyListener): an HTTP request for an unknown host on 9080 gets 502
// (istiod's block_all); connections to ports no listener has, and non-HTTP ones to 9080,
// are closed (BlackHoleCluster); nothing reaches the outside; the TCP service and inbound
// traffic are unchanged.
func TestSidecarDelivery(t *testing.T) {
	const productpage = "outbound|9080||productpage.default.svc.cluster.local"
	const mysql = "outbound|3306|v1|mysqldb.default.svc.cluster.local"
	s := startSidecar(t)
	res, err := dump.LoadDir(filepath.Join(repoRoot, "testdata", "istiod", "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	withInboundTCP(t, res, 19306)
	// The application: its mesh port on the pod IP only, another port, a port on loopback
	// only, its TCP port, and two ports no chain names that are not HTTP, one server-first.
	echo(t, s.pod, podIP+":19080")
	app6 := echo(t, s.pod, net.JoinHostPort(podIP6, "19080"))
	echo(t, s.pod, podIP+":8081")
	local := echo(t, s.pod, "127.0.0.1:8082")
	tcpServe(t, s.pod, podIP+":19306", false)
	tcpServe(t, s.pod, podIP+":8084", false)
	tcpServe(t, s.pod, podIP+":8085", true)
	// Outside the mesh, beyond the pod's network: HTTP servers (on 9080 also the line
	// protocol), a TCP server, a TLS server and the endpoint of the TCP service mysqldb,
	// which greets first, as MySQL does.
	external8080 := echo(t, s.client, peerIP+":8080")
	h9080, external9080 := echoHandler(peerIP + ":9080")
	pings9080 := serveMixed(t, s.client, peerIP+":9080", h9080)
	echo(t, s.client, net.JoinHostPort(peerIP6, "8080"))
	external7000 := tcpServe(t, s.client, peerIP+":7000", false)
	roots, external8443 := tlsServe(t, s.client, peerIP+":8443", peerIP)
	tcpServe(t, s.client, peerIP+":13306", true)

	// productpage's endpoint is this pod: the application calls its own service;
	// mysqldb's is the server above.
	self := map[string]proto.Message{
		productpage: xdstest.Endpoints(productpage, podIP+":19080"),
		mysql:       xdstest.Endpoints(mysql, peerIP+":13306"),
	}
	xds := s.serve(t)
	serveIstiod(xds, res, self)
	s.waitReady(t)

	in := func(port string) (int, seen, string, error) {
		return request(s.client, net.JoinHostPort(podIP, port), "productpage.default.svc.cluster.local")
	}
	out := func(port string) (int, seen, string, error) {
		return request(s.pod, net.JoinHostPort(peerIP, port), "example.com")
	}

	// Inbound.
	for _, port := range []string{"19080", "8081"} {
		code, got, body, err := in(port)
		if err != nil || code != http.StatusOK || got.Server != podIP+":"+port || got.Remote != "127.0.0.6" || got.XFF != peerIP {
			t.Errorf("inbound to the pod's %s: %d %q %v; want the application's answer to a connection from 127.0.0.6 for the client %s", port, code, body, err, peerIP)
		}
	}
	if code, _, body, err := in("8082"); err != nil || code != http.StatusBadGateway || local.Load() != 0 {
		t.Errorf("inbound to port 8082, where the application listens on 127.0.0.1 only: %d %q %v, %d requests reached it; want APISIX's 502 (the pod IP refuses), as Envoy", code, body, err, local.Load())
	}
	if ok, got := closedWithoutAnswer(s.client, net.JoinHostPort(podIP, "15006"), true); !ok {
		t.Errorf("inbound to 15006 itself: %s; want the connection closed (istiod's virtualInbound-blackhole: passing it on would loop)", got)
	}
	// istiod's clusters for this single-stack pod bind 127.0.0.6 only: an IPv6 connection
	// cannot be delivered from there (nor, Istio's rules say, from any other address
	// without being captured again). Envoy's connection fails; APISIX refuses it.
	if code, _, body, err := request(s.client, net.JoinHostPort(podIP6, "19080"), "productpage"); err != nil || code != http.StatusBadGateway || app6.Load() != 0 {
		t.Errorf("inbound over IPv6 with only an IPv4 source address: %d %q %v, %d requests reached the application; want 502", code, body, err, app6.Load())
	}
	// Not HTTP: to the application's TCP port and to a port no chain names.
	for _, port := range []string{"19306", "8084"} {
		addr := net.JoinHostPort(podIP, port)
		if _, pong, err := ping(s.client, addr, false); err != nil || pong != "PONG "+addr+" 127.0.0.6" {
			t.Errorf("inbound TCP to the pod's %s: %q %v; want the application's answer to a connection from 127.0.0.6", port, pong, err)
		}
	}
	// Server-first to a port no chain names, whose chains differ in protocol: nothing
	// comes from the client to detect, and the connection goes on without a protocol.
	start := time.Now()
	if hello, pong, err := ping(s.client, net.JoinHostPort(podIP, "8085"), true); err != nil || hello != "HELLO "+podIP+":8085" || pong != "PONG "+podIP+":8085 127.0.0.6" {
		t.Errorf("inbound server-first TCP to the pod's 8085: %q %q %v; want the application's greeting and answer, from 127.0.0.6", hello, pong, err)
	} else {
		t.Logf("a server-first application's greeting came after %v (protocol detection)", time.Since(start).Round(time.Millisecond))
	}

	// Outbound, ALLOW_ANY. A port no listener has: virtualOutbound's catch-all passes the
	// connection through, HTTP or not (no X-Forwarded-For: APISIX does not look at it).
	code, got, body, err := out("8080")
	if err != nil || code != http.StatusOK || got.Server != peerIP+":8080" || got.Remote != podIP || got.XFF != "" {
		t.Errorf("outbound HTTP to %s:8080 (not in the mesh): %d %q %v; want the external server's answer to a connection from %s, passed through", peerIP, code, body, err, podIP)
	}
	ext6 := net.JoinHostPort(peerIP6, "8080")
	if code, got, body, err := request(s.pod, ext6, "example.com"); err != nil || code != http.StatusOK || got.Server != ext6 || got.Remote != podIP6 || got.XFF != "" {
		t.Errorf("outbound HTTP over IPv6 to %s: %d %q %v; want the external server's answer to a connection from %s, passed through", ext6, code, body, err, podIP6)
	}
	ext7000 := net.JoinHostPort(peerIP, "7000")
	if _, pong, err := ping(s.pod, ext7000, false); err != nil || pong != "PONG "+ext7000+" "+podIP {
		t.Errorf("outbound TCP to %s: %q %v; want the external server's answer to a connection from %s", ext7000, pong, err, podIP)
	}
	ext8443 := net.JoinHostPort(peerIP, "8443")
	if got, err := requestTLS(s.pod, ext8443, roots); err != nil || got.Server != ext8443 || got.Remote != podIP {
		t.Errorf("outbound TLS to %s: %+v %v; want a handshake with the external server and its answer to a connection from %s", ext8443, got, err, podIP)
	}
	// Port 9080 has an HTTP listener: HTTP goes through APISIX's HTTP routes (an unknown
	// host: istiod's allow_any, to the original destination, with X-Forwarded-For), other
	// bytes through the listener's default chain (PassthroughCluster).
	code, got, body, err = out("9080")
	if err != nil || code != http.StatusOK || got.Server != peerIP+":9080" || got.XFF != podIP {
		t.Errorf("outbound HTTP to %s:9080 (not in the mesh): %d %q %v; want the external server's answer through APISIX (X-Forwarded-For %s)", peerIP, code, body, err, podIP)
	}
	ext9080 := net.JoinHostPort(peerIP, "9080")
	if _, pong, err := ping(s.pod, ext9080, false); err != nil || pong != "PONG "+ext9080+" "+podIP {
		t.Errorf("outbound TCP to %s, a port with an HTTP listener: %q %v; want the external server's answer to a connection from %s", ext9080, pong, err, podIP)
	}
	// The TCP service: istiod's listener 240.240.0.3_3306 sends it to mysqldb's endpoint,
	// which speaks first.
	if hello, pong, err := ping(s.pod, "240.240.0.3:3306", true); err != nil || hello != "HELLO "+peerIP+":13306" || pong != "PONG "+peerIP+":13306 "+podIP {
		t.Errorf("the TCP service 240.240.0.3:3306: %q %q %v; want the greeting and answer of its endpoint %s:13306", hello, pong, err, peerIP)
	}

	// The application calls its own service: captured to 15001, sent to the pod's address
	// from the pod's own (not 127.0.0.6), captured again to 15006 and delivered from
	// 127.0.0.6, each hop adding to X-Forwarded-For. Inbound requests come between: the
	// connections of either kind must not carry the other's requests, which would then
	// skip the inbound hop or take it twice (APISIX keeps idle upstream connections).
	for i := range 4 {
		code, got, body, err := request(s.pod, net.JoinHostPort(peerIP, "9080"), "productpage.default.svc.cluster.local")
		if want := podIP + ", " + podIP; err != nil || code != http.StatusOK || got.Server != podIP+":19080" || got.Remote != "127.0.0.6" || got.XFF != want {
			t.Errorf("call %d of the application to its own service: %d %q %v; want the application's answer to 127.0.0.6 after two hops (X-Forwarded-For %q)", i, code, body, err, want)
		}
		code, got, body, err = in("19080")
		if err != nil || code != http.StatusOK || got.Remote != "127.0.0.6" || got.XFF != peerIP {
			t.Errorf("inbound request %d: %d %q %v; want the application's answer to 127.0.0.6 after one hop (X-Forwarded-For %q)", i, code, body, err, peerIP)
		}
	}
	if t.Failed() {
		return
	}

	// REGISTRY_ONLY.
	for _, l := range res.Listeners {
		self[l.GetName()] = xdstest.RegistryOnlyListener(l)
	}
	for _, rc := range res.RouteConfigs {
		self[rc.GetName()] = xdstest.RegistryOnlyRoutes(rc)
	}
	serveIstiod(xds, res, self)
	waitFor(t, "a connection to a port no listener has to be closed (BlackHoleCluster)", 30*time.Second, func() (bool, string) {
		return closedWithoutAnswer(s.pod, net.JoinHostPort(peerIP, "8080"), true)
	})
	if code, _, body, err := out("9080"); err != nil || code != http.StatusBadGateway {
		t.Errorf("REGISTRY_ONLY, outbound to port 9080 with an unknown host: %d %q %v; want istiod's block_all 502", code, body, err)
	}
	// Connections that reached an external server after the change went through a route
	// not yet replaced (the wait above); none may reach one now.
	before := []int64{external8080.Load(), external9080.Load(), pings9080.Load(), external7000.Load(), external8443.Load()}
	for _, addr := range []string{ext7000, ext9080, ext8443} {
		if ok, got := closedWithoutAnswer(s.pod, addr, false); !ok {
			t.Errorf("REGISTRY_ONLY, outbound TCP to %s: %s; want the connection closed", addr, got)
		}
	}
	if _, err := requestTLS(s.pod, ext8443, roots); err == nil {
		t.Errorf("REGISTRY_ONLY, outbound TLS to %s: a handshake; want the connection closed", ext8443)
	}
	for range 3 {
		_, _, _, _ = out("8080")
		_, _, _, _ = out("9080")
	}
	if after := []int64{external8080.Load(), external9080.Load(), pings9080.Load(), external7000.Load(), external8443.Load()}; !slices.Equal(before, after) {
		t.Errorf("REGISTRY_ONLY: connections reached the external servers (counts %v, then %v)", before, after)
	}
	// The TCP service and inbound are unchanged.
	if _, pong, err := ping(s.pod, "240.240.0.3:3306", true); err != nil || pong != "PONG "+peerIP+":13306 "+podIP {
		t.Errorf("REGISTRY_ONLY, the TCP service 240.240.0.3:3306: %q %v", pong, err)
	}
	if code, got, body, err := in("19080"); err != nil || code != http.StatusOK || got.Remote != "127.0.0.6" {
		t.Errorf("REGISTRY_ONLY, inbound to 19080: %d %q %v", code, body, err)
	}
	if _, pong, err := ping(s.client, net.JoinHostPort(podIP, "19306"), false); err != nil || !strings.HasSuffix(pong, " 127.0.0.6") {
		t.Errorf("REGISTRY_ONLY, inbound TCP to 19306: %q %v", pong, err)
	}
	// The plugin logs why it refuses a request: the IPv6 one above, and nothing else.
	refused := "amesh-original-dst: no source address for destination " + podIP6
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		if strings.Contains(line, "amesh-original-dst") && strings.Contains(line, "[error]") && !strings.Contains(line, refused) {
			t.Errorf("error log: %s", line)
		}
	}
	if !strings.Contains(s.stderr.String(), refused) {
		t.Errorf("the error log does not say why the IPv6 request was refused (%q)", refused)
	}
	s.errorLogClean(t)
}
