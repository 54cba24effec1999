package resource_test

import (
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// richCluster is a valid EDS cluster with a map of two protocol options (one Prune
// keeps, one it marks), circuit breakers, and what Prune clears (metadata, alt stat
// name, the EDS config source).
func richCluster(t *testing.T) *clusterv3.Cluster {
	t.Helper()
	c := xdstest.EDSCluster("outbound|9080||a")
	c.AltStatName = "outbound|9080||a;"
	c.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		"istio": {Fields: map[string]*structpb.Value{"services": structpb.NewStringValue("a")}},
	}}
	c.TypedExtensionProtocolOptions = map[string]*anypb.Any{
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": mustAny(t, wrapperspb.String("http")),
		"istio.other": mustAny(t, wrapperspb.String("other")),
	}
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxConnections: wrapperspb.UInt32(1024), MaxRetries: wrapperspb.UInt32(3),
	}}}
	return c
}

func TestClusterRoundTrip(t *testing.T) {
	orig := richCluster(t)
	orig.EdsClusterConfig.ServiceName = "svc-a"
	want := proto.Clone(orig)
	r := resource.NewCluster(orig)
	if !proto.Equal(orig, want) {
		t.Fatal("NewCluster modified its argument")
	}
	m, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(m, want) {
		t.Errorf("Message differs from the cluster it was made from:\n%v\nwant\n%v", m, want)
	}
	// Message hands out a copy: changing it changes nothing kept.
	m.Name, m.LbPolicy = "changed", clusterv3.Cluster_MAGLEV
	if m2, _ := r.Message(); !proto.Equal(m2, want) {
		t.Error("changing a message Message returned changed the Cluster")
	}
	if r.Name != orig.GetName() || r.EDS != "svc-a" || r.EDSName() != "svc-a" {
		t.Errorf("name %q, EDS %q, EDSName %q", r.Name, r.EDS, r.EDSName())
	}
	if sh := r.Shape(); sh.GetName() != "" || sh.GetEdsClusterConfig().GetServiceName() != "" || sh.GetLbPolicy() != orig.GetLbPolicy() {
		t.Errorf("shape keeps a name or lost content: %v", sh)
	}
}

// decodeCluster decodes c as the xDS client does.
func decodeCluster(t *testing.T, c *clusterv3.Cluster) *resource.Cluster {
	t.Helper()
	d, err := resource.DecodeBytes(resource.ClusterType, marshal(t, c), "", clientOpts)
	if err != nil {
		t.Fatal(err)
	}
	return d.Msg.(*resource.Cluster)
}

// Decoded clusters that differ only in their names (and in what follows from them, here
// the SNI of their TLS context) share one shape; others do not. Clusters made with NewCluster (not
// pruned) keep their own.
func TestClusterShapesShared(t *testing.T) {
	a := tlsEDSCluster(t, "outbound|9080||a", "svc-a")
	b := tlsEDSCluster(t, "outbound|9080||b", "svc-b")
	ra, rb := decodeCluster(t, a), decodeCluster(t, b)
	if ra.Shape() != rb.Shape() {
		t.Error("two decoded clusters that differ only in their names have separate shapes")
	}
	if ra.Equal(rb) {
		t.Error("clusters with other names are equal")
	}
	c := tlsEDSCluster(t, "outbound|9080||c", "svc-c")
	c.LbPolicy = clusterv3.Cluster_RANDOM
	if rc := decodeCluster(t, c); rc.Shape() == ra.Shape() {
		t.Error("a cluster with another LB policy shares the shape")
	}
	for _, r := range []*resource.Cluster{ra, rb} {
		m, _ := r.Message()
		want := proto.Clone(map[string]*clusterv3.Cluster{ra.Name: a, rb.Name: b}[r.Name])
		resource.Prune(want)
		if !proto.Equal(m, want) {
			t.Errorf("%s: Message of a shared shape is not the pruned cluster: %v", r.Name, m)
		}
	}
	if na, nb := resource.MustCluster(a), resource.MustCluster(a); na.Shape() == nb.Shape() || na.Shape() == ra.Shape() {
		t.Error("NewCluster shares shapes")
	}
}

// tlsEDSCluster is an EDS cluster with Istio's auto-mTLS match, whose SNI istiod derives
// from its name (so unpruned, two services' clusters differ beyond their names).
func tlsEDSCluster(t *testing.T, name, service string) *clusterv3.Cluster {
	t.Helper()
	c := xdstest.EDSCluster(name)
	c.EdsClusterConfig.ServiceName = service
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{{
		Name: "tlsMode-istio",
		TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{Sni: resource.ClusterSNI(name)})}},
	}}
	return c
}

