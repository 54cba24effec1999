package resource_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// wireResource is one serialized resource of a kind.
type wireResource struct {
	typeURL string
	b       []byte
}

// istiodAndMeshgen serializes every resource of the istiod testdata and of a
// generated mesh with subsets (clusters of several shapes).
func istiodAndMeshgen(t *testing.T) []wireResource {
	t.Helper()
	var out []wireResource
	add := func(typeURL string, m proto.Message) {
		out = append(out, wireResource{typeURL, marshal(t, m)})
	}
	for _, mode := range []string{"sotw", "delta", "sotw-interception-none"} {
		dir := filepath.Join("..", "..", "..", "testdata", "istiod", mode)
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("istiod testdata %s: %v", mode, err)
		}
		res, err := dump.LoadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range res.Listeners {
			add(resource.ListenerType, m)
		}
		for _, m := range res.RouteConfigs {
			add(resource.RouteConfigType, m)
		}
		for _, m := range res.Clusters {
			add(resource.ClusterType, m)
		}
		for _, m := range res.Endpoints {
			add(resource.EndpointType, m)
		}
	}
	anys, err := meshgen.Generate(meshgen.Options{Services: 30, Ports: 2, Subsets: 2}).Anys()
	if err != nil {
		t.Fatal(err)
	}
	for typeURL, as := range anys {
		for _, a := range as {
			out = append(out, wireResource{typeURL, a.GetValue()})
		}
	}
	return out
}

// Interning changes no resource: every resource of istiod's testdata and of a
// generated mesh, decoded with one table for all, has the content it has decoded
// without one; and the table did share (else the comparison would prove nothing).
func TestInterningKeepsContent(t *testing.T) {
	in := resource.NewInterner()
	shared := map[*clusterv3.Cluster]int{}
	unshared := map[*clusterv3.Cluster]int{}
	for _, r := range istiodAndMeshgen(t) {
		with, err := resource.DecodeBytes(r.typeURL, r.b, "", resource.DecodeOptions{Intern: in})
		if err != nil {
			t.Fatalf("%s: %v", resource.KindOf(r.typeURL), err)
		}
		without, err := resource.DecodeBytes(r.typeURL, r.b, "", resource.DecodeOptions{})
		if err != nil {
			t.Fatalf("%s %s: %v", resource.KindOf(r.typeURL), with.Name, err)
		}
		if with.Name != without.Name || with.Hash != without.Hash || !slices.Equal(with.Deps, without.Deps) ||
			!resource.Equal(with.Msg, without.Msg) || !proto.Equal(with.Route, without.Route) {
			t.Errorf("%s %s: decoded with interning differs from without", resource.KindOf(r.typeURL), with.Name)
		}
		if c, ok := with.Msg.(*resource.Cluster); ok {
			shared[c.Shape()]++
			unshared[without.Msg.(*resource.Cluster).Shape()]++
		}
	}
	n := 0
	for _, k := range shared {
		n += k
	}
	if len(shared) >= n {
		t.Errorf("%d clusters, %d shapes: interning shared nothing", n, len(shared))
	}
	if len(unshared) != n {
		t.Errorf("%d clusters, %d shapes: decoded without a table, clusters share", n, len(unshared))
	}
}

