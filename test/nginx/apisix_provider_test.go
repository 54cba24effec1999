package nginx

import (
	"encoding/json"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// pointAt returns the load assignments with every endpoint of the clusters of the
// services whose host contains one of hosts (all when hosts is empty) at
// 127.0.0.1:port: a backend of the test instead of an address nobody answers.
func pointAt(clas []proto.Message, port int, hosts ...string) []proto.Message {
	out := slices.Clone(clas)
	for i, m := range out {
		c := m.(*endpointv3.ClusterLoadAssignment)
		match := len(hosts) == 0
		for _, h := range hosts {
			match = match || strings.HasSuffix(c.GetClusterName(), "|"+h)
		}
		if !match {
			continue
		}
		c = proto.Clone(c).(*endpointv3.ClusterLoadAssignment)
		for _, g := range c.GetEndpoints() {
			for _, lb := range g.GetLbEndpoints() {
				sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
				sa.Address = "127.0.0.1"
				sa.PortSpecifier = socketPort(port)
			}
		}
		out[i] = c
	}
	return out
}

func socketPort(port int) *corev3.SocketAddress_PortValue {
	return &corev3.SocketAddress_PortValue{PortValue: uint32(port)}
}

// serviceHost is meshgen's host of service i.
func serviceHost(i int) string {
	ns := "default"
	if i%4 != 0 {
		ns = fmt.Sprintf("ns-%d", i%16)
	}
	return fmt.Sprintf("svc-%05d.%s.svc.cluster.local", i, ns)
}

// controlItems is the control API's dump of a kind: key -> modifiedIndex.
func (a *apisixInstance) controlItems(kind string) map[string]float64 {
	a.t.Helper()
	b, err := a.get(a.opts.ControlPort, "/v1/"+kind)
	if err != nil {
		a.t.Fatal(err)
	}
	var items []struct {
		Key           string  `json:"key"`
		ModifiedIndex float64 `json:"modifiedIndex"`
	}
	if err := json.Unmarshal(b, &items); err != nil {
		a.t.Fatalf("control API /v1/%s: %v\n%s", kind, err, tail(b, 1024))
	}
	out := map[string]float64{}
	for _, it := range items {
		out[it.Key] = it.ModifiedIndex
	}
	return out
}

// waitAnswer waits until a request to host answers body.
func (a *apisixInstance) waitAnswer(host, body string) {
	a.t.Helper()
	waitFor(a.t, host+" to answer "+body, func() bool {
		code, got, err := a.request(host, "/")
		return err == nil && code == 200 && got == body
	})
}

// In real APISIX with amesh's provider and router: traffic follows an endpoint
// change, which replaces that upstream only (every other upstream and every route
// keeps its modifiedIndex, so balancers and health checkers survive); a new domain of
// a virtual host routes; a restart of the library (its process killed) changes nothing
// APISIX holds.
func TestAPISIXProvider(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	mesh := meshgen.Generate(meshgen.Options{Services: 3, Subsets: -1, EndpointsPerCluster: 1, BasePort: port})
	a, b := startBackend(t, "A"), startBackend(t, "B")
	res := mesh.Resources()
	res[resource.EndpointType] = pointAt(res[resource.EndpointType], a.port)
	xds := newXDS(t, res)
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 1, Port: port, ControlPort: freePort(t)})
	ap.waitServing()
	for i := range 3 {
		ap.waitAnswer(serviceHost(i), "A")
	}
	ups0, routes0 := ap.controlItems("upstreams"), ap.controlItems("routes")
	if len(ups0) == 0 || len(routes0) == 0 {
		t.Fatalf("control API shows %d upstreams, %d routes", len(ups0), len(routes0))
	}

	res[resource.EndpointType] = pointAt(res[resource.EndpointType], b.port, serviceHost(1))
	serve(xds, res)
	ap.waitAnswer(serviceHost(1), "B")
	if _, got, _ := ap.request(serviceHost(0), "/"); got != "A" {
		t.Errorf("%s answers %q after another service's endpoint change, want A", serviceHost(0), got)
	}
	ups1, routes1 := ap.controlItems("upstreams"), ap.controlItems("routes")
	if !maps.Equal(routes0, routes1) {
		t.Errorf("routes' modifiedIndex changed by an endpoint change:\n%v\n%v", routes0, routes1)
	}
	for k, idx := range ups1 {
		if changed := strings.Contains(k, serviceHost(1)); changed == (idx == ups0[k]) {
			t.Errorf("upstream %s: modifiedIndex %v -> %v (its service's endpoints changed: %v)", k, ups0[k], idx, changed)
		}
	}

	// A new domain routes, then stops routing when removed.
	res[resource.RouteConfigType] = editDomains(res[resource.RouteConfigType], 2, "alias.example.com")
	serve(xds, res)
	ap.waitAnswer("alias.example.com", "A")
	res[resource.RouteConfigType] = editDomains(res[resource.RouteConfigType], 2, "")
	serve(xds, res)
	waitFor(t, "the removed domain to stop routing", func() bool {
		_, got, err := ap.request("alias.example.com", "/")
		return err == nil && got != "A"
	})
	ups2, routes2 := ap.controlItems("upstreams"), ap.controlItems("routes")

	// The library's process is killed; its successor rewrites the same state.
	agents := ap.processes("privileged agent")
	if len(agents) != 1 {
		t.Fatalf("%d privileged agents", len(agents))
	}
	if err := killPID(agents[0]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a new privileged agent to write", func() bool {
		p := ap.processes("privileged agent")
		v, ok := statusValue(ap.statusAddr, "amesh_apisix_batches_total")
		return len(p) == 1 && p[0] != agents[0] && ok && v >= 1
	})
	for i := range 3 {
		want := "A"
		if i == 1 {
			want = "B"
		}
		ap.waitAnswer(serviceHost(i), want)
	}
	if ups3, routes3 := ap.controlItems("upstreams"), ap.controlItems("routes"); !maps.Equal(ups2, ups3) || !maps.Equal(routes2, routes3) {
		t.Errorf("a restart of the library that wrote the same objects changed modifiedIndexes:\n%v %v\n%v %v", ups2, routes2, ups3, routes3)
	}
}

