package istiod_test

import (
	"context"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

const (
	reviews = "reviews.default.svc.cluster.local"
	ratings = "ratings.default.svc.cluster.local"
	details = "details.default.svc.cluster.local"
	mysqldb = "mysqldb.default.svc.cluster.local"
)

func outbound(port, subset, host string) string {
	return "outbound|" + port + "|" + subset + "|" + host
}

var protocols = []client.Protocol{client.Delta, client.SotW}

// TestInitialSync: amesh connected as the productpage sidecar receives the complete config
// istiod computes from the Kubernetes objects and the Istio CRDs, over both ADS variants.
func TestInitialSync(t *testing.T) {
	requireEnv(t)
	mysqlVIP := clusterIP(t, "mysqldb")
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			snap := sc.next(t, mustHappen)
			if !snap.Changes.Full {
				t.Errorf("first snapshot: Changes.Full = false")
			}
			select {
			case <-sc.c.Ready():
			default:
				t.Errorf("Ready not closed after the first snapshot")
			}
			for _, l := range []string{"virtualOutbound", "virtualInbound", "0.0.0.0_9080", mysqlVIP + "_3306"} {
				if snap.Listeners[l] == nil {
					t.Errorf("listener %q missing; have %v", l, keys(snap.Listeners))
				}
			}
			rc := snap.RouteConfigs["9080"]
			if rc == nil {
				t.Fatalf("route config 9080 missing; have %v", keys(snap.RouteConfigs))
			}
			for _, h := range []string{reviews, ratings, details} {
				if vhost(t, rc, h) == nil {
					t.Errorf("route config 9080 has no virtual host for %s", h)
				}
			}
			if got := routeNames(vhost(t, rc, reviews)); !slices.Equal(got, []string{"jason-v2-fault", "health-exact", "api-regex-rewrite", "old-redirect", "teapot", "default-weighted"}) {
				t.Errorf("reviews routes = %v, want the VirtualService's order", got)
			}
			for _, c := range []string{
				outbound("9080", "", reviews), outbound("9080", "v1", reviews), outbound("9080", "v2", reviews),
				outbound("9080", "v1", ratings), outbound("9080", "v2", ratings),
				outbound("3306", "v1", mysqldb), outbound("9080", "", details),
				"inbound|19080||", "BlackHoleCluster", "PassthroughCluster", "InboundPassthroughCluster",
			} {
				if snap.Clusters[c] == nil {
					t.Errorf("cluster %q missing", c)
				}
			}
			wantEPs := map[string][]string{
				outbound("9080", "v1", reviews): {"192.0.2.21:9080"},
				outbound("9080", "v2", reviews): {"192.0.2.22:9080", "192.0.2.23:9080"},
				outbound("9080", "", reviews):   {"192.0.2.21:9080", "192.0.2.22:9080", "192.0.2.23:9080"},
				outbound("9080", "v2", ratings): {"192.0.2.32:9080"},
				outbound("3306", "v1", mysqldb): {"192.0.2.41:3306"},
				outbound("9080", "", details):   {"127.0.0.51:9080"},
			}
			for name, want := range wantEPs {
				if got := endpoints(snap.Endpoints[name]); !slices.Equal(got, want) {
					t.Errorf("endpoints of %s = %v, want %v", name, got, want)
				}
			}
			if len(snap.Missing) > 0 {
				t.Errorf("missing resources: %v", snap.Missing)
			}
			st := sc.c.Status()
			for url, ts := range st.Types {
				if ts.NACKs > 0 {
					t.Errorf("%s: %d NACKs, last %q", url, ts.NACKs, ts.LastNACK)
				}
			}
		})
	}
}