// Resources that differ in an interned leaf or sub-message never share it: each one
// decoded with a common table reads back as its own pruned message.
func TestInterningKeepsDifferences(t *testing.T) {
	clusters := map[string]func(*clusterv3.Cluster){
		"base":            func(*clusterv3.Cluster) {},
		"timeout 1s":      func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(time.Second) },
		"timeout 1s+1ns":  func(c *clusterv3.Cluster) { c.ConnectTimeout = durationpb.New(time.Second + time.Nanosecond) },
		"lb policy":       func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM },
		"max connections": func(c *clusterv3.Cluster) { c.CircuitBreakers = breakers(1, 3) },
		"max retries":     func(c *clusterv3.Cluster) { c.CircuitBreakers = breakers(1, 4) },
		"both":            func(c *clusterv3.Cluster) { c.CircuitBreakers = breakers(2, 4) },
		"panic threshold": func(c *clusterv3.Cluster) { c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{} },
		"service name":    func(c *clusterv3.Cluster) { c.EdsClusterConfig.ServiceName = "svc" },
	}
	in := resource.NewInterner()
	for round := range 2 { // the second round finds every value in the table
		for name, mod := range clusters {
			c := xdstest.EDSCluster("outbound|9080||" + name)
			mod(c)
			d, err := resource.DecodeBytes(resource.ClusterType, marshal(t, c), "", resource.DecodeOptions{Intern: in})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := proto.Clone(c)
			resource.Prune(want)
			if m, _ := d.Msg.(*resource.Cluster).Message(); !proto.Equal(m, want) {
				t.Errorf("round %d, %s: decoded as %v, want %v", round, name, m, want)
			}
		}
	}

	routes := map[string]func(*routev3.RouteAction){
		"base":         func(*routev3.RouteAction) {},
		"timeout":      func(a *routev3.RouteAction) { a.Timeout = durationpb.New(3 * time.Second) },
		"idle timeout": func(a *routev3.RouteAction) { a.IdleTimeout = durationpb.New(3 * time.Second) },
		"retries 2":    func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(2)} },
		"retries 3":    func(a *routev3.RouteAction) { a.RetryPolicy = &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(3)} },
		"retry on 5xx": func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(3)}
		},
		"per try 1s": func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{PerTryTimeout: durationpb.New(time.Second)}
		},
		"per try 2s": func(a *routev3.RouteAction) {
			a.RetryPolicy = &routev3.RetryPolicy{PerTryTimeout: durationpb.New(2 * time.Second)}
		},
		"unset timeout": func(a *routev3.RouteAction) { a.Timeout = nil },
	}
	for round := range 2 {
		for name, mod := range routes {
			rc := xdstest.RouteConfig("r-"+name, "outbound|9080||a")
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if a := r.GetRoute(); a != nil {
						a.Timeout = durationpb.New(15 * time.Second)
						mod(a)
					}
				}
			}
			d, err := resource.DecodeBytes(resource.RouteConfigType, marshal(t, rc), "", resource.DecodeOptions{Intern: in})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			want := proto.Clone(rc)
			resource.Prune(want)
			if m, _ := d.Msg.(*resource.RouteConfig).Message(); !proto.Equal(m, want) || !proto.Equal(d.Route, want) {
				t.Errorf("round %d, %s: decoded as %v, want %v", round, name, m, want)
			}
		}
	}
}

func breakers(conns, retries uint32) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(conns), MaxRetries: wrapperspb.UInt32(retries),
	}}}
}

// Clusters decoded with separate tables never share a shape; with one, clusters that
// differ only in their names do.
func TestInternerTablesAreSeparate(t *testing.T) {
	decode := func(name string, in *resource.Interner) *resource.Cluster {
		d, err := resource.DecodeBytes(resource.ClusterType, marshal(t, xdstest.EDSCluster(name)), "", resource.DecodeOptions{Intern: in})
		if err != nil {
			t.Fatal(err)
		}
		return d.Msg.(*resource.Cluster)
	}
	one, two := resource.NewInterner(), resource.NewInterner()
	a1, b1, a2 := decode("a", one), decode("b", one), decode("a", two)
	if a1.Shape() != b1.Shape() {
		t.Error("one table: clusters that differ only in their names do not share the shape")
	}
	if a2.Shape() == a1.Shape() || !a2.Equal(a1) {
		t.Error("two tables share a shape, or decode different content")
	}
	if a3 := decode("a", nil); a3.Shape() == a1.Shape() || a3.Shape() == a2.Shape() || !a3.Equal(a1) {
		t.Error("no table: the shape is shared, or the content differs")
	}
}
