package meshgen

import (
	"fmt"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

type validator interface {
	proto.Message
	ValidateAll() error
}

func TestGenerateCountsAndValidity(t *testing.T) {
	for _, o := range []Options{
		{},
		{Services: 7, Ports: 2, RoutesPerService: 5, Subsets: 3, EndpointsPerCluster: 4},
		{Services: 3, Subsets: -1, RoutesPerService: 1, EndpointsPerCluster: 1},
	} {
		t.Run(fmt.Sprintf("%+v", o), func(t *testing.T) {
			m := Generate(o)
			d := o.withDefaults()
			eds := d.Services * d.Ports * (d.Subsets + 1)
			snap := m.Snapshot()
			if got, want := len(snap.Listeners), d.Ports+2; got != want {
				t.Errorf("%d listeners, want %d", got, want)
			}
			if got, want := len(snap.RouteConfigs), d.Ports; got != want {
				t.Errorf("%d route configs, want %d", got, want)
			}
			if got, want := len(snap.Clusters), eds+4; got != want {
				t.Errorf("%d clusters, want %d", got, want)
			}
			if got, want := len(snap.Endpoints), eds; got != want {
				t.Errorf("%d endpoint sets, want %d", got, want)
			}
			for name, cla := range snap.Endpoints {
				if n := len(cla.Localities[0].Endpoints); n != d.EndpointsPerCluster {
					t.Errorf("%s: %d endpoints, want %d", name, n, d.EndpointsPerCluster)
				}
			}
			for _, src := range snap.RouteConfigs {
				rc := messageOf(t, src)
				if got, want := len(rc.GetVirtualHosts()), d.Services+1; got != want {
					t.Errorf("route config %s: %d virtual hosts, want %d", rc.GetName(), got, want)
				}
				for _, vh := range rc.GetVirtualHosts()[:d.Services] {
					if len(vh.GetRoutes()) != d.RoutesPerService {
						t.Errorf("%s: %d routes, want %d", vh.GetName(), len(vh.GetRoutes()), d.RoutesPerService)
					}
				}
			}
			for typ, msgs := range m.Resources() {
				for _, msg := range msgs {
					if err := msg.(validator).ValidateAll(); err != nil {
						t.Errorf("%s: %v", typ, err)
					}
				}
			}
			checkConsistent(t, snap)
		})
	}
}

// messageOf is the decoded message of a snapshot's cluster or route configuration.
func messageOf[M proto.Message](t *testing.T, r interface{ Message() (M, error) }) M {
	t.Helper()
	m, err := r.Message()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// checkConsistent checks what a client guarantees: every RDS name and every cluster a
// route names exists, and every EDS cluster has its endpoints.
func checkConsistent(t *testing.T, snap *resource.State) {
	t.Helper()
	for _, l := range snap.Listeners {
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if !f.GetTypedConfig().MessageIs(hcm) {
					continue
				}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				if n := hcm.GetRds().GetRouteConfigName(); n != "" && snap.RouteConfigs[n] == nil {
					t.Errorf("listener %s: route config %q missing", l.GetName(), n)
				}
			}
		}
	}
	for _, src := range snap.RouteConfigs {
		for _, vh := range messageOf(t, src).GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				names := []string{r.GetRoute().GetCluster()}
				for _, wc := range r.GetRoute().GetWeightedClusters().GetClusters() {
					names = append(names, wc.GetName())
				}
				for _, n := range names {
					if n != "" && snap.Clusters[n] == nil {
						t.Errorf("route %s/%s: cluster %q missing", vh.GetName(), r.GetName(), n)
					}
				}
			}
		}
	}
	for n, c := range snap.Clusters {
		m := messageOf(t, c)
		if resource.IsEDS(m) && snap.Endpoints[resource.EDSName(m)] == nil {
			t.Errorf("cluster %s: endpoints missing", n)
		}
	}
}

func TestGenerateDeterministic(t *testing.T) {
	o := Options{Services: 20, Ports: 2}
	a, b := Generate(o).Resources(), Generate(o).Resources()
	opts := proto.MarshalOptions{Deterministic: true}
	for typ := range a {
		if len(a[typ]) != len(b[typ]) {
			t.Fatalf("%s: %d vs %d resources", typ, len(a[typ]), len(b[typ]))
		}
		for i := range a[typ] {
			x, _ := opts.Marshal(a[typ][i])
			y, _ := opts.Marshal(b[typ][i])
			if string(x) != string(y) {
				t.Errorf("%s[%d] differs between two generations", typ, i)
			}
		}
	}
}

