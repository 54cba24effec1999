package translate

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// clusterAt is a STATIC round-robin cluster with the given endpoints ("ip:port" or
// "ip:port*weight", and "@p" for Envoy priority p).
func clusterAt(name string, eps ...string) *clusterv3.Cluster {
	la := &endpointv3.ClusterLoadAssignment{ClusterName: name}
	byPrio := map[uint32]*endpointv3.LocalityLbEndpoints{}
	for _, e := range eps {
		prio := uint32(0)
		if i := strings.IndexByte(e, '@'); i >= 0 {
			fmt.Sscan(e[i+1:], &prio)
			e = e[:i]
		}
		w := uint32(1)
		if i := strings.IndexByte(e, '*'); i >= 0 {
			fmt.Sscan(e[i+1:], &w)
			e = e[:i]
		}
		host, port := e[:strings.LastIndexByte(e, ':')], uint32(0)
		fmt.Sscan(e[strings.LastIndexByte(e, ':')+1:], &port)
		g := byPrio[prio]
		if g == nil {
			g = &endpointv3.LocalityLbEndpoints{Priority: prio}
			byPrio[prio] = g
			la.Endpoints = append(la.Endpoints, g)
		}
		g.LbEndpoints = append(g.LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
				Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
					Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}}}},
			LoadBalancingWeight: wrapperspb.UInt32(w),
		})
	}
	return &clusterv3.Cluster{Name: name, ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LbPolicy: clusterv3.Cluster_LEAST_REQUEST, ConnectTimeout: durationpb.New(1e9), LoadAssignment: la}
}

// splitRoute is a route "/" splitting over clusters with weights.
func splitRoute(clusters []string, weights []uint32) *routev3.RouteConfiguration {
	wc := &routev3.WeightedCluster{}
	for i, c := range clusters {
		wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: c, Weight: wrapperspb.UInt32(weights[i])})
	}
	return &routev3.RouteConfiguration{Name: "80", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{
		{Name: "split", Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}},
	}}}}
}

// served returns, for the route named "split", the share of its traffic each
// endpoint ("host:port") gets at the best priority: traffic-split's weights times
// each upstream's node weights (what APISIX's weighted round robins converge to).
func served(t *testing.T, objs map[string][]byte) map[string]float64 {
	t.Helper()
	r := routeObject(t, objs, "split")
	type wu struct {
		UpstreamID string `json:"upstream_id"`
		Weight     float64
	}
	ups := []wu{{UpstreamID: fmt.Sprint(r["upstream_id"]), Weight: 1}}
	plugins, _ := r["plugins"].(map[string]any)
	if ts, ok := plugins["traffic-split"]; ok {
		var conf struct {
			Rules []struct {
				WeightedUpstreams []wu `json:"weighted_upstreams"`
			}
		}
		b, _ := json.Marshal(ts)
		if err := json.Unmarshal(b, &conf); err != nil || len(conf.Rules) != 1 {
			t.Fatalf("traffic-split %s: %v", b, err)
		}
		ups = conf.Rules[0].WeightedUpstreams
		if len(ups) > maxWeighted {
			t.Fatalf("%d weighted upstreams, APISIX takes %d", len(ups), maxWeighted)
		}
	}
	var total float64
	for _, u := range ups {
		total += u.Weight
	}
	out := map[string]float64{}
	for _, u := range ups {
		var up struct {
			Nodes []struct {
				Host     string
				Port     int
				Weight   float64
				Priority int
			}
		}
		if err := json.Unmarshal(objs["/upstreams/"+u.UpstreamID], &up); err != nil {
			t.Fatal(err)
		}
		var sum float64
		best := -1 << 31
		for _, n := range up.Nodes {
			best = max(best, n.Priority)
		}
		for _, n := range up.Nodes {
			if n.Priority == best {
				sum += n.Weight
			}
		}
		for _, n := range up.Nodes {
			if n.Priority == best {
				out[fmt.Sprintf("%s:%d", n.Host, n.Port)] += u.Weight / total * n.Weight / sum
			}
		}
	}
	return out
}

// envoyShares is what Envoy gives each endpoint of the best priority of each cluster:
// the cluster's weight share times the endpoint's share of its cluster.
func envoyShares(clusters []*clusterv3.Cluster, weights []uint32) map[string]float64 {
	var total float64
	for _, w := range weights {
		total += float64(w)
	}
	out := map[string]float64{}
	for i, c := range clusters {
		var best *endpointv3.LocalityLbEndpoints
		for _, g := range c.GetLoadAssignment().GetEndpoints() {
			if best == nil || g.GetPriority() < best.GetPriority() {
				best = g
			}
		}
		var sum float64
		for _, e := range best.GetLbEndpoints() {
			sum += float64(e.GetLoadBalancingWeight().GetValue())
		}
		for _, e := range best.GetLbEndpoints() {
			a := e.GetEndpoint().GetAddress().GetSocketAddress()
			out[fmt.Sprintf("%s:%d", a.GetAddress(), a.GetPortValue())] += float64(weights[i]) / total * float64(e.GetLoadBalancingWeight().GetValue()) / sum
		}
	}
	return out
}

