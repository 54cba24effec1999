package nginx

import (
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

var xdsTypes = []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType}

// newXDS starts a fake control plane serving res.
func newXDS(t testing.TB, res map[string][]proto.Message) *xdstest.Server {
	t.Helper()
	srv, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	serve(srv, res)
	return srv
}

func serve(srv *xdstest.Server, res map[string][]proto.Message) {
	for _, u := range xdsTypes {
		srv.Set(u, res[u]...)
	}
}

// expected is what the dict must hold for res: the real translator's output for a
// snapshot of exactly those resources.
func expected(t testing.TB, res map[string][]proto.Message) map[string]string {
	return expectedWith(t, res, translate.Options{OriginalDstVar: "server_port"})
}

// expectedWith is expected for a translation with opts (the library's options for the
// instance's variables).
func expectedWith(t testing.TB, res map[string][]proto.Message, opts translate.Options) map[string]string {
	t.Helper()
	snap := &resource.State{Seq: 1, Changes: resource.Changes{Full: true},
		Listeners: map[string]*listenerv3.Listener{}, RouteConfigs: map[string]*resource.RouteConfig{},
		Clusters: map[string]*resource.Cluster{}, Endpoints: map[string]*resource.LoadAssignment{}}
	for _, m := range res[resource.ListenerType] {
		l := m.(*listenerv3.Listener)
		snap.Listeners[l.GetName()] = l
	}
	for _, m := range res[resource.RouteConfigType] {
		r := m.(*routev3.RouteConfiguration)
		snap.RouteConfigs[r.GetName()] = resource.MustRouteConfig(r)
	}
	for _, m := range res[resource.ClusterType] {
		c := m.(*clusterv3.Cluster)
		snap.Clusters[c.GetName()] = resource.MustCluster(c)
	}
	for _, m := range res[resource.EndpointType] {
		e := m.(*endpointv3.ClusterLoadAssignment)
		snap.Endpoints[e.GetClusterName()] = resource.FromCLA(e)
	}
	// A fresh translator's first change set is its complete output.
	r := translate.New(opts).Translate(snap)
	out := map[string]string{}
	for k, v := range r.Changes.Put {
		out[k] = string(v)
	}
	if len(out) == 0 {
		t.Fatal("the translator produced no objects for the test mesh")
	}
	return out
}

func smallMesh(services int) *meshgen.Mesh {
	return meshgen.Generate(meshgen.Options{Services: services, Subsets: 1, EndpointsPerCluster: 2})
}

// checkObjects checks that every value is a JSON object whose id is its key's id.
func checkObjects(t *testing.T, kv map[string]string) {
	t.Helper()
	for k, v := range kv {
		var obj map[string]any
		if err := json.Unmarshal([]byte(v), &obj); err != nil {
			t.Errorf("%s: not a JSON object: %v", k, err)
			continue
		}
		if apisix.KindOf(k) == "" || obj["id"] != k[strings.LastIndexByte(k, '/')+1:] {
			t.Errorf("%s: kind %q, id %v", k, apisix.KindOf(k), obj["id"])
		}
	}
}

// converged waits until every worker has re-read the dict at its current version.
func (n *instance) converged(t *testing.T) dump {
	t.Helper()
	return n.waitDump("all workers to read the current state", func(d dump) bool {
		if len(d.Workers) != n.opts.Workers {
			return false
		}
		for _, w := range d.Workers {
			if d.Version == nil || w.Version != *d.Version || w.Digest != d.Digest || w.Digest != digestOf(d.Keys) {
				return false
			}
		}
		return true
	})
}

func (n *instance) keysPut() float64 {
	v, _ := n.statusMetric(`amesh_apisix_keys_written_total{op="put"}`)
	return v
}

func diffKeys(old, new map[string]string) (changed []string) {
	for k, v := range new {
		if ov, ok := old[k]; !ok || ov != v {
			changed = append(changed, k)
		}
	}
	for k := range old {
		if _, ok := new[k]; !ok {
			changed = append(changed, k)
		}
	}
	return changed
}

