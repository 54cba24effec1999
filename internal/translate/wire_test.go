package translate

import (
	"runtime"
	"strings"
	"testing"
	"weak"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The translator keeps route configurations in wire form only: it keeps no reference
// to the decoded messages an update hands over, of a configuration it translated or
// of one no listener uses.
func TestTranslateKeepsNoDecodedRouteConfigs(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	snap := copySnapshot(m.Snapshot(), 1, resource.Changes{Full: true})
	unused := resource.MustRouteConfig(&routev3.RouteConfiguration{Name: "unused", VirtualHosts: []*routev3.VirtualHost{{Name: "x", Domains: []string{"*"}}}})
	snap.RouteConfigs["unused"] = unused
	snap.Changes.Decoded = map[string]*routev3.RouteConfiguration{}
	var handed []weak.Pointer[routev3.RouteConfiguration]
	for name, rc := range snap.RouteConfigs {
		msg, err := rc.Message() // a message of its own, referenced only from Decoded
		if err != nil {
			t.Fatal(err)
		}
		snap.Changes.Decoded[name] = msg
		handed = append(handed, weak.Make(msg))
	}
	tr := New(Options{})
	if len(tr.Translate(snap).Changes.Put) == 0 {
		t.Fatal("nothing translated; the test checks nothing")
	}
	snap.Done()
	runtime.GC()
	for _, w := range handed {
		if m := w.Value(); m != nil {
			t.Errorf("the translator still references the decoded route configuration %q", m.GetName())
		}
	}
	runtime.KeepAlive(tr)
}

// copySnapshot returns a snapshot with copies of s's maps (meshgen's snapshots share
// the mesh's), numbered seq and changed since s.
func copySnapshot(s *resource.State, seq uint64, ch resource.Changes) *resource.State {
	c := &resource.State{Seq: seq, Changes: ch,
		Listeners: s.Listeners, RouteConfigs: map[string]*resource.RouteConfig{},
		Clusters: map[string]*resource.Cluster{}, Endpoints: map[string]*resource.LoadAssignment{}}
	ch.Since = s.Seq
	c.Changes = ch
	for k, v := range s.RouteConfigs {
		c.RouteConfigs[k] = v
	}
	for k, v := range s.Clusters {
		c.Clusters[k] = v
	}
	for k, v := range s.Endpoints {
		c.Endpoints[k] = v
	}
	return c
}

// Removing a cluster that routes use rebuilds those virtual hosts from their wire form
// (the route configuration is unchanged and was released); adding it back restores the
// output. Both equal a full translation.
func TestClusterRemovalRebuildsVhostsFromWire(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{})
	s1 := m.Snapshot()
	tr.Translate(s1)
	orig := applyChanges(nil, apisix.ChangeSet{Put: tr.Objects()})
	victim := ""
	for _, name := range m.EDSClusters() {
		if len(tr.idsOf(name)) > 0 {
			victim = name
			break
		}
	}
	if victim == "" {
		t.Fatal("no cluster is used by a route")
	}

	gone := resource.Changes{Clusters: map[string]struct{}{victim: {}}, Endpoints: map[string]struct{}{victim: {}}}
	s2 := copySnapshot(s1, s1.Seq+1, gone)
	delete(s2.Clusters, victim)
	delete(s2.Endpoints, victim)
	r := tr.Translate(s2)
	routes := 0
	for k := range r.Changes.Put {
		if apisix.KindOf(k) == apisix.KindRoutes {
			routes++
		}
	}
	if routes == 0 {
		t.Fatalf("removing cluster %s changed no route", victim)
	}
	full := newTracked(Options{})
	full.Translate(copySnapshot(s2, 1, resource.Changes{Full: true}))
	if !sameObjects(full.Objects(), tr.Objects()) {
		t.Fatal("after removing a cluster, the output differs from a full translation")
	}

	back := copySnapshot(s1, s2.Seq+1, gone)
	back.Changes.Since = s2.Seq
	tr.Translate(back)
	if !sameObjects(orig, tr.Objects()) {
		t.Fatal("adding the cluster back does not restore the output")
	}
}

// A change of the route configuration's own settings (here a response header for every
// route) with the same virtual hosts retranslates every route.
func TestRouteConfigSettingsChangeRebuildsRoutes(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	snap := m.ResendRouteConfigs()
	m.EditRouteConfig("9080", func(rc *routev3.RouteConfiguration) {
		rc.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-rc", Value: "on"}}}
	})
	r := tr.Translate(snap)
	changed := 0
	for k, v := range r.Changes.Put {
		if apisix.KindOf(k) == apisix.KindRoutes && strings.Contains(string(v), "x-rc") {
			changed++
		}
	}
	if changed == 0 {
		t.Fatal("a response header added to the route configuration reached no route")
	}
	if want := fullFrom(t, m); !sameObjects(want, tr.Objects()) {
		t.Fatal("after a change of the route configuration's settings, the output differs from a full translation")
	}
}
