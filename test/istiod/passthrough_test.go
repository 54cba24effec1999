package istiod_test

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// catchAllCluster returns the cluster of virtualOutbound's tcp_proxy for destinations no
// other listener claims (its chain without a destination port), "" without one.
func catchAllCluster(s *resource.State) string {
	for _, fc := range s.Listeners["virtualOutbound"].GetFilterChains() {
		if fc.GetFilterChainMatch().GetDestinationPort() != nil {
			continue
		}
		for _, f := range fc.GetFilters() {
			tp := &tcpv3.TcpProxy{}
			if f.GetTypedConfig().MessageIs(tp) && f.GetTypedConfig().UnmarshalTo(tp) == nil {
				return tp.GetCluster()
			}
		}
	}
	return ""
}

// answers returns what each outbound route without hosts answers: "original destination"
// for a route to it, else the status of the plugin that answers (mocking: a direct
// response; fault-injection: amesh's own answer).
func answers(t *testing.T, objs map[string][]byte) map[string]string {
	t.Helper()
	out := map[string]string{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/out-") {
			continue
		}
		var r struct {
			Hosts   []string `json:"hosts"`
			Plugins map[string]struct {
				Status int `json:"response_status"`
				Abort  struct {
					Status int `json:"http_status"`
				} `json:"abort"`
			} `json:"plugins"`
		}
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatal(err)
		}
		if len(r.Hosts) > 0 {
			continue
		}
		if _, ok := r.Plugins["amesh-original-dst"]; ok {
			out[k] = "original destination"
		} else if p, ok := r.Plugins["mocking"]; ok {
			out[k] = jsonInt(p.Status)
		} else if p, ok := r.Plugins["fault-injection"]; ok {
			out[k] = jsonInt(p.Abort.Status)
		}
	}
	return out
}

// hasBlockAll reports whether route configuration 9080 has istiod's block_all virtual host.
func hasBlockAll(t *testing.T, s *resource.State) bool {
	rc, err := s.RouteConfigs["9080"].Message()
	if err != nil {
		t.Fatal(err)
	}
	for _, vh := range rc.GetVirtualHosts() {
		if vh.GetName() == "block_all" {
			return true
		}
	}
	return false
}

// TestOutboundTrafficPolicy: istiod's mesh configuration switched to REGISTRY_ONLY while a
// sidecar is connected changes its listeners and route configurations exactly as
// xdstest.RegistryOnlyListener and RegistryOnlyRoutes change the ALLOW_ANY ones (the shapes
// translate's and test/install's tests use: the catch-all outbound chain to
// BlackHoleCluster, the allow_any virtual host to block_all), and nothing else; amesh's
// outbound routes without hosts then answer 502 (block_all) and 503 (BlackHoleCluster)
// where they forwarded to the original destination. Back to ALLOW_ANY, they forward again.
func TestOutboundTrafficPolicy(t *testing.T) {
	requireEnv(t)
	sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	allow := sc.waitFor(t, "virtualOutbound passing through", func(s *resource.State) bool {
		return catchAllCluster(s) == "PassthroughCluster" && s.RouteConfigs["9080"] != nil
	})
	if err := env.istiod.SetOutboundTrafficPolicy("REGISTRY_ONLY"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.istiod.SetOutboundTrafficPolicy("ALLOW_ANY"); err != nil {
			t.Error(err)
		}
	})
	registry := sc.waitFor(t, "virtualOutbound to BlackHoleCluster", func(s *resource.State) bool {
		return catchAllCluster(s) == "BlackHoleCluster"
	})
	if !hasBlockAll(t, registry) {
		// istiod pushes listeners and routes in one push; the routes may come in the
		// snapshot after the listeners'.
		registry = sc.waitFor(t, "route configuration 9080 with block_all", func(s *resource.State) bool { return hasBlockAll(t, s) })
	}
	for _, name := range slices.Sorted(maps.Keys(allow.Listeners)) {
		// Compared as messages: the Any of a filter's config holds bytes whose order
		// differs between encoders.
		if d := cmp.Diff(xdstest.RegistryOnlyListener(allow.Listeners[name]), registry.Listeners[name], protocmp.Transform()); d != "" {
			t.Errorf("listener %s under REGISTRY_ONLY differs from xdstest's (-xdstest +istiod):\n%s", name, d)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(allow.RouteConfigs)) {
		a, err := allow.RouteConfigs[name].Message()
		if err != nil {
			t.Fatal(err)
		}
		got, err := registry.RouteConfigs[name].Message()
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(xdstest.RegistryOnlyRoutes(a), got, protocmp.Transform()); d != "" {
			t.Errorf("route configuration %s under REGISTRY_ONLY differs from xdstest's (-xdstest +istiod):\n%s", name, d)
		}
	}
	if len(registry.Listeners) != len(allow.Listeners) || len(registry.RouteConfigs) != len(allow.RouteConfigs) {
		t.Errorf("REGISTRY_ONLY has %d listeners and %d route configurations, ALLOW_ANY %d and %d",
			len(registry.Listeners), len(registry.RouteConfigs), len(allow.Listeners), len(allow.RouteConfigs))
	}

	translated := func(s *resource.State) map[string]string {
		tr := translate.New(translate.Options{})
		r := tr.Translate(s)
		objs := map[string][]byte{}
		for k, v := range r.Changes.Put {
			objs[k] = v
		}
		return answers(t, objs)
	}
	for _, tc := range []struct {
		name string
		s    *resource.State
		want map[string]string
	}{
		{"ALLOW_ANY", allow, map[string]string{
			"/routes/out-9080.allow_any.any.0":        "original destination",
			"/routes/out-passthrough.tcp_proxy.any.0": "original destination",
		}},
		{"REGISTRY_ONLY", registry, map[string]string{
			"/routes/out-9080.block_all.any.0":        "502",
			"/routes/out-passthrough.tcp_proxy.any.0": "503",
		}},
	} {
		if got := translated(tc.s); !maps.Equal(got, tc.want) {
			t.Errorf("%s: amesh's outbound routes without hosts answer %v, want %v", tc.name, got, tc.want)
		}
	}

	if err := env.istiod.SetOutboundTrafficPolicy("ALLOW_ANY"); err != nil {
		t.Fatal(err)
	}
	sc.waitFor(t, "virtualOutbound passing through again", func(s *resource.State) bool {
		return catchAllCluster(s) == "PassthroughCluster"
	})
}