// splitOf makes n clusters c0..c<n-1> and their weights with build.
func splitOf(n int, build func(i int, name string) (*clusterv3.Cluster, uint32)) (cs []*clusterv3.Cluster, names []string, weights []uint32) {
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		c, w := build(i, name)
		cs, names, weights = append(cs, c), append(names, name), append(weights, w)
	}
	return cs, names, weights
}

func sameShares(t *testing.T, got, want map[string]float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d endpoints served, Envoy serves %d", len(got), len(want))
	}
	for k, w := range want {
		if d := got[k] - w; d > tol || d < -tol {
			t.Errorf("endpoint %s: share %.6f, Envoy's %.6f", k, got[k], w)
		}
	}
}

func hasReport(rep []report.Entry, sev report.Severity, substr string) bool {
	for _, e := range rep {
		if e.Severity == sev && strings.Contains(e.Message, substr) {
			return true
		}
	}
	return false
}

// A split over 25 clusters with the same settings is served by one upstream whose
// node weights give every endpoint exactly Envoy's share.
func TestSplitOver20OneGroup(t *testing.T) {
	cs, names, weights := splitOf(25, func(i int, n string) (*clusterv3.Cluster, uint32) {
		eps := []string{fmt.Sprintf("10.0.%d.1:80", i)}
		if i%3 == 0 {
			eps = append(eps, fmt.Sprintf("10.0.%d.2:80*3", i)) // a second endpoint, weighted
		}
		return clusterAt(n, eps...), uint32(1 + i%7)
	})
	objs, rep := translateRC(t, splitRoute(names, weights), cs...)
	r := routeObject(t, objs, "split")
	if ps, _ := r["plugins"].(map[string]any); ps["traffic-split"] != nil || !strings.HasPrefix(fmt.Sprint(r["upstream_id"]), "split-") {
		t.Fatalf("route %v: want one merged upstream and no traffic-split", r)
	}
	sameShares(t, served(t, objs), envoyShares(cs, weights), 1e-12)
	if !hasReport(rep, report.Approximated, "25 weighted clusters exceed APISIX's traffic-split limit of 20: 25 of them") {
		t.Errorf("the merge is not reported: %v", rep)
	}
	if hasReport(rep, report.Unsupported, "") && hasReport(rep, report.Unsupported, "fails closed") {
		t.Errorf("route fails closed: %v", rep)
	}
}

// Clusters with other settings get upstreams of their own, next to the merged ones;
// clusters sharing endpoints share nodes.
func TestSplitOver20Groups(t *testing.T) {
	cs, names, weights := splitOf(30, func(i int, n string) (*clusterv3.Cluster, uint32) {
		c := clusterAt(n, fmt.Sprintf("10.1.%d.1:80", i), "10.9.9.9:80") // 10.9.9.9 in every cluster
		switch {
		case i < 5:
			c.ConnectTimeout = durationpb.New(2e9) // a second group of 5
		case i == 5:
			c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN // same upstream settings as LEAST_REQUEST: first group
		case i == 6:
			c.ConnectTimeout = durationpb.New(3e9) // alone: an upstream of its own
		}
		return c, uint32(10 + i)
	})
	objs, rep := translateRC(t, splitRoute(names, weights), cs...)
	r := routeObject(t, objs, "split")
	b, _ := json.Marshal(r["plugins"])
	if got := strings.Count(string(b), `"upstream_id"`); got != 3 {
		t.Fatalf("traffic-split %s: want 3 upstreams (two groups and c6)", b)
	}
	sameShares(t, served(t, objs), envoyShares(cs, weights), 1e-12)
	if !strings.Contains(string(b), `"upstream_id":"c6-v`) { // c6 with the route's variant
		t.Errorf("c6 should keep its own upstream: %s", b)
	}
	if !hasReport(rep, report.Approximated, "29 of them") {
		t.Errorf("report: %v", rep)
	}
}

// More distinct settings than traffic-split takes: the route fails closed, reported.
func TestSplitOver20DistinctSettings(t *testing.T) {
	cs, names, weights := splitOf(22, func(i int, n string) (*clusterv3.Cluster, uint32) {
		c := clusterAt(n, fmt.Sprintf("10.2.%d.1:80", i))
		c.ConnectTimeout = durationpb.New(time.Duration(i+1) * time.Second)
		return c, 1
	})
	objs, rep := translateRC(t, splitRoute(names, weights), cs...)
	r := routeObject(t, objs, "split")
	if plugins, _ := r["plugins"].(map[string]any); plugins["fault-injection"] == nil || r["upstream_id"] != nil {
		t.Errorf("route %v: want a 500 in its place", r)
	}
	if !hasReport(rep, report.Unsupported, "22 weighted clusters with 22 distinct upstream settings") {
		t.Errorf("report: %v", rep)
	}
}

