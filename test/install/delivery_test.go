package install_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

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
	var n atomic.Int64
	serveIn(t, ns, addr, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		_ = json.NewEncoder(w).Encode(seen{Server: addr, Remote: host, XFF: r.Header.Get("X-Forwarded-For")})
	}))
	return &n
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

// TestSidecarDelivery: the sidecar's APISIX (startSidecar) with istiod's own configuration
// for productpage delivers captured traffic as Envoy does.
//
// Inbound: a client's request to the pod's application port 19080 is captured to 15006 and
// delivered to the application, which listens on the pod IP only, from 127.0.0.6 (Istio's
// rules do not capture that connection again); a port no inbound chain names goes through
// InboundPassthroughCluster the same way; an application listening on 127.0.0.1 only is not
// reached from outside the pod; a connection to 15006 itself gets no route (no loop); over
// IPv6, which istiod's source address 127.0.0.6 cannot reach, the request is refused.
// Outbound (ALLOW_ANY): the application's request to an address outside the mesh, on a port
// no listener has (IPv4 and IPv6), and on port 9080 with a host no virtual host has, is
// captured to 15001 and passed through to that address. The application's call to its own service takes both
// hops (captured again to 15006, then delivered from 127.0.0.6) between inbound requests,
// which take one: APISIX's idle connections from 127.0.0.6 and from the pod's address to
// the application's port are pooled apart. REGISTRY_ONLY (istiod's shapes, see
// xdstest.RegistryOnlyListener): the same requests get 502 (istiod's block_all) and 503
// (BlackHoleCluster) and reach nothing.
func TestSidecarDelivery(t *testing.T) {
	const productpage = "outbound|9080||productpage.default.svc.cluster.local"
	s := startSidecar(t)
	res, err := dump.LoadDir(filepath.Join(repoRoot, "testdata", "istiod", "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	// The application: its mesh port on the pod IP only, another port, and a port on
	// loopback only.
	echo(t, s.pod, podIP+":19080")
	app6 := echo(t, s.pod, net.JoinHostPort(podIP6, "19080"))
	echo(t, s.pod, podIP+":8081")
	local := echo(t, s.pod, "127.0.0.1:8082")
	// Outside the mesh, beyond the pod's network.
	external8080 := echo(t, s.client, peerIP+":8080")
	external9080 := echo(t, s.client, peerIP+":9080")
	echo(t, s.client, net.JoinHostPort(peerIP6, "8080"))

	// productpage's endpoint is this pod: the application calls its own service.
	self := map[string]proto.Message{productpage: xdstest.Endpoints(productpage, podIP+":19080")}
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
	if code, _, body, err := in("15006"); err != nil || code != http.StatusNotFound {
		t.Errorf("inbound to 15006 itself: %d %q %v; want APISIX's 404 (no route: passing it through would loop)", code, body, err)
	}
	// istiod's clusters for this single-stack pod bind 127.0.0.6 only: an IPv6 connection
	// cannot be delivered from there (nor, Istio's rules say, from any other address
	// without being captured again). Envoy's connection fails; APISIX refuses it.
	if code, _, body, err := request(s.client, net.JoinHostPort(podIP6, "19080"), "productpage"); err != nil || code != http.StatusBadGateway || app6.Load() != 0 {
		t.Errorf("inbound over IPv6 with only an IPv4 source address: %d %q %v, %d requests reached the application; want 502", code, body, err, app6.Load())
	}

	// Outbound, ALLOW_ANY.
	for _, port := range []string{"8080", "9080"} {
		code, got, body, err := out(port)
		if err != nil || code != http.StatusOK || got.Server != peerIP+":"+port || got.XFF != podIP {
			t.Errorf("outbound to %s:%s (not in the mesh): %d %q %v; want the external server's answer through APISIX (X-Forwarded-For %s)", peerIP, port, code, body, err, podIP)
		}
	}
	ext6 := net.JoinHostPort(peerIP6, "8080")
	if code, got, body, err := request(s.pod, ext6, "example.com"); err != nil || code != http.StatusOK || got.Server != ext6 || got.XFF != podIP6 {
		t.Errorf("outbound over IPv6 to %s: %d %q %v; want the external server's answer through APISIX (X-Forwarded-For %s)", ext6, code, body, err, podIP6)
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
	waitFor(t, "the passthrough route to answer 503 (BlackHoleCluster)", 30*time.Second, func() (bool, string) {
		code, _, body, err := out("8080")
		return err == nil && code == http.StatusServiceUnavailable, fmt.Sprintf("%d %q %v", code, body, err)
	})
	if code, _, body, err := out("9080"); err != nil || code != http.StatusBadGateway {
		t.Errorf("REGISTRY_ONLY, outbound to port 9080 with an unknown host: %d %q %v; want istiod's block_all 502", code, body, err)
	}
	// Requests that reached an external server after the change went through a route
	// not yet replaced (the wait above); none may reach it now.
	before8080, before9080 := external8080.Load(), external9080.Load()
	for range 3 {
		_, _, _, _ = out("8080")
		_, _, _, _ = out("9080")
	}
	if external8080.Load() != before8080 || external9080.Load() != before9080 {
		t.Errorf("REGISTRY_ONLY: requests reached the external servers")
	}
	// Inbound is unchanged.
	if code, got, body, err := in("19080"); err != nil || code != http.StatusOK || got.Remote != "127.0.0.6" {
		t.Errorf("REGISTRY_ONLY, inbound to 19080: %d %q %v", code, body, err)
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
