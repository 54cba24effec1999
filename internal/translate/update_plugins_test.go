package translate

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/report"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func pluginCfg(ns, name string, prio int32, scope overlay.Scope, ps ...overlay.Plugin) overlay.Config {
	return overlay.Config{Namespace: ns, Name: name, Generation: 1, Priority: prio, Scope: scope, Plugins: ps}
}

func plug(name, conf string) overlay.Plugin {
	return overlay.Plugin{Name: name, Config: json.RawMessage(conf)}
}

// unchanged returns snap as the next translation sees it when nothing of it changed.
func unchanged(snap *resource.State) *resource.State {
	s := *snap
	s.Changes = resource.Changes{Since: snap.Seq}
	return &s
}

// setPlugins hands tr the set and translates snap with nothing of it changed.
func setPlugins(tr *tracked, snap *resource.State, cs ...overlay.Config) Result {
	tr.SetPlugins(overlay.Set{Version: 1, Configs: cs})
	return tr.Translate(unchanged(snap))
}

// routePlugins returns the plugins of every route of objs, by key.
func routePlugins(t *testing.T, objs map[string][]byte) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for k, v := range objs {
		if apisix.KindOf(k) != apisix.KindRoutes {
			continue
		}
		var r struct {
			Plugins map[string]any `json:"plugins"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatal(err)
		}
		out[k] = r.Plugins
	}
	return out
}

func changedKeys(cs apisix.ChangeSet) []string {
	puts, dels := cs.Ordered()
	return append(puts, dels...)
}

func routeTo(name, cluster string, m *routev3.RouteMatch) *routev3.Route {
	return &routev3.Route{Name: name, Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

// scopeMesh has two outbound ports: on 9080 reviews (/api/ and /) and ratings
// (/health only, so it also gets a no-route route); on 9090 reviews (/).
func scopeMesh() *resource.State {
	reviews := "reviews.default.svc.cluster.local"
	rcs := []*routev3.RouteConfiguration{
		{Name: "9080", VirtualHosts: []*routev3.VirtualHost{
			{Name: "reviews", Domains: []string{reviews, "reviews"}, Routes: []*routev3.Route{
				routeTo("api", "reviews", prefix("/api/")), routeTo("all", "reviews", prefix("/"))}},
			{Name: "ratings", Domains: []string{"ratings.default.svc.cluster.local."}, Routes: []*routev3.Route{
				routeTo("health", "ratings", exact("/health"))}},
		}},
		{Name: "9090", VirtualHosts: []*routev3.VirtualHost{
			{Name: "reviews", Domains: []string{reviews}, Routes: []*routev3.Route{routeTo("all", "reviews", prefix("/"))}},
		}},
	}
	return snapshotOf([]*listenerv3.Listener{httpListener(9080, "9080"), httpListener(9090, "9090")}, rcs,
		[]*clusterv3.Cluster{staticCluster("reviews"), staticCluster("ratings")})
}

// A new plugin set re-renders exactly the routes whose plugins it changes, and only
// those its scope selects get the plugin; removing the config restores the
// translation itself.
func TestPluginScopeSelectsRoutes(t *testing.T) {
	const (
		api    = "/routes/out-9080.reviews.0"
		all    = "/routes/out-9080.reviews.1"
		health = "/routes/out-9080.ratings.0"
		nr     = "/routes/out-9080.ratings.nr"
		other  = "/routes/out-9090.reviews.0"
	)
	every := []string{health, nr, api, all, other} // sorted
	tests := []struct {
		scope overlay.Scope
		want  []string
	}{
		{overlay.Scope{}, every},
		{overlay.Scope{Direction: overlay.DirectionOutbound}, every},
		{overlay.Scope{Direction: overlay.DirectionInbound}, nil},
		{overlay.Scope{Hosts: []string{"reviews.default.svc.cluster.local"}}, []string{api, all, other}},
		{overlay.Scope{Hosts: []string{"reviews"}}, []string{api, all}},
		{overlay.Scope{Hosts: []string{"ratings.default.svc.cluster.local", "reviews"}}, []string{health, nr, api, all}},
		{overlay.Scope{Hosts: []string{"ratings.default.svc.cluster.local"}}, []string{health, nr}},
		{overlay.Scope{Hosts: []string{"*.default.svc.cluster.local"}}, every},
		{overlay.Scope{Ports: []uint32{9090}}, []string{other}},
		{overlay.Scope{Paths: []string{"/api/*"}}, []string{api}},
		{overlay.Scope{Paths: []string{"/health"}}, []string{health}},
		{overlay.Scope{Hosts: []string{"*.cluster.local"}, Ports: []uint32{9080}, Paths: []string{"/*"}}, []string{health, nr, api, all}},
		{overlay.Scope{Hosts: []string{"*.cluster.local"}, Ports: []uint32{9080}, Paths: []string{"/"}}, []string{}},
		{overlay.Scope{Ports: []uint32{1}}, nil},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			snap := scopeMesh()
			tr := newTracked(Options{})
			tr.Translate(snap)
			plain := maps.Clone(tr.Objects())
			if got := slices.Sorted(maps.Keys(routePlugins(t, plain))); !slices.Equal(got, every) {
				t.Fatalf("routes %v, want %v", got, every)
			}

			r := setPlugins(tr, snap, pluginCfg("default", "limit", 0, tt.scope, plug("limit-count", `{"count":10,"time_window":60}`)))
			if diff := cmp.Diff(tt.want, changedKeys(r.Changes), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("changed keys (-want +got):\n%s", diff)
			}
			for key, ps := range routePlugins(t, tr.Objects()) {
				got, has := ps["limit-count"]
				if want := slices.Contains(tt.want, key); has != want {
					t.Errorf("%s has limit-count = %v, want %v", key, has, want)
				} else if has && !cmp.Equal(got, map[string]any{"count": 10.0, "time_window": 60.0}) {
					t.Errorf("%s: limit-count = %v", key, got)
				}
			}
			validateAll(t, tr.Objects())

			r = setPlugins(tr, snap)
			if diff := cmp.Diff(tt.want, changedKeys(r.Changes), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("removal: changed keys (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(plain, tr.Objects()); diff != "" {
				t.Errorf("without configs the output must be the translation itself (-plain +got):\n%s", diff)
			}
		})
	}
}

// Inbound and outbound routes are told apart by their listener.
func TestPluginDirection(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 3})
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	r := setPlugins(tr, m.Snapshot(), pluginCfg("ns", "in", 0, overlay.Scope{Direction: overlay.DirectionInbound}, plug("cors", `{}`)))
	if len(r.Changes.Put) == 0 {
		t.Fatal("no inbound route; the test checks nothing")
	}
	for key, ps := range routePlugins(t, tr.Objects()) {
		_, has := ps["cors"]
		if in := strings.HasPrefix(key, "/routes/in-"); has != in {
			t.Errorf("%s has cors = %v", key, has)
		}
		if _, changed := r.Changes.Put[key]; changed != has {
			t.Errorf("%s changed = %v, has cors = %v", key, changed, has)
		}
	}
}

// A plugin that translation produced is kept, and the config's plugin reported as
// shadowed, unless the config overrides it; removing the config brings back the
// translation and its report.
func TestPluginTranslatedKeptUnlessOverridden(t *testing.T) {
	m := meshgen.Generate(meshgen.Options{Services: 4})
	tr := newTracked(Options{})
	plainReport := tr.Translate(m.Snapshot()).Report
	plain := maps.Clone(tr.Objects())
	var split []string // routes whose translation has traffic-split
	for key, ps := range routePlugins(t, plain) {
		if _, ok := ps["traffic-split"]; ok {
			split = append(split, key)
		}
	}
	slices.Sort(split)
	if len(split) < 2 {
		t.Fatalf("%d routes with traffic-split; the test checks little", len(split))
	}
	mine := `{"rules":[{"weighted_upstreams":[{"weight":1}]}]}`

	r := setPlugins(tr, m.Snapshot(), pluginCfg("ns", "x", 0, overlay.Scope{}, plug("traffic-split", mine), plug("cors", `{}`)))
	for key, ps := range routePlugins(t, tr.Objects()) {
		if _, ok := ps["cors"]; !ok {
			t.Errorf("%s: cors not merged", key)
		}
		if !slices.Contains(split, key) {
			if got, _ := json.Marshal(ps["traffic-split"]); string(got) != mine {
				t.Errorf("%s: traffic-split %s, want the config's (nothing to keep)", key, got)
			}
		} else if diff := cmp.Diff(routePlugins(t, plain)[key]["traffic-split"], ps["traffic-split"]); diff != "" {
			t.Errorf("%s: translated traffic-split not kept (-want +got):\n%s", key, diff)
		}
	}
	var shadowed []report.Entry
	for _, e := range r.Report {
		if e.Kind == "plugin_config" {
			shadowed = append(shadowed, e)
		}
	}
	if len(shadowed) != 1 || shadowed[0].Resource != "ns/x" || shadowed[0].Field != "spec.plugins[traffic-split]" ||
		shadowed[0].Severity != report.Ignored ||
		!strings.HasPrefix(shadowed[0].Message, fmt.Sprintf("%d route(s) (first %s) ", len(split), split[0])) {
		t.Errorf("want one shadow report for ns/x traffic-split over %d routes, first %s; got %+v", len(split), split[0], shadowed)
	}

	over := plug("traffic-split", mine)
	over.Override = true
	r = setPlugins(tr, m.Snapshot(), pluginCfg("ns", "x", 0, overlay.Scope{}, over, plug("cors", `{}`)))
	for key, ps := range routePlugins(t, tr.Objects()) {
		if got, _ := json.Marshal(ps["traffic-split"]); string(got) != mine {
			t.Errorf("%s: override not applied: %s", key, got)
		}
	}
	if diff := cmp.Diff(plainReport, r.Report); diff != "" {
		t.Errorf("report with an override (-plain +got):\n%s", diff)
	}

	r = setPlugins(tr, m.Snapshot())
	if diff := cmp.Diff(plain, tr.Objects()); diff != "" {
		t.Errorf("after removal (-plain +got):\n%s", diff)
	}
	if diff := cmp.Diff(plainReport, r.Report); diff != "" {
		t.Errorf("report after removal (-plain +got):\n%s", diff)
	}
}

// Removing one config removes exactly its plugins: what another config decides stays.
func TestPluginRemovalRemovesExactlyItsPlugins(t *testing.T) {
	snap := scopeMesh()
	tr := newTracked(Options{})
	tr.Translate(snap)
	one := pluginCfg("ns", "one", 0, overlay.Scope{}, plug("cors", `{}`))
	two := pluginCfg("ns", "two", 0, overlay.Scope{Ports: []uint32{9080}}, plug("gzip", `{"min_length":20}`), plug("cors", `{"x":1}`))
	setPlugins(tr, snap, one, two)
	r := setPlugins(tr, snap, two)
	plain := routePlugins(t, newTracked(Options{}).Translate(snap).Changes.Put)
	for key, ps := range routePlugins(t, tr.Objects()) {
		want := maps.Clone(plain[key]) // what translation gives: the no-route route's abort
		if strings.HasPrefix(key, "/routes/out-9080.") {
			if want == nil {
				want = map[string]any{}
			}
			want["gzip"], want["cors"] = map[string]any{"min_length": 20.0}, map[string]any{"x": 1.0}
		}
		if diff := cmp.Diff(want, ps, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("%s after removing ns/one (-want +got):\n%s", key, diff)
		}
	}
	if len(r.Changes.Put) != 5 || len(r.Changes.Delete) != 0 {
		t.Errorf("removing ns/one changed %v, want the 5 routes", changedKeys(r.Changes))
	}
}

// An unchanged set changes nothing; adding a config scoped to one host touches only
// that host's routes, and the others keep their plugins.
func TestPluginUnchangedConfigsCauseNoChange(t *testing.T) {
	snap := scopeMesh()
	tr := newTracked(Options{})
	tr.Translate(snap)
	one := pluginCfg("ns", "one", 0, overlay.Scope{}, plug("cors", `{}`))
	setPlugins(tr, snap, one)
	if r := setPlugins(tr, snap, one); !r.Changes.Empty() {
		t.Errorf("republishing an unchanged config changed %v", changedKeys(r.Changes))
	}
	r := setPlugins(tr, snap, one, pluginCfg("ns", "two", 0, overlay.Scope{Hosts: []string{"ratings.default.svc.cluster.local"}}, plug("gzip", `{}`)))
	if diff := cmp.Diff([]string{"/routes/out-9080.ratings.0", "/routes/out-9080.ratings.nr"}, changedKeys(r.Changes)); diff != "" {
		t.Errorf("changed keys (-want +got):\n%s", diff)
	}
	for key, ps := range routePlugins(t, tr.Objects()) {
		if _, ok := ps["cors"]; !ok {
			t.Errorf("unchanged config dropped from %s", key)
		}
	}
}

// A route that an xDS change moves into a config's scope gets its plugins, and loses
// them when it moves out; the change sets hold that route only.
func TestPluginTranslationChangesKeepConfigPlugins(t *testing.T) {
	snapAt := func(seq uint64, path string) *resource.State {
		s := snapshotOf([]*listenerv3.Listener{httpListener(9080, "9080")}, []*routev3.RouteConfiguration{{Name: "9080",
			VirtualHosts: []*routev3.VirtualHost{{Name: "vh", Domains: []string{"a"}, Routes: []*routev3.Route{
				routeTo("r", "c", prefix(path))}}}}}, []*clusterv3.Cluster{staticCluster("c")})
		s.Seq, s.Changes = seq, resource.Changes{Since: seq - 1, RouteConfigs: map[string]struct{}{"9080": {}}}
		return s
	}
	const key = "/routes/out-9080.vh.0"
	tr := newTracked(Options{})
	first := snapAt(1, "/x")
	first.Changes = resource.Changes{Full: true}
	tr.Translate(first)
	setPlugins(tr, first, pluginCfg("ns", "one", 0, overlay.Scope{Paths: []string{"/v2*"}}, plug("cors", `{}`)))
	if _, ok := routePlugins(t, tr.Objects())[key]["cors"]; ok {
		t.Fatal("cors applied outside its scope")
	}
	steps := []struct {
		path string
		cors bool
	}{{"/v2", true}, {"/x", false}}
	for i, st := range steps {
		r := tr.Translate(snapAt(uint64(i+2), st.path))
		if _, ok := routePlugins(t, tr.Objects())[key]["cors"]; ok != st.cors {
			t.Errorf("path %s: cors = %v, want %v", st.path, ok, st.cors)
		}
		if diff := cmp.Diff([]string{key}, changedKeys(r.Changes)); diff != "" {
			t.Errorf("path %s: changed keys (-want +got):\n%s", st.path, diff)
		}
	}
	if r := tr.Translate(unchanged(snapAt(3, "/x"))); !r.Changes.Empty() {
		t.Errorf("no-op step changed %v", changedKeys(r.Changes))
	}
}

// A plugin whose configuration is not JSON is reported and left out; the config's
// other plugins apply.
func TestPluginInvalidConfigReported(t *testing.T) {
	snap := scopeMesh()
	tr := newTracked(Options{})
	tr.Translate(snap)
	r := setPlugins(tr, snap, pluginCfg("ns", "bad", 0, overlay.Scope{}, plug("cors", `{`), plug("gzip", `{}`)))
	for key, ps := range routePlugins(t, tr.Objects()) {
		_, gzip := ps["gzip"]
		_, cors := ps["cors"]
		if !gzip || cors {
			t.Errorf("%s: plugins %v, want gzip and no cors", key, ps)
		}
	}
	if !findEntry(r.Report, "spec.plugins[cors]", report.Invalid, "not JSON") {
		t.Errorf("no report of the invalid plugin: %+v", r.Report)
	}
	if r := setPlugins(tr, snap); findEntry(r.Report, "spec.plugins[cors]", report.Invalid) {
		t.Error("the report outlives the config")
	}
}

// TestPluginRandomSequencesMatchFullRender checks the incremental output and report
// against a new translator given the same set and the mesh, over random xDS and plugin
// set changes; with virtual hosts built on one goroutine and on several.
func TestPluginRandomSequencesMatchFullRender(t *testing.T) {
	for _, tc := range []struct {
		name string
		min  int
	}{{"serial", 1 << 30}, {"parallel", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			withParallelMin(t, tc.min, func() { randomPluginSequence(t) })
		})
	}
}

func randomPluginSequence(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	m := meshgen.Generate(meshgen.Options{Services: 6, Ports: 2})
	hosts := []string{"svc-00000.default.svc.cluster.local", "svc-00001", "svc-00002.ns-2.svc.cluster.local",
		"*.ns-1.svc.cluster.local", "*.svc.cluster.local", "svc-00004.default.svc.cluster.local"}
	names := []string{"cors", "gzip", "traffic-split", "limit-count"}
	randConfigs := func() []overlay.Config {
		var cs []overlay.Config
		for i := 0; i < 5; i++ {
			if rng.Intn(2) == 0 {
				continue
			}
			var sc overlay.Scope
			switch rng.Intn(5) {
			case 1, 2:
				sc.Hosts = []string{hosts[rng.Intn(len(hosts))]}
			case 3:
				sc.Ports = []uint32{uint32(9080 + rng.Intn(2))}
			case 4:
				sc.Paths = []string{[]string{"/api*", "/v2*", "/login/r1"}[rng.Intn(3)]}
			}
			sc.Direction = overlay.Direction(rng.Intn(3))
			p := plug(names[rng.Intn(len(names))], fmt.Sprintf(`{"v":%d}`, rng.Intn(3)))
			p.Override = rng.Intn(2) == 0
			cs = append(cs, pluginCfg("ns", fmt.Sprint("c", i), int32(rng.Intn(2)), sc, p))
		}
		return cs
	}
	tr := newTracked(Options{})
	tr.Translate(m.Snapshot())
	snap := m.Snapshot()
	var set overlay.Set
	changed := 0
	for i := 0; i < 150; i++ {
		var r Result
		switch rng.Intn(4) {
		case 0:
			set = overlay.Set{Version: uint64(i + 1), Configs: randConfigs()}
			tr.SetPlugins(set)
			r = tr.Translate(unchanged(snap))
		case 1:
			snap = m.ChangeEndpoint(rng.Intn(100))
			r = tr.Translate(snap)
		default:
			// A route moves between paths, into and out of path scopes.
			rc := fmt.Sprint(9080 + rng.Intn(2))
			vh := rng.Intn(6)
			m.EditRouteConfig(rc, func(rc *routev3.RouteConfiguration) {
				pm := rc.GetVirtualHosts()[vh].GetRoutes()[0].GetMatch()
				if strings.HasPrefix(pm.GetPrefix(), "/v2") {
					pm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/api/r0"}
				} else {
					pm.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/v2/r0"}
				}
			})
			snap = m.ResendRouteConfigs()
			r = tr.Translate(snap)
		}
		changed += len(r.Changes.Put)
		fresh := newTracked(Options{})
		fresh.SetPlugins(set)
		want := fresh.Translate(m.Snapshot())
		if !sameObjects(want.Changes.Put, tr.Objects()) {
			t.Fatalf("step %d: incremental output differs from a full render (-full +incremental):\n%s",
				i, cmp.Diff(stringMap(want.Changes.Put), stringMap(tr.Objects())))
		}
		if diff := cmp.Diff(want.Report, r.Report); diff != "" {
			t.Fatalf("step %d: report differs from a full render (-full +incremental):\n%s", i, diff)
		}
	}
	if changed == 0 {
		t.Fatal("nothing changed; the test checks nothing")
	}
}

func stringMap(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}