func TestInitialUpdateRemove(t *testing.T) {
	mesh := smallMesh(3)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 2})

	// Initial configuration: exactly the translator's output, read by both workers.
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return d.version() != 0 && len(d.Keys) == len(want) })
	if diff := cmp.Diff(want, d.Keys); diff != "" {
		t.Fatalf("dict (-want +got):\n%s", diff)
	}
	checkObjects(t, d.Keys)
	d = n.converged(t)
	v1 := d.version()
	if d.Loads != 1 {
		t.Errorf("library loaded %d times, want 1", d.Loads)
	}

	// An endpoint update: only the affected keys change, one version bump.
	put0 := n.keysPut()
	mesh.ChangeEndpoint(1) // edsNames alternate default and v1 subset clusters; routes use v1
	res2 := mesh.Resources()
	want2 := expected(t, res2)
	changed := diffKeys(want, want2)
	if len(changed) == 0 {
		t.Fatal("the endpoint change changes no APISIX object")
	}
	if err := xds.Update(res2[resource.EndpointType]...); err != nil {
		t.Fatal(err)
	}
	d = n.waitNewVersion(v1)
	if d.version() != v1+1 {
		t.Errorf("version %d after one update, want %d (one bump)", d.version(), v1+1)
	}
	if diff := cmp.Diff(want2, d.Keys); diff != "" {
		t.Errorf("dict after update (-want +got):\n%s", diff)
	}
	waitFor(t, "the status server to count the keys", func() bool { return n.keysPut()-put0 == float64(len(changed)) })
	d = n.converged(t)

	// Removing a cluster and its endpoints deletes its upstream(s).
	var victim *clusterv3.Cluster
	for _, m := range res2[resource.ClusterType] {
		if c := m.(*clusterv3.Cluster); strings.Contains(c.GetName(), "|v1|") {
			victim = c // a subset cluster that routes use
		}
	}
	res3 := maps.Clone(res2)
	res3[resource.ClusterType] = without(res2[resource.ClusterType], victim)
	res3[resource.EndpointType] = withoutName(res2[resource.EndpointType], resource.EDSName(victim))
	want3 := expected(t, res3)
	removed := 0
	for k := range want2 {
		if _, ok := want3[k]; !ok {
			removed++
		}
	}
	if removed == 0 {
		t.Fatalf("removing cluster %s removes no APISIX object", victim.GetName())
	}
	serve(xds, res3)
	d = n.waitDump("the removal", func(d dump) bool { return cmp.Equal(want3, d.Keys) })
	if d.version() <= v1+1 {
		t.Errorf("version %d after removal, want > %d", d.version(), v1+1)
	}
	n.converged(t)
}

func without(ms []proto.Message, drop proto.Message) []proto.Message {
	var out []proto.Message
	for _, m := range ms {
		if m != drop {
			out = append(out, m)
		}
	}
	return out
}

func withoutName(ms []proto.Message, name string) []proto.Message {
	var out []proto.Message
	for _, m := range ms {
		if m.(*endpointv3.ClusterLoadAssignment).GetClusterName() != name {
			out = append(out, m)
		}
	}
	return out
}

// An identical resend (SotW resends every resource of a type on any change) must not
// bump the version: after it, the next real change is exactly one bump away.
func TestIdenticalResendDoesNotBump(t *testing.T) {
	mesh := smallMesh(2)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 1, Protocol: "sotw"})
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(want, d.Keys) })
	v1 := d.version()

	for range 3 {
		mark := xds.Mark()
		serve(xds, mesh.Resources()) // same content, new cache versions: resent
		for _, u := range xdsTypes {
			if _, err := xds.WaitRequest(t.Context(), mark, func(r xdstest.Request) bool {
				return r.TypeURL() == u && r.SotW.GetResponseNonce() != "" && !r.IsNACK() && r.SotW.GetVersionInfo() != ""
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	mesh.ChangeEndpoint(1)
	res2 := mesh.Resources()
	if err := xds.Update(res2[resource.EndpointType]...); err != nil {
		t.Fatal(err)
	}
	d = n.waitDump("the update", func(d dump) bool { return cmp.Equal(expected(t, res2), d.Keys) })
	if d.version() != v1+1 {
		t.Errorf("version %d, want %d: identical resends bumped it", d.version(), v1+1)
	}
}

func TestReloadAndKilledWorkerRecover(t *testing.T) {
	mesh := smallMesh(3)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 2})
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(want, d.Keys) })
	loader, v := d.LoaderPID, d.version()

	// kill -9 of the process running the library: nginx respawns it, the new process
	// loads the library again and rewrites the full state from the control plane.
	if err := killPID(loader); err != nil {
		t.Fatal(err)
	}
	d = n.waitDump("a respawned worker to load the library", func(d dump) bool {
		return d.LoaderPID != loader && d.Loads == 2 && d.version() > v && cmp.Equal(want, d.Keys)
	})
	loader, v = d.LoaderPID, d.version()
	n.converged(t)

	// nginx -s reload: new workers, the new worker 0 loads the library; the old one
	// exits gracefully (nginx's SIGQUIT handling must still work with Go loaded).
	old := n.workerPIDs()
	n.signal("reload")
	d = n.waitDump("the reloaded worker to load the library", func(d dump) bool {
		return d.LoaderPID != loader && d.version() > v && cmp.Equal(want, d.Keys)
	})
	waitFor(t, "the old workers to exit", func() bool {
		for _, p := range old {
			if alive(p) {
				return false
			}
		}
		return true
	})
	v = d.version()
	n.converged(t)

	// The new process follows updates.
	mesh.ChangeEndpoint(3)
	res2 := mesh.Resources()
	if err := xds.Update(res2[resource.EndpointType]...); err != nil {
		t.Fatal(err)
	}
	want2 := expected(t, res2)
	d = n.waitDump("the update after reload", func(d dump) bool { return cmp.Equal(want2, d.Keys) })
	if d.version() != v+1 {
		t.Errorf("version %d, want %d", d.version(), v+1)
	}
	n.converged(t)

	// nginx -s quit stops it gracefully.
	n.signal("quit")
	select {
	case <-n.exited:
	case <-timeout():
		t.Fatal("nginx did not quit")
	}
}