// EDS is the name the endpoints come under for EDS clusters, empty for the others.
func TestClusterEDS(t *testing.T) {
	named := xdstest.EDSCluster("outbound|9080||a")
	named.EdsClusterConfig.ServiceName = "svc-a"
	unnamed := xdstest.EDSCluster("outbound|9080||b")
	unnamed.EdsClusterConfig.ServiceName = ""
	dns := xdstest.StaticCluster("outbound|80||example.com")
	dns.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	custom := xdstest.EDSCluster("custom")
	custom.ClusterDiscoveryType = &clusterv3.Cluster_ClusterType{ClusterType: &clusterv3.Cluster_CustomClusterType{Name: "envoy.clusters.aggregate"}}
	for _, tc := range []struct {
		c    *clusterv3.Cluster
		want string
	}{
		{xdstest.EDSCluster("outbound|9080||c"), "outbound|9080||c"},
		{named, "svc-a"},
		{unnamed, "outbound|9080||b"}, // no service name: the cluster's name
		{xdstest.StaticCluster("BlackHoleCluster"), ""},
		{dns, ""},
		{custom, ""}, // a custom cluster type is not EDS even with an EDS config
	} {
		r := resource.MustCluster(tc.c)
		if r.EDS != tc.want {
			t.Errorf("%s: EDS %q, want %q", tc.c.GetName(), r.EDS, tc.want)
		}
		// The client's dependency on the endpoints is the same name.
		d, err := resource.Decode(resource.ClusterType, mustAny(t, tc.c), "")
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Msg.(*resource.Cluster); got.EDS != tc.want || (tc.want == "") != (len(d.Deps) == 0) || (tc.want != "" && d.Deps[0] != tc.want) {
			t.Errorf("%s: decoded EDS %q deps %v, want %q", tc.c.GetName(), got.EDS, d.Deps, tc.want)
		}
	}
}

func TestClusterEqual(t *testing.T) {
	c := richCluster(t)
	checkKeptEqual(t, c, "typed_extension_protocol_options", resource.MustCluster,
		func(_, _ *resource.Cluster) {
			// Decoded by the client, the two share the shape.
			var dec clusterv3.Cluster
			if err := proto.Unmarshal(withReversedMap(t, c, "typed_extension_protocol_options"), &dec); err != nil {
				t.Fatal(err)
			}
			if da, db := decodeCluster(t, c), decodeCluster(t, &dec); da.Shape() != db.Shape() || !da.Equal(db) {
				t.Error("decoded, the same content in another map order does not share the shape")
			}
		},
		map[string]func(*clusterv3.Cluster){
			"the name":         func(m *clusterv3.Cluster) { m.Name = "outbound|9080||z" },
			"the lb policy":    func(m *clusterv3.Cluster) { m.LbPolicy = clusterv3.Cluster_ROUND_ROBIN },
			"the service name": func(m *clusterv3.Cluster) { m.EdsClusterConfig.ServiceName = "svc-z" },
			"a circuit breaker": func(m *clusterv3.Cluster) {
				m.CircuitBreakers.Thresholds[0].MaxConnections = wrapperspb.UInt32(1)
			},
			"a protocol option": func(m *clusterv3.Cluster) {
				m.TypedExtensionProtocolOptions["istio.other"] = mustAny(t, wrapperspb.String("changed"))
			},
		})
}

// DecodeBytes of a CDS resource gives the Cluster of the pruned message.
func TestDecodeBytesCluster(t *testing.T) {
	check := func(t *testing.T, c *clusterv3.Cluster) {
		t.Helper()
		checkDecodeBytes(t, resource.ClusterType, c, func(r *resource.Cluster) string { return r.Name })
	}
	builtAndRecorded(t, richCluster(t), func(r *dump.Resources) []*clusterv3.Cluster { return r.Clusters }, check)
}

// Message may be called concurrently, each caller getting its own copy of the same
// content (the shape is shared: nobody may change it).
func TestClusterConcurrent(t *testing.T) {
	c := richCluster(t)
	want := proto.Clone(c).(*clusterv3.Cluster)
	checkConcurrentMessage(t, resource.MustCluster(c), want, func(_ int, m *clusterv3.Cluster) {
		m.LbPolicy = clusterv3.Cluster_MAGLEV // the caller's own copy
	})
}
