package upstream

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// byteSource hands out fuzz bytes, zeros once exhausted.
type byteSource struct{ b []byte }

func (s *byteSource) next() byte {
	if len(s.b) == 0 {
		return 0
	}
	c := s.b[0]
	s.b = s.b[1:]
	return c
}

func (s *byteSource) u32() uint32 {
	return uint32(s.next()) | uint32(s.next())<<8 | uint32(s.next())<<16 | uint32(s.next())<<24
}

// fuzzCluster builds a cluster and its endpoints from fuzz bytes.
func fuzzCluster(data []byte) (*clusterv3.Cluster, *resource.LoadAssignment) {
	s := &byteSource{b: data}
	c := &clusterv3.Cluster{Name: fmt.Sprintf("outbound|%d|v%d|svc-%d.ns.svc.cluster.local", s.next(), s.next(), s.next())}
	types := []clusterv3.Cluster_DiscoveryType{clusterv3.Cluster_EDS, clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_ORIGINAL_DST}
	c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: types[int(s.next())%len(types)]}
	c.LbPolicy = clusterv3.Cluster_LbPolicy(s.next() % 8)
	if x := s.next(); x%2 == 1 {
		c.ConnectTimeout = &durationpb.Duration{Seconds: int64(x % 7), Nanos: int32(s.u32() % 1e9)}
	}
	if x := s.next(); x%3 == 0 {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Consecutive_5Xx:                    wrapperspb.UInt32(s.u32() % 300),
			EnforcingConsecutive_5Xx:           wrapperspb.UInt32(uint32(s.next()) % 101),
			ConsecutiveGatewayFailure:          wrapperspb.UInt32(uint32(s.next())),
			EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(uint32(s.next()) % 101),
			Interval:                           &durationpb.Duration{Seconds: int64(s.next()), Nanos: int32(s.u32() % 1e9)},
			BaseEjectionTime:                   &durationpb.Duration{Seconds: int64(s.next())},
		}
	}
	if s.next()%2 == 1 {
		c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{LocalityConfigSpecifier: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig_{
			LocalityWeightedLbConfig: &clusterv3.Cluster_CommonLbConfig_LocalityWeightedLbConfig{}}}
	}
	la := &endpointv3.ClusterLoadAssignment{ClusterName: c.Name}
	for g := int(s.next() % 4); g > 0; g-- {
		grp := &endpointv3.LocalityLbEndpoints{Priority: uint32(s.next() % 4)}
		if w := s.u32(); w%3 != 0 {
			grp.LoadBalancingWeight = wrapperspb.UInt32(w%1000 + 1)
		}
		for n := int(s.next() % 6); n > 0; n-- {
			host := fmt.Sprintf("10.%d.%d.%d", s.next(), s.next(), s.next())
			switch s.next() % 8 {
			case 0:
				host = "svc.example.com"
			case 1:
				host = "2001:db8::" + fmt.Sprint(s.next())
			}
			e := ep(host, uint32(s.next())<<8|uint32(s.next()), 0, corev3.HealthStatus(s.next()%6))
			if w := s.u32(); w%2 == 1 {
				e.LoadBalancingWeight = wrapperspb.UInt32(w%(1<<20) + 1)
			}
			grp.LbEndpoints = append(grp.LbEndpoints, e)
		}
		la.Endpoints = append(la.Endpoints, grp)
	}
	if c.GetType() == clusterv3.Cluster_EDS {
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{ServiceName: c.Name}
		return c, resource.FromCLA(la)
	}
	c.LoadAssignment = la
	return c, nil
}

// FuzzBuild: no panics, deterministic, always schema-valid, Report gives Build's
// entries, and the node invariants hold (only positive weights, priorities from Envoy priorities, hosts from the input).
func FuzzBuild(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{1, 2, 3, 0, 2, 1, 0, 3, 1, 2, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9})
	f.Add([]byte("some longer seed that exercises locality weights and outlier detection...."))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, la := fuzzCluster(data)
		u, es := Build(c.GetName(), c, la)
		a := mustValid(t, u)
		u2, es2 := Build(c.GetName(), c, la)
		if string(a) != string(mustValid(t, u2)) || fmt.Sprint(es) != fmt.Sprint(es2) {
			t.Fatal("not deterministic")
		}
		un, es3 := BuildUnnamed(Options{}, c.GetName(), c, la)
		un.ID = u.ID
		if string(mustValid(t, un)) != string(a) || fmt.Sprint(es3) != fmt.Sprint(es) {
			t.Fatal("BuildUnnamed differs from Build other than by the id")
		}
		if rs := Report(Options{}, c.GetName(), c, la); fmt.Sprint(rs) != fmt.Sprint(es) {
			t.Fatalf("Report differs from Build's entries:\n%v\n%v", rs, es)
		}
		for _, n := range u.Nodes {
			if n.Weight < 1 || n.Priority > 0 || n.Priority < -3 {
				t.Fatalf("bad node %+v", n)
			}
		}
		for _, e := range es {
			if e.Resource != c.Name || e.Message == "" || e.Severity == "" {
				t.Fatalf("bad report entry %+v", e)
			}
		}
		v := Variant{Retries: intPtr(int(len(data) % 4)), ReadTimeout: f64(0.5), HashOn: "vars", HashKey: "remote_addr"}
		mustValid(t, v.Apply(u))
	})
}

// BenchmarkBuild translates one Istio-shaped cluster with 10 endpoints.
func BenchmarkBuild(b *testing.B) {
	m := meshgen.Generate(meshgen.Options{Services: 1})
	snap := m.Snapshot()
	name := m.EDSClusters()[1]
	c, la := msgOf(b, snap.Clusters[name]), snap.Endpoints[name]
	b.ReportAllocs()
	for b.Loop() {
		u, _ := Build(c.GetName(), c, la)
		if len(u.Nodes) != 10 {
			b.Fatal(len(u.Nodes))
		}
	}
}