// TestIncrementalChanges: a VirtualService edit changes the route config only, an endpoint edit
// the endpoints only; everything else keeps its pointer (the Snapshot contract the translator's
// incremental work relies on), over both ADS variants.
func TestIncrementalChanges(t *testing.T) {
	requireEnv(t)
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			// Each state the sidecar helper returns is a copy of its own: base stays
			// as it was while later updates are applied.
			base := sc.next(t, mustHappen)

			// 1. Shift the ratings weights 50/50 -> 90/10.
			if w := defaultWeights(t, base, ratings); !slices.Equal(w, []uint32{50, 50}) {
				t.Fatalf("ratings weights = %v before the edit, want the testdata's 50/50", w)
			}
			apply(t, ratingsVS(90, 10))
			t.Cleanup(func() {
				apply(t, ratingsVS(50, 50))
				sc.waitFor(t, "ratings weights back to 50/50", func(s *resource.State) bool {
					return slices.Equal(defaultWeights(t, s, ratings), []uint32{50, 50})
				})
			})
			snap := sc.waitFor(t, "ratings weights 90/10", func(s *resource.State) bool {
				return slices.Equal(defaultWeights(t, s, ratings), []uint32{90, 10})
			})
			if _, ok := snap.Changes.RouteConfigs["9080"]; !ok {
				t.Errorf("Changes.RouteConfigs = %v, want 9080", snap.Changes.RouteConfigs)
			}
			if len(snap.Changes.Endpoints) > 0 {
				t.Errorf("a route edit changed endpoints %v", keysSet(snap.Changes.Endpoints))
			}
			sameContent(t, base.Clusters, snap.Clusters, nil)
			sameContent(t, base.Endpoints, snap.Endpoints, nil)
			base = snap

			// 2. A new v2 pod of reviews joins the EndpointSlice.
			pod, slice := reviewsV2c(t)
			apply(t, pod)
			apply(t, slice)
			t.Cleanup(func() {
				removeReviewsV2c(t)
				sc.waitFor(t, "reviews v2 endpoint removed", func(s *resource.State) bool {
					return !slices.Contains(endpoints(s.Endpoints[outbound("9080", "v2", reviews)]), "192.0.2.24:9080")
				})
			})
			snap = sc.waitFor(t, "new reviews v2 endpoint", func(s *resource.State) bool {
				return slices.Contains(endpoints(s.Endpoints[outbound("9080", "v2", reviews)]), "192.0.2.24:9080")
			})
			if len(snap.Changes.Listeners)+len(snap.Changes.RouteConfigs)+len(snap.Changes.Clusters) > 0 || snap.Changes.Full {
				t.Errorf("an endpoint edit changed more than endpoints: %+v", snap.Changes)
			}
			changed := map[string]bool{outbound("9080", "v2", reviews): true, outbound("9080", "", reviews): true}
			for name := range snap.Changes.Endpoints {
				if !changed[name] {
					t.Errorf("endpoints %s reported changed", name)
				}
			}
			sameContent(t, base.Endpoints, snap.Endpoints, changed)
			sameContent(t, base.RouteConfigs, snap.RouteConfigs, nil)
			sameContent(t, base.Listeners, snap.Listeners, nil)
		})
	}
}

// TestIdenticalPush: istiod pushes the complete, unchanged config again (its debug trigger does
// what any unrelated config change does). No resource may change content. (The APISIX-level
// test asserts that no version bump follows.)
//
// istiod does not serialize deterministically: protobuf maps (filter_metadata, Struct fields,
// typed_extension_protocol_options) come out in random order, so an identical cluster can
// arrive with different bytes. The client compares such resources with the accepted ones
// and publishes nothing for them; a snapshot that is published anyway must at least have
// equal content.
func TestIdenticalPush(t *testing.T) {
	requireEnv(t)
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			base := sc.next(t, mustHappen)
			before := sc.c.Status().Types[resource.ClusterType].Responses
			forcePush(t)
			waitUntil(t, "istiod's forced push reaches the client", func() bool {
				return sc.c.Status().Types[resource.ClusterType].Responses > before
			})
			ctx, cancel := context.WithTimeout(context.Background(), quiet)
			defer cancel()
			for {
				snap, err := sc.apply(ctx)
				if err != nil {
					break // quiet: nothing (more) published
				}
				t.Errorf("identical push published snapshot %d: %d listeners, %d route configs, %d clusters, %d endpoints named changed (same content)",
					snap.Seq, len(snap.Changes.Listeners), len(snap.Changes.RouteConfigs), len(snap.Changes.Clusters), len(snap.Changes.Endpoints))
				sameContent(t, base.Listeners, snap.Listeners, nil)
				sameContent(t, base.RouteConfigs, snap.RouteConfigs, nil)
				sameContent(t, base.Clusters, snap.Clusters, nil)
				sameContent(t, base.Endpoints, snap.Endpoints, nil)
				base = snap
			}
		})
	}
}

// forcePush asks istiod for a full push to every connected proxy.
func forcePush(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+env.istiod.HTTPAddr+"/debug/adsz?push=true", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/debug/adsz?push=true: HTTP %d", resp.StatusCode)
	}
}

func waitUntil(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(mustHappen)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, mustHappen)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, with a deadline
	}
}

func ratingsVS(w1, w2 int) harness.Object {
	return harness.Object{
		"apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
		"metadata": map[string]any{"name": "ratings", "namespace": namespace},
		"spec": map[string]any{
			"hosts": []string{ratings},
			"http": []any{
				map[string]any{"name": "v2-by-header-prefix",
					"match": []any{map[string]any{"headers": map[string]any{"x-version": map[string]any{"prefix": "v2"}}}},
					"route": []any{map[string]any{"destination": map[string]any{"host": ratings, "subset": "v2"}}}},
				map[string]any{"name": "default",
					"route": []any{
						map[string]any{"destination": map[string]any{"host": ratings, "subset": "v1"}, "weight": w1},
						map[string]any{"destination": map[string]any{"host": ratings, "subset": "v2"}, "weight": w2},
					},
					"retries": map[string]any{"attempts": 0}},
			},
		},
	}
}