func TestIstioShapes(t *testing.T) {
	m := Generate(Options{Services: 2})
	snap := m.Snapshot()
	rc := messageOf(t, snap.RouteConfigs["9080"])
	vh := rc.GetVirtualHosts()[0]
	if vh.GetName() != "svc-00000.default.svc.cluster.local:9080" {
		t.Errorf("virtual host %q", vh.GetName())
	}
	wantDomains := []string{"svc-00000.default.svc.cluster.local", "svc-00000.default.svc.cluster.local.", "svc-00000", "svc-00000.default.svc", "svc-00000.default"}
	if fmt.Sprint(vh.GetDomains()) != fmt.Sprint(wantDomains) {
		t.Errorf("domains %v, want %v", vh.GetDomains(), wantDomains)
	}
	if other := rc.GetVirtualHosts()[1]; len(other.GetDomains()) != 4 {
		t.Errorf("service in another namespace: domains %v, want 4 without the short name", other.GetDomains())
	}
	if last := rc.GetVirtualHosts()[len(rc.GetVirtualHosts())-1]; last.GetName() != "allow_any" {
		t.Errorf("last virtual host %q, want allow_any", last.GetName())
	}
	catchAll := vh.GetRoutes()[2]
	if catchAll.GetMatch().GetPrefix() != "/" || len(catchAll.GetRoute().GetWeightedClusters().GetClusters()) != 2 {
		t.Errorf("catch-all route %v", catchAll)
	}
	c := messageOf(t, snap.Clusters["outbound|9080|v1|svc-00000.default.svc.cluster.local"])
	if c.GetLbPolicy() != clusterv3.Cluster_LEAST_REQUEST || len(c.GetTransportSocketMatches()) != 2 ||
		c.GetEdsClusterConfig().GetServiceName() != c.GetName() {
		t.Errorf("cluster %v", c)
	}
	for _, n := range []string{"PassthroughCluster", "BlackHoleCluster", "InboundPassthroughCluster", "inbound|19080||"} {
		if snap.Clusters[n] == nil {
			t.Errorf("cluster %s missing", n)
		}
	}
	for _, n := range []string{"virtualInbound", "virtualOutbound", "0.0.0.0_9080"} {
		if snap.Listeners[n] == nil {
			t.Errorf("listener %s missing", n)
		}
	}
}

func TestChangeEndpoint(t *testing.T) {
	m := Generate(Options{Services: 3})
	first := m.Snapshot()
	before := map[string]*resource.LoadAssignment{}
	for n, e := range first.Endpoints {
		before[n] = e
	}
	name := m.EDSClusters()[4]
	old := first.Endpoints[name]
	snap := m.ChangeEndpoint(4)
	if snap.Seq != first.Seq+1 || snap.Changes.Since != first.Seq || snap.Changes.Full {
		t.Errorf("Seq %d Since %d Full %v", snap.Seq, snap.Changes.Since, snap.Changes.Full)
	}
	if len(snap.Changes.Endpoints) != 1 || len(snap.Changes.Clusters)+len(snap.Changes.Listeners)+len(snap.Changes.RouteConfigs) != 0 {
		t.Fatalf("changes %+v", snap.Changes)
	}
	if _, ok := snap.Changes.Endpoints[name]; !ok {
		t.Fatalf("changed %v, want %s", snap.Changes.Endpoints, name)
	}
	for n, e := range snap.Endpoints {
		if same := before[n] == e; same == (n == name) {
			t.Errorf("%s: pointer unchanged = %v", n, same)
		}
	}
	diffs := 0
	olds, news := &old.Localities[0], &snap.Endpoints[name].Localities[0]
	for i, o := range olds.Endpoints {
		n := news.Endpoints[i]
		if olds.Address(i) != news.Address(i) || o.Port != n.Port || o.Weight != n.Weight || o.Kind != n.Kind || o.Health() != n.Health() {
			diffs++
		}
	}
	if diffs != 1 {
		t.Errorf("%d endpoints differ, want 1", diffs)
	}
	// The served message is the changed one, and valid.
	if cla := m.LoadAssignment(name); !resource.FromCLA(cla).Equal(snap.Endpoints[name]) {
		t.Error("LoadAssignment does not hold the changed endpoints")
	} else if err := cla.ValidateAll(); err != nil {
		t.Error(err)
	}
	// Every call is a real change, even for the same cluster.
	prev := snap.Endpoints[name]
	if next := m.ChangeEndpoint(4); prev.Equal(next.Endpoints[name]) {
		t.Error("second change left the endpoints equal")
	}
}

func TestResend(t *testing.T) {
	m := Generate(Options{Services: 2})
	first := m.Snapshot()
	old := map[string]*resource.RouteConfig{}
	for n, rc := range first.RouteConfigs {
		old[n] = rc
	}
	oldClusters := map[string]*resource.Cluster{}
	for n, c := range first.Clusters {
		oldClusters[n] = c
	}
	snap := m.ResendRouteConfigs()
	if len(snap.Changes.RouteConfigs) != len(old) || len(snap.Changes.Clusters) != 0 {
		t.Errorf("changes %+v", snap.Changes)
	}
	for n, rc := range snap.RouteConfigs {
		if rc == old[n] || !rc.Equal(old[n]) || !proto.Equal(messageOf(t, rc), messageOf(t, old[n])) {
			t.Errorf("route config %s: want a new pointer with equal content", n)
		}
	}
	snap = m.Resend()
	if len(snap.Changes.Clusters) != len(oldClusters) || len(snap.Changes.Endpoints) != len(snap.Endpoints) ||
		len(snap.Changes.Listeners) != len(snap.Listeners) {
		t.Errorf("changes %+v", snap.Changes)
	}
	for n, c := range snap.Clusters {
		if c == oldClusters[n] || !c.Equal(oldClusters[n]) || !proto.Equal(messageOf(t, c), messageOf(t, oldClusters[n])) {
			t.Errorf("cluster %s: want a new pointer with equal content", n)
		}
	}
	anys, err := m.Anys()
	if err != nil {
		t.Fatal(err)
	}
	if len(anys[resource.ClusterType]) != len(snap.Clusters) || anys[resource.ListenerType][0].GetTypeUrl() != resource.ListenerType {
		t.Errorf("Anys: %d clusters", len(anys[resource.ClusterType]))
	}
}

func BenchmarkGenerate1000(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		Generate(Options{Services: 1000})
	}
}
