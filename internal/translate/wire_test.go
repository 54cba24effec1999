package translate

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The translator keeps route configurations in wire form only: once translated, the
// decoded message handed over with the snapshot is released.
func TestTranslateReleasesRouteConfigs(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	snap := m.Snapshot()
	// One no listener uses is released too.
	unused := resource.MustRouteConfig(&routev3.RouteConfiguration{Name: "unused", VirtualHosts: []*routev3.VirtualHost{{Name: "x", Domains: []string{"*"}}}})
	snap.RouteConfigs["unused"] = unused
	defer delete(snap.RouteConfigs, "unused")
	unusedMsg, _ := unused.Message()
	rc := snap.RouteConfigs["9080"]
	before, err := rc.Message()
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := rc.Message(); again != before {
		t.Fatal("before translation, Message does not return the message the route configuration was made from")
	}
	New(Options{}).Translate(snap)
	after, err := rc.Message()
	if err != nil {
		t.Fatal(err)
	}
	if after == before {
		t.Fatal("the translated route configuration still holds its decoded message")
	}
	if !proto.Equal(after, before) {
		t.Fatal("the wire form does not decode to the message it was made from")
	}
	if m, _ := unused.Message(); m == unusedMsg {
		t.Fatal("a route configuration no listener uses still holds its decoded message")
	}
}

// copySnapshot returns a snapshot with copies of s's maps (meshgen's snapshots share
// the mesh's), numbered seq and changed since s.
func copySnapshot(s *resource.Snapshot, seq uint64, ch resource.Changes) *resource.Snapshot {
	c := &resource.Snapshot{Seq: seq, Changes: ch,
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
	editRC(t, snap, "9080", func(rc *routev3.RouteConfiguration) {
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