func reviewsV2c(t *testing.T) (pod, slice harness.Object) {
	objs, err := readObjects("workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pod = harness.Object{
		"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": "reviews-v2-c", "namespace": namespace, "labels": map[string]any{"app": "reviews", "version": "v2"}},
		"spec":     map[string]any{"serviceAccountName": "reviews", "containers": []any{map[string]any{"name": "app", "image": "example.invalid/reviews:v2"}}},
		"status": map[string]any{"phase": "Running", "podIP": "192.0.2.24", "podIPs": []any{map[string]any{"ip": "192.0.2.24"}},
			"conditions": []any{map[string]any{"type": "Ready", "status": "True"}}},
	}
	slice = find(t, objs, "EndpointSlice", "reviews-1")
	eps := slice["endpoints"].([]any)
	slice["endpoints"] = append(slices.Clone(eps), map[string]any{
		"addresses": []any{"192.0.2.24"}, "conditions": map[string]any{"ready": true},
		"targetRef": map[string]any{"kind": "Pod", "name": "reviews-v2-c", "namespace": namespace},
	})
	return pod, slice
}

func removeReviewsV2c(t *testing.T) {
	objs, err := readObjects("workloads.yaml")
	if err != nil {
		t.Fatal(err)
	}
	pod, _ := reviewsV2c(t)
	apply(t, find(t, objs, "EndpointSlice", "reviews-1"))
	if err := env.kube.Client.Delete(context.Background(), pod); err != nil {
		t.Error(err)
	}
}

func find(t *testing.T, objs []harness.Object, kind, name string) harness.Object {
	t.Helper()
	for _, o := range objs {
		if o["kind"] == kind && o["metadata"].(map[string]any)["name"] == name {
			return o
		}
	}
	t.Fatalf("no %s %s in testdata", kind, name)
	return nil
}

// apply applies objs to the API server, failing the test if it cannot.
func apply(t *testing.T, objs ...harness.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.kube.Client.ApplyAll(ctx, objs); err != nil {
		t.Fatal(err)
	}
}

func clusterIP(t *testing.T, svc string) string {
	t.Helper()
	o, err := env.kube.Client.Get(context.Background(), "/api/v1/namespaces/default/services/"+svc)
	if err != nil {
		t.Fatal(err)
	}
	ip, _ := o["spec"].(map[string]any)["clusterIP"].(string)
	if ip == "" {
		t.Fatalf("service %s has no clusterIP", svc)
	}
	return ip
}

// vhost returns the virtual host of rc (nil when absent) with host among its domains,
// decoding rc's virtual hosts one at a time from their wire form.
func vhost(t *testing.T, rc *resource.RouteConfig, host string) *routev3.VirtualHost {
	t.Helper()
	if rc == nil {
		return nil
	}
	for _, b := range rc.VirtualHosts {
		vh, err := resource.DecodeVirtualHost(b)
		if err != nil {
			t.Fatalf("route config %s: %v", rc.Name, err)
		}
		if slices.Contains(vh.GetDomains(), host) {
			return vh
		}
	}
	return nil
}

func routeNames(vh *routev3.VirtualHost) []string {
	var names []string
	for _, r := range vh.GetRoutes() {
		names = append(names, r.GetName())
	}
	return names
}

// defaultWeights returns the weighted-cluster weights of host's route named "default".
func defaultWeights(t *testing.T, s *resource.State, host string) []uint32 {
	t.Helper()
	for _, r := range vhost(t, s.RouteConfigs["9080"], host).GetRoutes() {
		if r.GetName() == "default" {
			var w []uint32
			for _, c := range r.GetRoute().GetWeightedClusters().GetClusters() {
				w = append(w, c.GetWeight().GetValue())
			}
			return w
		}
	}
	return nil
}

// endpoints lists "ip:port" of every endpoint of cla, sorted.
func endpoints(la *resource.LoadAssignment) []string {
	var out []string
	if la == nil {
		return nil
	}
	for _, l := range la.Localities {
		for i, e := range l.Endpoints {
			out = append(out, l.Address(i)+":"+strconv.FormatUint(uint64(e.Port), 10))
		}
	}
	sort.Strings(out)
	return out
}

// sameContent checks that every resource of before that is not in changed exists in after
// with equal content, and that no resource appeared. (Pointer identity is not asserted: istiod's
// non-deterministic map encoding defeats byte comparison, see TestIdenticalPush.)
func sameContent[M any](t *testing.T, before, after map[string]M, changed map[string]bool) {
	t.Helper()
	for name, b := range before {
		if changed[name] {
			continue
		}
		if a, ok := after[name]; !ok || !resource.Equal(a, b) {
			t.Errorf("%s: unchanged resource changed or vanished", name)
		}
	}
	for name := range after {
		if _, ok := before[name]; !ok && !changed[name] {
			t.Errorf("%s: appeared", name)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func keysSet(m map[string]struct{}) []string { return keys(m) }
