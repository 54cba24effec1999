package overlay

import (
	"encoding/json"
	"fmt"
	"math/rand"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/report"
)

const portVar = "connection_original_dst"

func route(id string, hosts []string, uri string, port any, plugins map[string]any) apisix.Route {
	r := apisix.Route{ID: id, Hosts: hosts, URI: uri, UpstreamID: "u1", Plugins: plugins}
	if port != nil {
		r.Vars = []apisix.Expr{{portVar, "==", port}}
	}
	return r
}

// merged merges set into a copy of r and returns the route's plugins as APISIX reads
// them (its JSON decoded) and the shadows.
func merged(t testing.TB, set Set, r apisix.Route) (map[string]any, []Shadow) {
	t.Helper()
	shadows := Compile(set, portVar).Merge(&r)
	b, err := apisix.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Plugins map[string]any `json:"plugins"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out.Plugins, shadows
}

func cfg(ns, name string, prio int32, scope Scope, ps ...Plugin) Config {
	return Config{Namespace: ns, Name: name, Generation: 1, Priority: prio, Scope: scope, Plugins: ps}
}

func plugin(name, conf string) Plugin { return Plugin{Name: name, Config: json.RawMessage(conf)} }

func set(cs ...Config) Set { return Set{Version: 1, Configs: cs} }

func TestScopeSelectsRoutes(t *testing.T) {
	routes := []apisix.Route{
		route("a", []string{"reviews.default.svc.cluster.local"}, "/api/v1", 9080, nil),
		route("b", []string{"ratings.default.svc.cluster.local"}, "/api/v1", "9080", nil),
		route("c", []string{"reviews.default.svc.cluster.local"}, "/health", 9090, nil),
		route("d", nil, "/*", nil, nil),
		route("in-e", nil, "/", 8080, nil),
		route("out-f", []string{"x.svc"}, "/", 8080, nil),
		route("g", []string{"Reviews.Default.svc.cluster.local:9080"}, "/", nil, nil),
	}
	limit := plugin("limit-count", `{"count":10,"time_window":60}`)
	tests := []struct {
		scope Scope
		want  []string
	}{
		{Scope{}, []string{"a", "b", "c", "d", "in-e", "out-f", "g"}},
		{Scope{Direction: DirectionInbound}, []string{"in-e"}},
		{Scope{Direction: DirectionOutbound}, []string{"out-f"}},
		{Scope{Direction: DirectionInbound, Ports: []uint32{8080}}, []string{"in-e"}},
		{Scope{Hosts: []string{"reviews.default.svc.cluster.local"}}, []string{"a", "c", "g"}},
		{Scope{Hosts: []string{"REVIEWS.default.svc.cluster.local", "x.svc"}}, []string{"a", "c", "out-f", "g"}},
		{Scope{Hosts: []string{"reviews.default.svc.cluster.local:9080"}}, []string{"g"}},
		{Scope{Hosts: []string{"*.default.svc.cluster.local"}}, []string{"a", "b", "c", "g"}},
		{Scope{Ports: []uint32{9080}}, []string{"a", "b"}},
		{Scope{Paths: []string{"/api/*"}}, []string{"a", "b"}},
		{Scope{Paths: []string{"/health"}}, []string{"c"}},
		{Scope{Hosts: []string{"*.cluster.local"}, Ports: []uint32{9090}}, []string{"c"}},
		{Scope{Ports: []uint32{1}}, nil},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			var got []string
			for _, r := range routes {
				c := cfg("default", "limit", 0, tt.scope, limit)
				ps, shadows := merged(t, set(c), r)
				if len(shadows) > 0 {
					t.Errorf("%s: shadows %v", r.ID, shadows)
				}
				conf, ok := ps["limit-count"]
				if !ok {
					continue
				}
				got = append(got, r.ID)
				if diff := cmp.Diff(map[string]any{"count": 10.0, "time_window": 60.0}, conf); diff != "" {
					t.Errorf("%s: plugin config (-want +got):\n%s", r.ID, diff)
				}
				if !Compile(set(c), portVar).MaySelect(DirectionOf(r.ID), PortOf(r.Vars, portVar), hostsOf(r.Hosts...)) {
					t.Errorf("%s: selected, but MaySelect says the config cannot select it", r.ID)
				}
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("routes with the plugin (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTranslatedPluginsKeptUnlessOverridden(t *testing.T) {
	fault := map[string]any{"abort": map[string]any{"http_status": 503, "percentage": 10}}
	r := route("a", []string{"reviews"}, "/", 9080, map[string]any{"fault-injection": fault})
	want := map[string]any{"abort": map[string]any{"http_status": 503.0, "percentage": 10.0}}

	got, shadows := merged(t, set(cfg("default", "x", 0, Scope{},
		plugin("fault-injection", `{"abort":{"http_status":500}}`), plugin("cors", `{}`))), r)
	if diff := cmp.Diff(want, got["fault-injection"]); diff != "" {
		t.Errorf("translated fault-injection not kept (-want +got):\n%s", diff)
	}
	if _, ok := got["cors"]; !ok {
		t.Errorf("cors not merged: %v", got)
	}
	if diff := cmp.Diff([]Shadow{{Config: "default/x", Plugin: "fault-injection"}}, shadows); diff != "" {
		t.Errorf("shadows (-want +got):\n%s", diff)
	}
	e := shadows[0].Entry(3, "/routes/a")
	if e.Resource != "default/x" || e.Field != "spec.plugins[fault-injection]" || e.Kind != "plugin_config" || e.Severity != report.Ignored {
		t.Errorf("shadow report %+v", e)
	}

	over := plugin("fault-injection", `{"abort":{"http_status":500}}`)
	over.Override = true
	got, shadows = merged(t, set(cfg("default", "x", 0, Scope{}, over, plugin("cors", `{}`))), r)
	if diff := cmp.Diff(map[string]any{"abort": map[string]any{"http_status": 500.0}}, got["fault-injection"]); diff != "" {
		t.Errorf("override not applied (-want +got):\n%s", diff)
	}
	if len(shadows) != 0 {
		t.Errorf("unexpected shadows %+v", shadows)
	}
	if diff := cmp.Diff(map[string]any{"fault-injection": fault}, r.Plugins); diff != "" {
		t.Errorf("merging modified the translated plugins (-want +got):\n%s", diff)
	}

	// Without configs the route is the translation itself.
	before := r
	if shadows := Compile(Set{Version: 2}, portVar).Merge(&r); len(shadows) != 0 || !cmp.Equal(before, r) {
		t.Errorf("an empty set changed the route: %+v, shadows %v", r, shadows)
	}
}

func TestPrecedence(t *testing.T) {
	r := route("a", nil, "/", nil, nil)
	low := cfg("a-ns", "low", 0, Scope{}, plugin("cors", `{"allow_origins":"low"}`), plugin("gzip", `{}`))
	high := cfg("z-ns", "high", 5, Scope{}, plugin("cors", `{"allow_origins":"high"}`))
	if got, _ := merged(t, set(low, high), r); !cmp.Equal(got["cors"], map[string]any{"allow_origins": "high"}) {
		t.Errorf("higher priority must win, got %v", got["cors"])
	}
	// Equal priority: lexically smaller namespace/name wins, whatever the order in the set.
	tie := cfg("a-ns", "m", 0, Scope{}, plugin("cors", `{"allow_origins":"tie"}`))
	for _, order := range [][]Config{{low, tie}, {tie, low}} {
		if got, _ := merged(t, set(order...), r); !cmp.Equal(got["cors"], map[string]any{"allow_origins": "low"}) {
			t.Errorf("a-ns/low must beat a-ns/m, got %v", got["cors"])
		}
	}
	// A config selecting the route by host keeps its rank among those selecting it
	// otherwise.
	byHost := cfg("a-ns", "by-host", 1, Scope{Hosts: []string{"h"}}, plugin("cors", `{"allow_origins":"host"}`))
	r.Hosts = []string{"h"}
	if got, _ := merged(t, set(low, high, byHost), r); !cmp.Equal(got["cors"], map[string]any{"allow_origins": "high"}) {
		t.Errorf("priority 5 must beat a host-scoped priority 1, got %v", got["cors"])
	}
	if got, _ := merged(t, set(low, byHost), r); !cmp.Equal(got["cors"], map[string]any{"allow_origins": "host"}) {
		t.Errorf("a host-scoped priority 1 must beat priority 0, got %v", got["cors"])
	}
}

func TestRemovalRemovesExactlyItsPlugins(t *testing.T) {
	r := route("a", nil, "/", nil, map[string]any{"traffic-split": map[string]any{"rules": []any{}}})
	one := cfg("ns", "one", 0, Scope{}, plugin("cors", `{}`))
	two := cfg("ns", "two", 0, Scope{}, plugin("gzip", `{"min_length":20}`), plugin("cors", `{"x":1}`))
	if got, _ := merged(t, set(one, two), r); !cmp.Equal(got["cors"], map[string]any{}) {
		t.Fatalf("ns/one must decide cors, got %v", got["cors"])
	}
	got, _ := merged(t, set(two), r)
	want := map[string]any{"traffic-split": map[string]any{"rules": []any{}}, "gzip": map[string]any{"min_length": 20.0},
		"cors": map[string]any{"x": 1.0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after removing one (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"ns/one"}, ids(Changed(Compile(set(one, two), portVar), Compile(set(two), portVar)))); diff != "" {
		t.Errorf("changed configs (-want +got):\n%s", diff)
	}
}

func hostsOf(hosts ...string) Hosts {
	var h Hosts
	for _, x := range hosts {
		h.Add(x)
	}
	return h
}

func ids(rs *Rules) []string {
	var out []string
	for _, c := range rs.configs {
		out = append(out, c.ID())
	}
	slices.Sort(out)
	return out
}

func TestChanged(t *testing.T) {
	one := cfg("ns", "one", 0, Scope{}, plugin("cors", `{}`))
	two := cfg("ns", "two", 0, Scope{Hosts: []string{"b"}}, plugin("gzip", `{}`))
	compile := func(v uint64, cs ...Config) *Rules { return Compile(Set{Version: v, Configs: cs}, portVar) }
	// A new version with the same content changes nothing.
	if got := Changed(compile(1, one), compile(2, one)); !got.Empty() {
		t.Errorf("republishing an unchanged config changed %v", ids(got))
	}
	if got := ids(Changed(compile(1, one), compile(2, one, two))); !slices.Equal(got, []string{"ns/two"}) {
		t.Errorf("adding ns/two changed %v", got)
	}
	// A changed config is in the result twice: the old one (for the routes it
	// selected) and the new one (for those it selects now).
	moved := two
	moved.Scope = Scope{Hosts: []string{"c"}}
	got := Changed(compile(1, one, two), compile(2, one, moved))
	if diff := cmp.Diff([]string{"ns/two", "ns/two"}, ids(got)); diff != "" {
		t.Errorf("moving ns/two changed (-want +got):\n%s", diff)
	}
	for _, h := range []string{"b", "c"} {
		if !got.MaySelect(DirectionOutbound, 9080, hostsOf(h)) {
			t.Errorf("a route of host %s is not found after moving ns/two from b to c", h)
		}
	}
	if got.MaySelect(DirectionOutbound, 9080, hostsOf("a")) {
		t.Error("a route of host a is found after moving ns/two from b to c")
	}
	if got := ids(Changed(nil, compile(1, one))); !slices.Equal(got, []string{"ns/one"}) {
		t.Errorf("from no rules: %v", got)
	}
}

func TestInvalidPluginConfigIsReportedAndLeftOut(t *testing.T) {
	c := cfg("ns", "bad", 0, Scope{}, plugin("cors", `{"allow_origins":`), plugin("gzip", `{}`))
	s := set(c)
	rs := Compile(s, portVar)
	want := []report.Entry{{Kind: "plugin_config", Resource: "ns/bad", Field: "spec.plugins[cors]", Severity: report.Invalid,
		Message: "the plugin's configuration is not JSON; the plugin is not applied"}}
	if diff := cmp.Diff(want, rs.Report()); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	got, _ := merged(t, s, route("a", nil, "/", nil, nil))
	if diff := cmp.Diff(map[string]any{"gzip": map[string]any{}}, got); diff != "" {
		t.Errorf("plugins (-want +got):\n%s", diff)
	}
	if len(s.Configs[0].Plugins) != 2 {
		t.Error("Compile modified the set")
	}
}

// Whatever Merge selects, MaySelect (which does not know the paths) says may be
// selected: the translator relies on it to find every route a changed config touches.
func TestMaySelectCoversMerge(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	hosts := []string{"a", "B.ns.svc", "c.ns.svc", "c.ns.svc:80", "x.other"}
	patterns := []string{"a", "b.ns.svc", "*.ns.svc", "*.svc", "C.ns.svc:80", "*"}
	for i := 0; i < 2000; i++ {
		r := route([]string{"in-r", "out-r", "r"}[rng.Intn(3)], nil, []string{"/", "/x", "/x/y"}[rng.Intn(3)],
			[]any{nil, 9080, "9081"}[rng.Intn(3)], nil)
		for _, h := range hosts {
			if rng.Intn(3) == 0 {
				r.Hosts = append(r.Hosts, h)
			}
		}
		var sc Scope
		if rng.Intn(2) == 0 {
			sc.Hosts = []string{patterns[rng.Intn(len(patterns))]}
		}
		if rng.Intn(3) == 0 {
			sc.Ports = []uint32{uint32(9080 + rng.Intn(2))}
		}
		if rng.Intn(3) == 0 {
			sc.Paths = []string{"/x*"}
		}
		sc.Direction = Direction(rng.Intn(3))
		c := cfg("ns", "c", 0, sc, plugin("cors", `{}`))
		got, _ := merged(t, set(c), r)
		_, selected := got["cors"]
		if selected && !Compile(set(c), portVar).MaySelect(DirectionOf(r.ID), PortOf(r.Vars, portVar), hostsOf(r.Hosts...)) {
			t.Fatalf("route %+v is selected by scope %+v, but MaySelect says no", r, sc)
		}
	}
}