// Findings of a merged upstream: clusters without endpoints, several priorities,
// rounded weights.
func TestSplitFindings(t *testing.T) {
	cs, names, weights := splitOf(21, func(i int, n string) (*clusterv3.Cluster, uint32) {
		w := uint32(1000003 + i)
		switch i {
		case 0:
			return clusterAt(n), w // no endpoints
		case 1:
			return clusterAt(n, "10.3.1.1:80@1", "10.3.1.2:80@2"), w // only lower priorities: its best is 1
		case 2:
			return clusterAt(n, "10.3.2.1:80", "10.3.2.2:80@1"), w
		}
		return clusterAt(n, fmt.Sprintf("10.3.%d.1:80*%d", i, 7919), fmt.Sprintf("10.3.%d.2:80*%d", i, 104729)), w
	})
	objs, rep := translateRC(t, splitRoute(names, weights), cs...)
	for _, want := range []string{"c0 have no endpoints", "priorities are merged", "rounded to 1/65536"} {
		if !hasReport(rep, report.Approximated, want) {
			t.Errorf("no finding %q: %v", want, rep)
		}
	}
	// Envoy's shares, but for c0's (answered 503 by Envoy, served by the others here)
	// and within the rounding.
	want := envoyShares(cs[1:], weights[1:])
	sameShares(t, served(t, objs), want, 2.0/65536)
}

// The merged upstream follows its clusters: an endpoint change of one rebuilds it,
// a settings change moves the cluster to an upstream of its own, and the result is
// always what a translation from scratch gives, with builds on one goroutine or many.
func TestSplitIncremental(t *testing.T) {
	for _, min := range []int{1 << 30, 1} {
		t.Run(fmt.Sprintf("parallel-from-%d", min), func(t *testing.T) {
			splitIncremental(t, min)
		})
	}
}

func splitIncremental(t *testing.T, parallelMin int) {
	rng := rand.New(rand.NewSource(1))
	var names []string
	var weights []uint32
	clusters := map[string]*clusterv3.Cluster{}
	for i := range 24 {
		n := fmt.Sprintf("c%d", i)
		names = append(names, n)
		weights = append(weights, uint32(1+rng.Intn(9)))
		clusters[n] = clusterAt(n, fmt.Sprintf("10.4.%d.1:80", i))
	}
	rc := splitRoute(names, weights)
	other := &routev3.RouteConfiguration{Name: "81", VirtualHosts: []*routev3.VirtualHost{{Name: "o", Domains: []string{"*"},
		Routes: []*routev3.Route{{Name: "c3-only", Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "c3"}}}}}}}}
	snap := func(seq uint64, changed ...string) *resource.State {
		var cs []*clusterv3.Cluster
		for _, n := range names {
			cs = append(cs, clusters[n])
		}
		s := snapshotOf([]*listenerv3.Listener{httpListener(80, "80"), httpListener(81, "81")}, []*routev3.RouteConfiguration{rc, other}, cs)
		s.Seq = seq
		if seq > 1 {
			s.Changes = resource.Changes{Since: seq - 1, Clusters: map[string]struct{}{}}
			for _, n := range changed {
				s.Changes.Clusters[n] = struct{}{}
			}
		}
		return s
	}
	tr := newTracked(Options{ParallelMin: parallelMin})
	tr.Translate(snap(1))
	prev := snap(1)
	for step := 2; step < 40; step++ {
		n := names[rng.Intn(len(names))]
		c := clusters[n]
		switch rng.Intn(3) {
		case 0: // endpoints
			c = clusterAt(n, fmt.Sprintf("10.5.%d.%d:80", step, 1+rng.Intn(200)), fmt.Sprintf("10.5.%d.9:80*%d", step, 1+rng.Intn(5)))
		case 1: // settings: a group of its own, or back
			c = clusterAt(n, fmt.Sprintf("10.6.%d.1:80", step))
			if rng.Intn(2) == 0 {
				c.ConnectTimeout = durationpb.New(5e9)
			}
		default: // unchanged resend
		}
		clusters[n] = c
		s := snap(uint64(step), n)
		// Unchanged clusters keep their resource.
		for _, m := range names {
			if m != n {
				s.Clusters[m] = prev.Clusters[m]
			}
		}
		s.RouteConfigs = prev.RouteConfigs
		tr.Translate(s)
		prev = s
		got := tr.Objects()
		fresh := newTracked(Options{})
		fresh.Translate(snapshotOf([]*listenerv3.Listener{httpListener(80, "80"), httpListener(81, "81")}, []*routev3.RouteConfiguration{rc, other}, func() []*clusterv3.Cluster {
			var cs []*clusterv3.Cluster
			for _, m := range names {
				cs = append(cs, clusters[m])
			}
			return cs
		}()))
		want := fresh.Objects()
		if len(got) != len(want) {
			t.Fatalf("step %d: %d objects, from scratch %d", step, len(got), len(want))
		}
		for k, v := range want {
			if string(got[k]) != string(v) {
				t.Fatalf("step %d (%s): %s differs from a translation from scratch:\n got %s\nwant %s", step, n, k, got[k], v)
			}
		}
		var cs []*clusterv3.Cluster
		for _, m := range names {
			cs = append(cs, clusters[m])
		}
		sameShares(t, served(t, got), envoyShares(cs, weights), 1e-12)
	}
}