// amesh_host_uri chooses the same route as APISIX's radixtree_host_uri for random
// requests after each of many random route changes (inside real APISIX, with its
// radixtree, expressions and route filter; apisixlua/routercheck.lua).
func TestAPISIXRouterMatchesRadixtreeHostURI(t *testing.T) {
	requireAPISIX(t)
	port, check := freePort(t), freePort(t)
	mesh := meshgen.Generate(meshgen.Options{Services: 1, Subsets: -1, EndpointsPerCluster: 1, BasePort: port})
	xds := newXDS(t, mesh.Resources())
	here, err := filepath.Abs("apisixlua")
	if err != nil {
		t.Fatal(err)
	}
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: 1, Port: port, ExtraLua: here,
		Snippet: fmt.Sprintf(`server {
    listen 127.0.0.1:%d;
    location = /routercheck { content_by_lua_block { require("routercheck").run() } }
}`, check)})
	ap.waitServing()
	for seed := 1; seed <= 5; seed++ {
		b, err := ap.get(check, fmt.Sprintf("/routercheck?seed=%d&steps=300", seed))
		if err != nil {
			t.Fatal(err)
		}
		var requests, matched int
		got := strings.TrimSpace(string(b))
		if _, err := fmt.Sscanf(got, "ok %d requests, %d matched", &requests, &matched); err != nil {
			t.Fatalf("seed %d:\n%s", seed, got)
		}
		// Both "no match" for most requests would prove little.
		if matched < requests/3 {
			t.Errorf("seed %d: only %d of %d requests matched a route", seed, matched, requests)
		}
		t.Logf("seed %d: %s", seed, got)
	}
}