func TestXDSServerGoneKeepsLastConfig(t *testing.T) {
	mesh := smallMesh(2)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 1})
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(want, d.Keys) })
	v := d.version()

	xds.Stop()
	waitFor(t, "the client to see the server gone", func() bool {
		c, ok := n.statusMetric("amesh_xds_connected")
		return ok && c == 0
	})
	d = n.dump()
	if d.version() != v || !cmp.Equal(want, d.Keys) {
		t.Errorf("state changed while the server was gone: version %d (was %d)", d.version(), v)
	}

	// The server comes back with a change: the client reconnects and applies it.
	mesh.ChangeEndpoint(1)
	res2 := mesh.Resources()
	serve(xds, res2)
	if err := xds.Start(); err != nil {
		t.Fatal(err)
	}
	want2 := expected(t, res2)
	d = n.waitDump("the change after reconnecting", func(d dump) bool { return cmp.Equal(want2, d.Keys) })
	if d.version() <= v {
		t.Errorf("version %d, want > %d", d.version(), v)
	}
}

func TestDictFullReportedAndRecovered(t *testing.T) {
	big := meshgen.Generate(meshgen.Options{Services: 300, Subsets: 1, EndpointsPerCluster: 5})
	res := big.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 1, DictSize: "128k"})

	waitFor(t, "the full dict to be reported", func() bool {
		e, ok := n.statusMetric("amesh_apisix_write_errors_total")
		return ok && e >= 2 && n.logContains("no memory") // reported and retried
	})
	if d := n.dump(); d.version() != 0 {
		t.Errorf("version %d set although the batch did not fit", d.version())
	}

	// Freed: the mesh shrinks, the retried batch (now smaller) fits.
	small := smallMesh(2)
	serve(xds, small.Resources())
	want := expected(t, small.Resources())
	d := n.waitDump("the smaller configuration", func(d dump) bool { return d.version() != 0 && cmp.Equal(want, d.Keys) })
	v := d.version()

	// Enlarged: the big mesh again does not fit; a reload with a larger dict does.
	errs, _ := n.statusMetric("amesh_apisix_write_errors_total")
	serve(xds, res)
	waitFor(t, "the next full dict error", func() bool {
		e, ok := n.statusMetric("amesh_apisix_write_errors_total")
		return ok && e > errs
	})
	if got := n.version(); got != v {
		t.Errorf("version changed to %d by a batch that did not fit", got)
	}
	n.opts.DictSize = "64m"
	n.writeConf()
	n.signal("reload")
	wantBig := expected(t, res)
	n.waitDump("the big configuration after enlarging the dict", func(d dump) bool {
		return d.version() > v && cmp.Equal(wantBig, d.Keys)
	})
}

func killPID(pid int) error {
	if pid <= 0 {
		return fmt.Errorf("no pid")
	}
	return sysKill(pid)
}

// A second initial() in the same process stops the running agent and starts a new
// one on the (here: same) zones, which rewrites the state and bumps the version.
func TestSecondInitialInSameProcess(t *testing.T) {
	mesh := smallMesh(2)
	res := mesh.Resources()
	xds := newXDS(t, res)
	n := start(t, xds, options{Workers: 1})
	want := expected(t, res)
	d := n.waitDump("the initial configuration", func(d dump) bool { return cmp.Equal(want, d.Keys) })
	pid, v := d.LoaderPID, d.version()

	if _, err := n.get("/reinit"); err != nil {
		t.Fatal(err)
	}
	d = n.waitDump("the second instance's first batch", func(d dump) bool {
		return d.Loads == 2 && d.version() > v && cmp.Equal(want, d.Keys)
	})
	if d.LoaderPID != pid {
		t.Errorf("loader pid %d, want the same process %d", d.LoaderPID, pid)
	}
	waitFor(t, "the first instance to stop", func() bool { return n.logContains("msg=stopped") })

	// Only the new instance writes: one update, one bump.
	v = d.version()
	mesh.ChangeEndpoint(1)
	res2 := mesh.Resources()
	if err := xds.Update(res2[resource.EndpointType]...); err != nil {
		t.Fatal(err)
	}
	want2 := expected(t, res2)
	d = n.waitDump("the update", func(d dump) bool { return cmp.Equal(want2, d.Keys) })
	if d.version() != v+1 {
		t.Errorf("version %d, want %d (one bump from one instance)", d.version(), v+1)
	}
}
