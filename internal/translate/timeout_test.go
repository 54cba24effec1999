package translate

import (
	"encoding/json"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/translate/upstream"
)

// translateRC translates one route configuration on port 80 with the given clusters
// and returns the output, checked against APISIX's schemas, and the report.
func translateRC(t *testing.T, rc *routev3.RouteConfiguration, clusters ...*clusterv3.Cluster) (map[string][]byte, []report.Entry) {
	t.Helper()
	tr := newTracked(Options{})
	res := tr.Translate(snapshotOf([]*listenerv3.Listener{httpListener(80, rc.GetName())}, []*routev3.RouteConfiguration{rc}, clusters))
	objs := tr.Objects()
	validateAll(t, objs)
	return objs, res.Report
}

// jsonOf decodes an object of the output.
func jsonOf(t *testing.T, objs map[string][]byte, key string) map[string]any {
	t.Helper()
	b, ok := objs[key]
	if !ok {
		t.Fatalf("no object %s", key)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// routeObject returns the route translated from the Envoy route named name (the
// first, for routes emitted once per host group).
func routeObject(t *testing.T, objs map[string][]byte, name string) map[string]any {
	t.Helper()
	for k := range objs {
		if strings.HasPrefix(k, "/routes/") {
			if r := jsonOf(t, objs, k); r["name"] == name {
				return r
			}
		}
	}
	t.Fatalf("no route named %s", name)
	return nil
}

// Route timeouts are read as Envoy reads them (whole milliseconds) and clamped to
// what nginx holds, with a report entry; they never overflow into nginx's default.
func TestRouteTimeouts(t *testing.T) {
	route := func(name string, timeout, perTry *durationpb.Duration) *routev3.Route {
		a := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c"}, Timeout: timeout}
		if perTry != nil {
			a.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(2), PerTryTimeout: perTry}
		}
		return &routev3.Route{Name: name, Match: exact("/" + name), Action: &routev3.Route_Route{Route: a}}
	}
	rc := &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
		route("ms", &durationpb.Duration{Seconds: 1, Nanos: 500_900_000}, nil),
		route("sub-ms", &durationpb.Duration{Nanos: 900_000}, nil),
		route("none", &durationpb.Duration{}, nil),
		route("limit", &durationpb.Duration{Seconds: 2147483, Nanos: 647_000_000}, nil),
		route("30-days", &durationpb.Duration{Seconds: 30 * 86400}, nil),
		route("per-try-huge", &durationpb.Duration{}, &durationpb.Duration{Seconds: 9223372035}),
	}}}}
	objs, rep := translateRC(t, rc, staticCluster("c"))
	read := func(name string) any {
		r := routeObject(t, objs, name)
		u := jsonOf(t, objs, "/upstreams/"+r["upstream_id"].(string))
		return u["timeout"].(map[string]any)["read"]
	}
	for name, want := range map[string]float64{
		"ms":           1.5,
		"sub-ms":       upstream.NoTimeout, // 0 ms: no timeout in Envoy
		"none":         upstream.NoTimeout,
		"limit":        2147483.647,
		"30-days":      upstream.MaxTimeout,
		"per-try-huge": upstream.MaxTimeout,
	} {
		if got := read(name); got != want {
			t.Errorf("route %s: read timeout %v, want %v", name, got, want)
		}
	}
	clamped := map[string]string{}
	for _, e := range rep {
		if strings.Contains(e.Message, "exceeds what nginx holds") {
			clamped[e.Resource[strings.LastIndexByte(e.Resource, '/')+1:]] = e.Field
		}
	}
	want := map[string]string{"30-days": "route.timeout", "per-try-huge": "route.retry_policy.per_try_timeout"}
	if len(clamped) != len(want) || clamped["30-days"] != want["30-days"] || clamped["per-try-huge"] != want["per-try-huge"] {
		t.Errorf("clamping reported for %v, want %v", clamped, want)
	}
}
