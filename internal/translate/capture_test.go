package translate

import (
	"encoding/json"
	"maps"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// answer is what APISIX does with a request: the route it picks, and what the route
// does (forwards to an upstream, to the connection's original destination, or answers
// itself).
type answer struct {
	route    string
	upstream string // the name of the upstream's cluster
	odst     *upstream.OriginalDstConf
	status   int
}

// answerOf returns what the translated objects do with r.
func answerOf(t *testing.T, objs map[string][]byte, r request) answer {
	t.Helper()
	id := newAPISIXRouter(t, objs).match(t, r)
	if id == "" {
		return answer{}
	}
	var route struct {
		UpstreamID string                     `json:"upstream_id"`
		Plugins    map[string]json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(objs["/routes/"+id], &route); err != nil {
		t.Fatal(err)
	}
	a := answer{route: id}
	if raw, ok := route.Plugins[upstream.OriginalDstPlugin]; ok {
		a.odst = &upstream.OriginalDstConf{}
		if err := json.Unmarshal(raw, a.odst); err != nil {
			t.Fatal(err)
		}
	}
	if raw, ok := route.Plugins["fault-injection"]; ok {
		var f struct {
			Abort struct {
				Status int `json:"http_status"`
			} `json:"abort"`
		}
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatal(err)
		}
		a.status = f.Abort.Status
	}
	if raw, ok := route.Plugins["mocking"]; ok { // a direct response
		var m struct {
			Status int `json:"response_status"`
		}
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		a.status = m.Status
	}
	if route.UpstreamID != "" {
		var u struct {
			Name  string            `json:"name"`
			Nodes []json.RawMessage `json:"nodes"`
		}
		if err := json.Unmarshal(objs["/upstreams/"+route.UpstreamID], &u); err != nil {
			t.Fatalf("route %s: upstream %s: %v", id, route.UpstreamID, err)
		}
		a.upstream = u.Name
		if a.odst != nil && len(u.Nodes) != 0 {
			t.Errorf("route %s: the upstream of an original-destination route has nodes", id)
		}
	}
	return a
}

// registryOnly returns istiod's configuration as REGISTRY_ONLY changes it (xdstest's
// transformation, which test/istiod checks against istiod).
func registryOnly(t *testing.T, snap *resource.State) *resource.State {
	t.Helper()
	out := *snap
	out.Listeners = maps.Clone(snap.Listeners)
	out.RouteConfigs = maps.Clone(snap.RouteConfigs)
	out.Changes = resource.Changes{Full: true}
	for name, l := range snap.Listeners {
		out.Listeners[name] = xdstest.RegistryOnlyListener(l)
	}
	for name, src := range snap.RouteConfigs {
		rc, err := src.Message()
		if err != nil {
			t.Fatal(err)
		}
		out.RouteConfigs[name] = resource.MustRouteConfig(xdstest.RegistryOnlyRoutes(rc))
	}
	return &out
}

// Under Istio's capture, with istiod's own configuration, what each connection's
// stream route does, then what APISIX's HTTP routes do with a request that an
// amesh-http stream route hands over. Outbound (15001): a TCP service's address and
// port go to its cluster; HTTP to a port with an HTTP listener goes to the HTTP
// routes, other bytes to that listener's default chain (PassthroughCluster); a port
// no listener has, the TCP service's port on another address and the application's
// port pass through to the original destination; 15001 itself is closed. Inbound
// (15006): the application's port goes to the HTTP routes; another port, HTTP to the
// HTTP routes and other bytes to InboundPassthroughCluster from 127.0.0.6; 15006 itself
// is closed; the TCP service's address and port are just another port (outbound routes
// never take inbound connections, nor inbound ones outbound). With REGISTRY_ONLY,
// what passed through is closed (the listener's BlackHoleCluster) or gets no route.
//
// The HTTP routes: requests to a port with an HTTP listener take its routes, and those
// for hosts it does not know its allow_any route, to the original destination;
// requests to ports no listener has take virtualOutbound's passthrough route; the
// listener's own port and a port of a TCP listener get no route. Inbound requests to
// the application's port go to its inbound cluster, to other ports to
// InboundPassthroughCluster, both from 127.0.0.6 to the original destination; a
// request to 15006 itself gets no route (it would loop). With REGISTRY_ONLY, the
// unknown host gets istiod's 502 and the unknown port BlackHoleCluster's 503.
func TestCaptureRouting(t *testing.T) {
	res, err := dump.LoadDir(istiodDir(t, "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	inbound := &upstream.OriginalDstConf{Bind: "127.0.0.6"}
	passthrough := &upstream.OriginalDstConf{}
	type tc struct {
		name string
		r    request
		want answer // route is a prefix of the route's id
	}
	common := []tc{
		{"known service", request{host: "reviews.default.svc.cluster.local", path: "/", port: "9080"},
			answer{route: "out-9080.reviews", upstream: "outbound|9080|v1|reviews.default.svc.cluster.local"}},
		{"inbound to the application port", request{host: "productpage", path: "/", port: "19080", listen: "15006"},
			answer{route: "in-19080.", upstream: "inbound|19080||", odst: inbound}},
		{"inbound to another port", request{host: "x", path: "/", port: "9080", listen: "15006"},
			answer{route: "in-any.", upstream: "InboundPassthroughCluster", odst: inbound}},
		{"inbound to 15006 itself", request{host: "x", path: "/", port: "15006", listen: "15006"}, answer{}},
		{"inbound mTLS to the application port", request{host: "productpage", path: "/", port: "19080", listen: "15006", tls: true},
			answer{route: "in-19080-tls.", upstream: "inbound|19080||", odst: inbound}},
		{"inbound mTLS to another port", request{host: "x", path: "/", port: "9080", listen: "15006", tls: true},
			answer{route: "in-any-tls.", upstream: "InboundPassthroughCluster", odst: inbound}},
		{"outbound to 15001 itself", request{host: "x", path: "/", port: "15001"}, answer{}},
		{"outbound to a TCP listener's port", request{host: "x", path: "/", port: "3306"}, answer{}},
	}
	const pod, service, mysql, outside = "10.244.0.7", "10.96.0.10", "240.240.0.3", "93.184.216.34"
	out := func(addr string, port int, http bool) conn {
		return conn{listen: "15001", addr: addr, port: port, http: http}
	}
	in := func(addr string, port int, http bool) conn {
		return conn{listen: "15006", addr: addr, port: port, http: http}
	}
	tlsConn := func(c conn, alpn ...string) conn {
		c.tls, c.alpn = true, alpn
		return c
	}
	terminated := func(c conn) conn {
		c.terminated, c.peer = true, "spiffe://cluster.local/ns/default/sa/sleep"
		return c
	}
	toMysql := streamAnswer{route: "15001-3306-240.240.0.3", upstream: "outbound|3306|v1|mysqldb.default.svc.cluster.local"}
	outHTTP := streamAnswer{route: "15001-9080-http", http: true}
	appPort := streamAnswer{route: "15006-19080", http: true}
	inTCP := streamAnswer{route: "15006-any", upstream: "InboundPassthroughCluster", odst: inbound}
	inHTTP := streamAnswer{route: "15006-any-http", http: true}
	commonStreams := []stc{
		{"outbound to the TCP service", out(mysql, 3306, false), toMysql},
		{"outbound HTTP bytes to the TCP service", out(mysql, 3306, true), toMysql},
		{"outbound HTTP to a service port", out(service, 9080, true), outHTTP},
		{"outbound HTTP to an address outside the mesh on a service port", out(outside, 9080, true), outHTTP},
		{"outbound to 15001 itself", out(pod, 15001, false), streamAnswer{route: "15001-15001", closed: true}},
		{"inbound HTTP to the application port", in(pod, 19080, true), appPort},
		{"inbound other bytes to the application port", in(pod, 19080, false), appPort},
		{"inbound TCP to another port", in(pod, 5432, false), inTCP},
		{"inbound HTTP to another port", in(pod, 8080, true), inHTTP},
		{"inbound to 15006 itself", in(pod, 15006, false), streamAnswer{route: "15006-15006", closed: true}},
		{"inbound to the TCP service's address and port", in(mysql, 3306, false), inTCP},
		{"inbound HTTP to a service port", in(service, 9080, true), inHTTP},
		// TLS: Istio mTLS for HTTP is terminated by the HTTP server's TLS socket, for
		// TCP by the stream server's, whose terminated bytes take the place's "mtls"
		// route; other TLS to the application port has no chain (closed, as in
		// Envoy) and to other ports passes through.
		{"inbound Istio mTLS (HTTP) to the application port", tlsConn(in(pod, 19080, false), "istio-http/1.1", "istio", "http/1.1"),
			streamAnswer{route: "15006-19080-tls-istio_istio-peer-exchange_istio-http_-389c30d783", http: true, mtls: true}},
		{"inbound Istio mTLS (TCP ALPN) to the application port", tlsConn(in(pod, 19080, false), "istio-peer-exchange", "istio"),
			streamAnswer{route: "15006-19080-tls-istio_istio-peer-exchange_istio-http_-389c30d783", http: true, mtls: true}},
		{"inbound other TLS to the application port", tlsConn(in(pod, 19080, false), "h2", "http/1.1"),
			streamAnswer{route: "15006-19080-tls", closed: true}},
		{"inbound Istio mTLS (HTTP) to another port", tlsConn(in(pod, 8080, false), "istio-http/1.1", "istio", "http/1.1"),
			streamAnswer{route: "15006-any-tls-istio-http_1.0_istio-http_1.1_istio-h2-61c341f08f", http: true, mtls: true}},
		{"inbound Istio mTLS (TCP) to another port", tlsConn(in(pod, 5432, false), "istio-peer-exchange", "istio"),
			streamAnswer{route: "15006-any-tls-istio-peer-exchange_istio-c7a5c44986", mtlsTCP: true}},
		{"inbound Istio mTLS (TCP) to another port, terminated", terminated(in(pod, 5432, false)),
			streamAnswer{route: "15006-any-mtls", upstream: "InboundPassthroughCluster", odst: inbound}},
		// Only "mtls" routes take terminated bytes (amesh-mtls sends a place's
		// connections there only when the place has one).
		{"terminated to the application port", terminated(in(pod, 19080, false)),
			streamAnswer{route: "15006-any-mtls", upstream: "InboundPassthroughCluster", odst: inbound}},
		{"inbound other TLS to another port", tlsConn(in(pod, 8443, false)),
			streamAnswer{route: "15006-any-tls", upstream: "InboundPassthroughCluster", odst: inbound}},
		{"outbound TLS to the TCP service", tlsConn(out(mysql, 3306, false), "istio-peer-exchange", "istio"), toMysql},
	}
	for _, mode := range []struct {
		name    string
		snap    *resource.State
		more    []tc
		streams []stc
	}{
		{"ALLOW_ANY", res.Snapshot(), []tc{
			{"unknown host", request{host: "example.com", path: "/", port: "9080"},
				answer{route: "out-9080.allow_any.", upstream: "PassthroughCluster", odst: passthrough}},
			{"unknown port", request{host: "example.com", path: "/", port: "8080"},
				answer{route: "out-passthrough.", upstream: "PassthroughCluster", odst: passthrough}},
		}, []stc{
			{"outbound TLS outside the mesh", out(outside, 443, false),
				streamAnswer{route: "15001-any", upstream: "PassthroughCluster", odst: passthrough}},
			{"outbound HTTP to a port no listener has", out(outside, 8080, true),
				streamAnswer{route: "15001-any", upstream: "PassthroughCluster", odst: passthrough}},
			{"outbound other bytes to a service port", out(service, 9080, false),
				streamAnswer{route: "15001-9080", upstream: "PassthroughCluster", odst: passthrough}},
			{"outbound to another address on the TCP service's port", out("10.9.9.9", 3306, false),
				streamAnswer{route: "15001-any", upstream: "PassthroughCluster", odst: passthrough}},
			{"outbound to the application port", out(pod, 19080, true),
				streamAnswer{route: "15001-any", upstream: "PassthroughCluster", odst: passthrough}},
		}},
		{"REGISTRY_ONLY", registryOnly(t, res.Snapshot()), []tc{
			{"unknown host", request{host: "example.com", path: "/", port: "9080"}, answer{route: "out-9080.block_all.", status: 502}},
			{"unknown port", request{host: "example.com", path: "/", port: "8080"}, answer{route: "out-passthrough.", status: 503}},
		}, []stc{
			{"outbound TLS outside the mesh", out(outside, 443, false), streamAnswer{}},
			{"outbound HTTP to a port no listener has", out(outside, 8080, true), streamAnswer{}},
			{"outbound other bytes to a service port", out(service, 9080, false), streamAnswer{route: "15001-9080", closed: true}},
			{"outbound to another address on the TCP service's port", out("10.9.9.9", 3306, false), streamAnswer{}},
			{"outbound to the application port", out(pod, 19080, true), streamAnswer{}},
		}},
	} {
		t.Run(mode.name, func(t *testing.T) {
			tr := newTracked(Options{})
			rep := tr.Translate(mode.snap).Report
			objs := tr.Objects()
			validateAll(t, objs)
			checkStreams(t, objs, append(commonStreams, mode.streams...))
			for _, c := range append(common, mode.more...) {
				c.r.method = "GET"
				got := answerOf(t, objs, c.r)
				if !strings.HasPrefix(got.route, c.want.route) || (c.want.route == "") != (got.route == "") ||
					got.upstream != c.want.upstream || got.status != c.want.status ||
					(got.odst == nil) != (c.want.odst == nil) || got.odst != nil && *got.odst != *c.want.odst {
					t.Errorf("%s: %+v (plugin %+v), want %+v (plugin %+v)", c.name, got, got.odst, c.want, c.want.odst)
				}
			}
			// What the stream routes do exactly is not reported as approximated.
			for _, e := range rep {
				if e.Kind == "listener" && (strings.Contains(e.Message, "own listening port") || strings.Contains(e.Message, "not passed through") ||
					strings.Contains(e.Message, "served as HTTP")) {
					t.Errorf("report entry on what the stream routes now do: %+v", e)
				}
			}
			if findEntry(rep, "filter_chains.transport_socket", report.Unsupported) {
				t.Errorf("the report says that istiod's Istio mTLS is not terminated: %v", rep)
			}
		})
	}
}

// A listener that comes or goes takes its port from the passthrough routes or gives it
// back, also when only the listener changed (the catch-all listener is rebuilt with
// it), and the result is what a full translation gives.
func TestPassthroughFollowsListeners(t *testing.T) {
	res, err := dump.LoadDir(istiodDir(t, "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	base := res.Snapshot()
	tr := newTracked(Options{})
	tr.Translate(base)
	req := request{host: "example.com", path: "/", port: "8080", method: "GET"}
	if got := answerOf(t, tr.Objects(), req); !strings.HasPrefix(got.route, "out-passthrough.") {
		t.Fatalf("port 8080 before its listener: %+v", got)
	}

	step := func(prev *resource.State, ls map[string]*listenerv3.Listener, name string) *resource.State {
		next := *prev
		next.Seq, next.Listeners = prev.Seq+1, ls
		next.Changes = resource.Changes{Since: prev.Seq, Listeners: map[string]struct{}{name: {}}}
		return &next
	}
	with := maps.Clone(base.Listeners)
	with["0.0.0.0_8080"] = httpListener(8080, "9080")
	added := step(base, with, "0.0.0.0_8080")
	tr.Translate(added)
	if got := answerOf(t, tr.Objects(), req); !strings.HasPrefix(got.route, "out-8080.allow_any.") {
		t.Errorf("port 8080 with its listener: %+v, want the listener's allow_any route", got)
	}
	full := newTracked(Options{})
	full.Translate(&resource.State{Seq: 1, Listeners: added.Listeners, RouteConfigs: added.RouteConfigs,
		Clusters: added.Clusters, Endpoints: added.Endpoints, Changes: resource.Changes{Full: true}})
	if !sameObjects(full.Objects(), tr.Objects()) {
		t.Error("after the listener came: incremental output differs from a full translation")
	}

	removed := step(added, base.Listeners, "0.0.0.0_8080")
	tr.Translate(removed)
	if got := answerOf(t, tr.Objects(), req); !strings.HasPrefix(got.route, "out-passthrough.") {
		t.Errorf("port 8080 after its listener went: %+v", got)
	}
	first := newTracked(Options{})
	first.Translate(base)
	if !sameObjects(first.Objects(), tr.Objects()) {
		t.Error("after the listener went: incremental output differs from a full translation")
	}
}

// A route to an original-destination cluster forwards there only alone: a weighted
// split over one fails closed, and so does every such route when routes match on
// APISIX's own port (no capture, so no original destination).
func TestOriginalDstFailsClosed(t *testing.T) {
	odst := &clusterv3.Cluster{Name: "orig", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}}
	split := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"*"},
		Routes: []*routev3.Route{
			{Name: "alone", Match: prefix("/alone"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "orig"}}}},
			{Name: "split", Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
					Clusters: []*routev3.WeightedCluster_ClusterWeight{
						{Name: "orig", Weight: wrapperspb.UInt32(1)}, {Name: "c", Weight: wrapperspb.UInt32(1)}}}}}}},
		}}}}
	snap := func() *resource.State {
		return snapshotOf([]*listenerv3.Listener{httpListener(80, "80")}, []*routev3.RouteConfiguration{split},
			[]*clusterv3.Cluster{odst, staticCluster("c")})
	}
	for _, tc := range []struct {
		opts Options
		want map[string]int
	}{
		{Options{}, map[string]int{"alone": 0, "split": 502}},
		{Options{OriginalDstVar: "server_port"}, map[string]int{"alone": 502, "split": 502}},
	} {
		tr := newTracked(tc.opts)
		rep := tr.Translate(snap()).Report
		validateAll(t, tr.Objects())
		wantRoutes(t, tr.Objects(), "out-80", tc.want, "")
		for name, status := range tc.want {
			if status != 0 && !hasRouteEntry(rep, "out-80/vh/"+name, report.Unsupported, "fails closed (502)") {
				t.Errorf("%+v: route %s failing closed is not reported: %v", tc.opts, name, rep)
			}
		}
	}
}

func hasRouteEntry(es []report.Entry, res string, sev report.Severity, part string) bool {
	for _, e := range es {
		if e.Kind == "route" && e.Resource == res && e.Severity == sev && strings.Contains(e.Message, part) {
			return true
		}
	}
	return false
}
