package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// TestControllerRunMergesPlugins checks that the controller run measures plugins at
// work: the set built from the fake control plane's mesh selects a tenth of the services,
// and a translator given the set, as the child's agent gives it, merges its plugins into
// exactly those services' routes, with nothing shadowed or failed.
func TestControllerRunMergesPlugins(t *testing.T) {
	const services = 40
	mesh := meshgen.Generate(meshgen.Options{Services: services, Subsets: -1})
	svcs := meshServices(mesh.Resources()[resource.RouteConfigType])
	if len(svcs) != services {
		t.Fatalf("meshServices found %d services, want %d", len(svcs), services)
	}
	line, err := pluginSet(svcs, 0.1)
	if err != nil {
		t.Fatal(err)
	}
	feed, err := staticFeed(line)
	if err != nil {
		t.Fatal(err)
	}
	set, _ := feed.Current()
	selected := map[string]bool{}
	for _, c := range set.Configs {
		selected[c.Scope.Hosts[0]] = true
	}
	if len(selected) != services/10 {
		t.Fatalf("%d services selected, want %d", len(selected), services/10)
	}

	var state resource.State
	state.Apply(meshgen.UpdateOf(mesh.Snapshot()))
	tr := translate.New(translate.Options{})
	tr.SetPlugins(set)
	res := tr.Translate(&state)
	for _, e := range res.Report {
		if e.Kind == "plugin_config" {
			t.Errorf("the plugin set is reported: %+v", e)
		}
	}
	withPlugins := map[string]int{} // by service host, routes carrying the set's plugins
	routes := 0
	for key, b := range res.Changes.Put {
		if apisix.KindOf(key) != apisix.KindRoutes || !strings.HasPrefix(key, "/routes/out-") {
			continue
		}
		var r apisix.Route
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		if len(r.Hosts) == 0 {
			continue // allow_any
		}
		routes++
		_, rewrite := r.Plugins["proxy-rewrite"]
		if rewrite != selected[r.Hosts[0]] {
			t.Errorf("%s (host %s, selected %v): plugins %v", key, r.Hosts[0], selected[r.Hosts[0]], r.Plugins)
		}
		if rewrite {
			withPlugins[r.Hosts[0]]++
		}
		if _, ok := r.Plugins["limit-count"]; ok && !rewrite {
			t.Errorf("%s: limit-count without proxy-rewrite: %v", key, r.Plugins)
		}
	}
	if routes != 3*services {
		t.Fatalf("%d outbound service routes, want %d", routes, 3*services)
	}
	for host := range selected {
		if withPlugins[host] != 3 {
			t.Errorf("%s: %d routes with the set's plugins, want all 3", host, withPlugins[host])
		}
	}
}
