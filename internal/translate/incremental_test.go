package translate

import (
	"fmt"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
)

// fullFrom translates snap from scratch (the reference for incremental results).
func fullFrom(t *testing.T, m *meshgen.Mesh) map[string][]byte {
	t.Helper()
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	return tr.Objects()
}

// applyChanges applies a change set to a copy of objs.
func applyChanges(objs map[string][]byte, cs apisix.ChangeSet) map[string][]byte {
	out := make(map[string][]byte, len(objs))
	for k, v := range objs {
		out[k] = v
	}
	for k, v := range cs.Put {
		out[k] = v
	}
	for _, k := range cs.Delete {
		delete(out, k)
	}
	return out
}

func TestIncrementalEndpointChange(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	validateAll(t, tr.Objects())
	prev := applyChanges(nil, apisix.ChangeSet{Put: tr.Objects()})
	names := m.EDSClusters()
	hits := 0
	for i := 0; i < 6; i++ {
		referenced := len(tr.idsOf(names[i*7%len(names)])) > 0
		if referenced {
			hits++
		}
		r := tr.Translate(m.ChangeEndpoint(i * 7))
		if referenced != (len(r.Changes.Put) > 0) || len(r.Changes.Delete) != 0 {
			t.Fatalf("endpoint change %d: %d puts, %d deletes", i, len(r.Changes.Put), len(r.Changes.Delete))
		}
		for k := range r.Changes.Put {
			if apisix.KindOf(k) != apisix.KindUpstreams {
				t.Errorf("endpoint change touched %s", k)
			}
		}
		prev = applyChanges(prev, r.Changes)
		if !sameObjects(prev, tr.Objects()) {
			t.Fatal("change set does not turn the previous output into the current one")
		}
		if want := fullFrom(t, m); !sameObjects(want, tr.Objects()) {
			t.Fatal("incremental output differs from a full translation")
		}
	}
	if hits == 0 {
		t.Fatal("no changed cluster was referenced by a route; the test checks nothing")
	}
}

func TestIncrementalResendIsNoop(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	before := len(tr.Objects())
	r := tr.Translate(m.ResendRouteConfigs())
	if !r.Changes.Empty() {
		t.Fatalf("an unchanged resend of the route configurations produced changes: %d puts", len(r.Changes.Put))
	}
	r = tr.Translate(m.Resend())
	if !r.Changes.Empty() {
		t.Fatalf("an unchanged resend of everything produced changes: %d puts", len(r.Changes.Put))
	}
	if len(tr.Objects()) != before {
		t.Fatalf("objects %d -> %d after resends", before, len(tr.Objects()))
	}
}

func TestSkippedSnapshotFallsBackToFull(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 5})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	m.ChangeEndpoint(1)      // not seen by tr
	s := m.ChangeEndpoint(2) // Since does not match tr's last Seq
	tr.Translate(s)
	if want := fullFrom(t, m); !sameObjects(want, tr.Objects()) {
		t.Fatal("after a skipped snapshot the output differs from a full translation")
	}
}

// A resend in which one virtual host differs retranslates that virtual host only, and
// the next unchanged resend (compared by wire form) changes nothing.
// Run with virtual hosts built one by one and on every core.
func TestIncrementalResendWithOneChangedVhost(t *testing.T) {
	for _, tc := range []struct {
		name string
		min  int
	}{{"serial", 1 << 30}, {"parallel", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			resendWithOneChangedVhost(t, tc.min)
		})
	}
}

func resendWithOneChangedVhost(t *testing.T, parallelMin int) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{ParallelMin: parallelMin})
	tr.Translate(m.Snapshot())
	prev := applyChanges(nil, apisix.ChangeSet{Put: tr.Objects()})
	tr.Translate(m.ResendRouteConfigs())

	snap := m.ResendRouteConfigs()
	m.EditRouteConfig("9080", func(rc *routev3.RouteConfiguration) {
		rc.GetVirtualHosts()[3].GetRoutes()[1].GetMatch().PathSpecifier = &routev3.RouteMatch_Path{Path: "/changed"}
	})
	r := tr.Translate(snap)
	if len(r.Changes.Put) != 1 || len(r.Changes.Delete) != 0 {
		t.Fatalf("one changed route: %d puts, %d deletes, want 1 put", len(r.Changes.Put), len(r.Changes.Delete))
	}
	for k, v := range r.Changes.Put {
		if apisix.KindOf(k) != apisix.KindRoutes || !strings.Contains(string(v), `"/changed"`) {
			t.Errorf("unexpected put %s: %s", k, v)
		}
	}
	prev = applyChanges(prev, r.Changes)
	if want := fullFrom(t, m); !sameObjects(want, tr.Objects()) || !sameObjects(prev, want) {
		t.Fatal("after a resend with one changed virtual host the output differs from a full translation")
	}
	if r := tr.Translate(m.ResendRouteConfigs()); !r.Changes.Empty() {
		t.Fatalf("unchanged resend after a change: %d puts, %d deletes", len(r.Changes.Put), len(r.Changes.Delete))
	}
}

// A cluster no route uses gets no nodes built (only its report); when a route starts
// using it, its upstream is built in full: the output and report equal a full
// translation's.
func TestIncrementalRouteStartsUsingCluster(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 20})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	unused := ""
	for _, n := range m.EDSClusters() {
		if len(tr.idsOf(n)) == 0 && m.Snapshot().Endpoints[n].NumEndpoints() > 0 {
			unused = n
			break
		}
	}
	if unused == "" {
		t.Fatal("meshgen has no unused cluster with endpoints")
	}
	snap := m.ResendRouteConfigs()
	changed := false
	for name := range snap.RouteConfigs {
		m.EditRouteConfig(name, func(rc *routev3.RouteConfiguration) {
			for _, vh := range rc.GetVirtualHosts() {
				for _, r := range vh.GetRoutes() {
					if !changed && r.GetRoute().GetCluster() != "" {
						r.GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: unused}
						changed = true
					}
				}
			}
		})
	}
	if !changed {
		t.Fatal("no single-cluster route")
	}
	r := tr.Translate(snap)
	built := 0
	for k, u := range r.Changes.Put {
		if apisix.KindOf(k) == apisix.KindUpstreams && strings.Contains(string(u), `"name":"`+unused+`"`) {
			built++
			if !strings.Contains(string(u), `"nodes":[{`) {
				t.Errorf("upstream %s of the newly used cluster has no nodes: %s", k, u)
			}
		}
	}
	if built == 0 {
		t.Fatal("no upstream for the newly used cluster")
	}
	full := newTracked(Options{})
	fr := full.Translate(snap)
	if !sameObjects(full.Objects(), tr.Objects()) {
		t.Fatal("output differs from a full translation")
	}
	if fmt.Sprint(fr.Report) != fmt.Sprint(r.Report) {
		t.Fatalf("report differs from a full translation:\n%v\n%v", r.Report, fr.Report)
	}
}
