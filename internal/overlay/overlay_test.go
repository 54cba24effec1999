package overlay

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// fakeTranslator returns whatever objects the test put in next, as a diff against the
// previous call, like the real translator does.
type fakeTranslator struct {
	next, objects map[string][]byte
}

func (f *fakeTranslator) Translate(*resource.State) translate.Result {
	cs := apisix.Diff(f.objects, f.next)
	prior := translate.PriorOf(f.objects, cs)
	f.objects = f.next
	return translate.Result{Changes: cs, Prior: prior}
}

func route(t testing.TB, id string, hosts []string, uri string, port any, plugins map[string]any) []byte {
	t.Helper()
	r := apisix.Route{ID: id, Hosts: hosts, URI: uri, UpstreamID: "u1", Plugins: plugins}
	if port != nil {
		r.Vars = []apisix.Expr{{"connection_original_dst", "==", port}}
	}
	b, err := apisix.Encode(&r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func plugins(t testing.TB, objects map[string][]byte, key string) map[string]any {
	t.Helper()
	var r struct {
		Plugins map[string]any `json:"plugins"`
	}
	b, ok := objects[key]
	if !ok {
		t.Fatalf("no object %s", key)
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r.Plugins
}

func cfg(ns, name string, prio int32, scope Scope, ps ...Plugin) Config {
	return Config{Namespace: ns, Name: name, Generation: 1, Priority: prio, Scope: scope, Plugins: ps}
}

func plugin(name, conf string) Plugin { return Plugin{Name: name, Config: json.RawMessage(conf)} }

// harness runs the overlay and checks after every step that the change sets it
// returned, applied to what the sink had, give the routes the overlay's digests
// describe and the inner translator's other objects.
type harness struct {
	t     *testing.T
	inner *fakeTranslator
	feed  *Latest
	tr    *Translator
	sink  map[string][]byte
	last  translate.Result
}

func newHarness(t *testing.T, objects map[string][]byte) *harness {
	h := &harness{t: t, inner: &fakeTranslator{next: objects}, feed: &Latest{}, sink: map[string][]byte{}}
	h.tr = NewTranslator(h.inner, h.feed, Options{})
	h.step()
	return h
}

func (h *harness) step() apisix.ChangeSet {
	h.t.Helper()
	h.last = h.tr.Translate(&resource.State{})
	cs := h.last.Changes
	if err := h.last.CheckPrior(h.sink); err != nil {
		h.t.Fatal(err)
	}
	for k, v := range cs.Put {
		h.sink[k] = v
	}
	for _, k := range cs.Delete {
		delete(h.sink, k)
	}
	for k, v := range h.sink {
		if apisix.KindOf(k) != apisix.KindRoutes {
			if !bytes.Equal(v, h.inner.objects[k]) {
				h.t.Fatalf("sink holds %s = %s, the inner translator %s", k, v, h.inner.objects[k])
			}
		} else if d, ok := h.tr.merged[k]; !ok || d != apisix.Hash(v) {
			h.t.Fatalf("sink holds %s, which the overlay does not know as written", k)
		}
	}
	if want := len(h.inner.objects); len(h.sink) != want || len(h.tr.merged) != len(h.tr.routes) {
		h.t.Fatalf("sink holds %d objects, the inner output %d; overlay digests %d for %d routes",
			len(h.sink), want, len(h.tr.merged), len(h.tr.routes))
	}
	return cs
}

func (h *harness) publish(cs ...Config) apisix.ChangeSet {
	h.t.Helper()
	v, _ := h.feed.Current()
	h.feed.Publish(Set{Version: v.Version + 1, Configs: cs})
	return h.step()
}

func changedKeys(cs apisix.ChangeSet) []string {
	puts, dels := cs.Ordered()
	return append(puts, dels...)
}

func TestScopeSelectsRoutes(t *testing.T) {
	objects := map[string][]byte{
		"/routes/a":     route(t, "a", []string{"reviews.default.svc.cluster.local"}, "/api/v1", 9080, nil),
		"/routes/b":     route(t, "b", []string{"ratings.default.svc.cluster.local"}, "/api/v1", "9080", nil),
		"/routes/c":     route(t, "c", []string{"reviews.default.svc.cluster.local"}, "/health", 9090, nil),
		"/routes/d":     route(t, "d", nil, "/*", nil, nil),
		"/routes/in-e":  route(t, "in-e", nil, "/", 8080, nil),
		"/routes/out-f": route(t, "out-f", []string{"x.svc"}, "/", 8080, nil),
		"/upstreams/u":  []byte(`{"id":"u"}`),
	}
	limit := plugin("limit-count", `{"count":10,"time_window":60}`)
	tests := []struct {
		scope Scope
		want  []string
	}{
		{Scope{}, []string{"/routes/a", "/routes/b", "/routes/c", "/routes/d", "/routes/in-e", "/routes/out-f"}},
		{Scope{Direction: DirectionInbound}, []string{"/routes/in-e"}},
		{Scope{Direction: DirectionOutbound}, []string{"/routes/out-f"}},
		{Scope{Direction: DirectionInbound, Ports: []uint32{8080}}, []string{"/routes/in-e"}},
		{Scope{Hosts: []string{"reviews.default.svc.cluster.local"}}, []string{"/routes/a", "/routes/c"}},
		{Scope{Hosts: []string{"*.default.svc.cluster.local"}}, []string{"/routes/a", "/routes/b", "/routes/c"}},
		{Scope{Ports: []uint32{9080}}, []string{"/routes/a", "/routes/b"}},
		{Scope{Paths: []string{"/api/*"}}, []string{"/routes/a", "/routes/b"}},
		{Scope{Paths: []string{"/health"}}, []string{"/routes/c"}},
		{Scope{Hosts: []string{"*.cluster.local"}, Ports: []uint32{9090}}, []string{"/routes/c"}},
		{Scope{Ports: []uint32{1}}, nil},
	}
	for i, tt := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			h := newHarness(t, objects)
			cs := h.publish(cfg("default", "limit", 0, tt.scope, limit))
			if diff := cmp.Diff(tt.want, changedKeys(cs), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("changed keys (-want +got):\n%s", diff)
			}
			for key := range objects {
				_, has := plugins(t, h.sink, key)["limit-count"]
				want := false
				for _, w := range tt.want {
					want = want || w == key
				}
				if has != want {
					t.Errorf("%s has limit-count = %v, want %v", key, has, want)
				}
			}
			if got := plugins(t, h.sink, "/routes/a")["limit-count"]; len(tt.want) > 0 && tt.want[0] == "/routes/a" {
				if diff := cmp.Diff(map[string]any{"count": 10.0, "time_window": 60.0}, got); diff != "" {
					t.Errorf("plugin config (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestTranslatedPluginsKeptUnlessOverridden(t *testing.T) {
	fault := map[string]any{"abort": map[string]any{"http_status": 503, "percentage": 10}}
	h := newHarness(t, map[string][]byte{
		"/routes/a": route(t, "a", []string{"reviews"}, "/", 9080, map[string]any{"fault-injection": fault}),
	})
	want := map[string]any{"abort": map[string]any{"http_status": 503.0, "percentage": 10.0}}

	h.publish(cfg("default", "x", 0, Scope{},
		plugin("fault-injection", `{"abort":{"http_status":500}}`), plugin("cors", `{}`)))
	got := plugins(t, h.sink, "/routes/a")
	if diff := cmp.Diff(want, got["fault-injection"]); diff != "" {
		t.Errorf("translated fault-injection not kept (-want +got):\n%s", diff)
	}
	if _, ok := got["cors"]; !ok {
		t.Errorf("cors not merged: %v", got)
	}
	if len(h.last.Report) != 1 || h.last.Report[0].Resource != "default/x" ||
		h.last.Report[0].Field != "spec.plugins[fault-injection]" {
		t.Errorf("want one shadow report for default/x fault-injection, got %+v", h.last.Report)
	}

	over := plugin("fault-injection", `{"abort":{"http_status":500}}`)
	over.Override = true
	h.publish(cfg("default", "x", 0, Scope{}, over, plugin("cors", `{}`)))
	if diff := cmp.Diff(map[string]any{"abort": map[string]any{"http_status": 500.0}},
		plugins(t, h.sink, "/routes/a")["fault-injection"]); diff != "" {
		t.Errorf("override not applied (-want +got):\n%s", diff)
	}
	if len(h.last.Report) != 0 {
		t.Errorf("unexpected report %+v", h.last.Report)
	}

	// Removing the config brings the translated plugin back and drops cors.
	h.publish()
	if diff := cmp.Diff(map[string]any{"fault-injection": want}, plugins(t, h.sink, "/routes/a")); diff != "" {
		t.Errorf("after removal (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(h.inner.objects, h.sink); diff != "" {
		t.Errorf("without configs the output must be the translation itself:\n%s", diff)
	}
}

func TestPrecedence(t *testing.T) {
	h := newHarness(t, map[string][]byte{"/routes/a": route(t, "a", nil, "/", nil, nil)})
	low := cfg("a-ns", "low", 0, Scope{}, plugin("cors", `{"allow_origins":"low"}`), plugin("gzip", `{}`))
	high := cfg("z-ns", "high", 5, Scope{}, plugin("cors", `{"allow_origins":"high"}`))
	h.publish(low, high)
	if got := plugins(t, h.sink, "/routes/a")["cors"]; !cmp.Equal(got, map[string]any{"allow_origins": "high"}) {
		t.Errorf("higher priority must win, got %v", got)
	}
	// Equal priority: lexically smaller namespace/name wins, whatever the order in the set.
	tie := cfg("a-ns", "m", 0, Scope{}, plugin("cors", `{"allow_origins":"tie"}`))
	for _, order := range [][]Config{{low, tie}, {tie, low}} {
		h.publish(order...)
		if got := plugins(t, h.sink, "/routes/a")["cors"]; !cmp.Equal(got, map[string]any{"allow_origins": "low"}) {
			t.Errorf("a-ns/low must beat a-ns/m, got %v", got)
		}
	}
}

func TestRemovalRemovesExactlyItsPlugins(t *testing.T) {
	h := newHarness(t, map[string][]byte{
		"/routes/a": route(t, "a", nil, "/", nil, map[string]any{"traffic-split": map[string]any{"rules": []any{}}}),
	})
	one := cfg("ns", "one", 0, Scope{}, plugin("cors", `{}`))
	two := cfg("ns", "two", 0, Scope{}, plugin("gzip", `{"min_length":20}`), plugin("cors", `{"x":1}`))
	h.publish(one, two)
	h.publish(two)
	got := plugins(t, h.sink, "/routes/a")
	want := map[string]any{"traffic-split": map[string]any{"rules": []any{}}, "gzip": map[string]any{"min_length": 20.0},
		"cors": map[string]any{"x": 1.0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("after removing one (-want +got):\n%s", diff)
	}
}

func TestUnchangedConfigsCauseNoChange(t *testing.T) {
	h := newHarness(t, map[string][]byte{
		"/routes/a": route(t, "a", nil, "/", nil, nil),
		"/routes/b": route(t, "b", []string{"b"}, "/", nil, nil),
	})
	one := cfg("ns", "one", 0, Scope{}, plugin("cors", `{}`))
	h.publish(one)
	// A new version with the same content changes nothing.
	if cs := h.publish(one); !cs.Empty() {
		t.Errorf("republishing an unchanged config changed %v", changedKeys(cs))
	}
	// Adding a config scoped to b only touches b; a stays, with its plugin.
	cs := h.publish(one, cfg("ns", "two", 0, Scope{Hosts: []string{"b"}}, plugin("gzip", `{}`)))
	if diff := cmp.Diff([]string{"/routes/b"}, changedKeys(cs)); diff != "" {
		t.Errorf("changed keys (-want +got):\n%s", diff)
	}
	if _, ok := plugins(t, h.sink, "/routes/a")["cors"]; !ok {
		t.Error("unchanged config dropped from route a")
	}
}

func TestTranslationChangesKeepConfigPlugins(t *testing.T) {
	h := newHarness(t, map[string][]byte{"/routes/a": route(t, "a", nil, "/", nil, nil)})
	h.publish(cfg("ns", "one", 0, Scope{Paths: []string{"/v2"}}, plugin("cors", `{}`)))
	if _, ok := plugins(t, h.sink, "/routes/a")["cors"]; ok {
		t.Fatal("cors applied outside its scope")
	}
	// The route moves into the scope: the plugin follows, and back out.
	h.inner.next = map[string][]byte{"/routes/a": route(t, "a", nil, "/v2", nil, nil), "/upstreams/u1": []byte(`{}`)}
	cs := h.step()
	if _, ok := plugins(t, h.sink, "/routes/a")["cors"]; !ok {
		t.Fatal("cors not applied to the updated route")
	}
	if diff := cmp.Diff([]string{"/upstreams/u1", "/routes/a"}, changedKeys(cs)); diff != "" {
		t.Errorf("changed keys (-want +got):\n%s", diff)
	}
	h.inner.next = map[string][]byte{"/routes/a": route(t, "a", nil, "/", nil, nil)}
	cs = h.step()
	if _, ok := plugins(t, h.sink, "/routes/a")["cors"]; ok {
		t.Fatal("cors kept on a route that left the scope")
	}
	if diff := cmp.Diff([]string{"/routes/a", "/upstreams/u1"}, changedKeys(cs)); diff != "" {
		t.Errorf("changed keys (-want +got):\n%s", diff)
	}
	// An unchanged translation with unchanged configs changes nothing.
	if cs := h.step(); !cs.Empty() {
		t.Errorf("no-op step changed %v", changedKeys(cs))
	}
}

func TestUndecodableRouteIsPassedThroughAndReported(t *testing.T) {
	h := newHarness(t, map[string][]byte{"/routes/a": []byte(`{"id":"a","uri":7}`)})
	h.publish(cfg("ns", "one", 0, Scope{}, plugin("cors", `{}`)))
	if string(h.sink["/routes/a"]) != `{"id":"a","uri":7}` {
		t.Errorf("route changed: %s", h.sink["/routes/a"])
	}
	if len(h.last.Report) != 1 || h.last.Report[0].Resource != "/routes/a" {
		t.Errorf("want a report for /routes/a, got %+v", h.last.Report)
	}
}

// TestRandomSequencesMatchFullRender checks the incremental output against rendering
// everything from scratch, over random translation and config changes.
func TestRandomSequencesMatchFullRender(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	hosts := []string{"a", "b", "c.ns.svc"}
	uris := []string{"/", "/x", "/x/y"}
	names := []string{"cors", "gzip", "fault-injection", "limit-count"}
	randRoutes := func() map[string][]byte {
		m := map[string][]byte{}
		for i := 0; i < 6; i++ {
			if rng.Intn(3) == 0 {
				continue
			}
			var ps map[string]any
			if rng.Intn(2) == 0 {
				ps = map[string]any{names[rng.Intn(len(names))]: map[string]any{"from": "xds"}}
			}
			id := fmt.Sprint("r", i)
			m["/routes/"+id] = route(t, id, []string{hosts[rng.Intn(3)]}, uris[rng.Intn(3)], 9080+rng.Intn(2), ps)
		}
		return m
	}
	randConfigs := func() []Config {
		var cs []Config
		for i := 0; i < 4; i++ {
			if rng.Intn(2) == 0 {
				continue
			}
			var sc Scope
			switch rng.Intn(4) {
			case 1:
				sc.Hosts = []string{hosts[rng.Intn(3)]}
			case 2:
				sc.Ports = []uint32{uint32(9080 + rng.Intn(2))}
			case 3:
				sc.Paths = []string{"/x*"}
			}
			p := plugin(names[rng.Intn(len(names))], fmt.Sprintf(`{"v":%d}`, rng.Intn(3)))
			p.Override = rng.Intn(2) == 0
			cs = append(cs, cfg("ns", fmt.Sprint("c", i), int32(rng.Intn(2)), sc, p))
		}
		return cs
	}
	h := newHarness(t, randRoutes())
	for i := 0; i < 300; i++ {
		if rng.Intn(2) == 0 {
			h.inner.next = randRoutes()
			h.step()
		} else {
			h.publish(randConfigs()...)
		}
		set, _ := h.feed.Current()
		fresh := NewTranslator(&fakeTranslator{next: h.inner.objects}, staticFeed(set), Options{})
		full := fresh.Translate(&resource.State{}).Changes.Put
		if !sameObjects(full, h.sink) {
			t.Fatalf("step %d: incremental output differs from a full render (-full +incremental):\n%s",
				i, cmp.Diff(full, h.sink))
		}
	}
}

type staticFeed Set

func (s staticFeed) Current() (Set, <-chan struct{}) { return Set(s), nil }

func sameObjects(a, b map[string][]byte) bool { return maps.EqualFunc(a, b, bytes.Equal) }
