package istiod_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// memSink is an agent.Sink that keeps what it was given, like the shared dict would, and
// counts version bumps (one per Apply).
type memSink struct {
	mu      sync.Mutex
	objects map[string][]byte
	batches []apisix.ChangeSet
	version uint64
	applied chan struct{} // receives after every Apply
}

func newMemSink() *memSink {
	return &memSink{objects: map[string][]byte{}, applied: make(chan struct{}, 100)}
}

func (s *memSink) Apply(_ context.Context, cs apisix.ChangeSet) error {
	s.mu.Lock()
	puts, dels := cs.Ordered()
	for _, k := range puts {
		s.objects[k] = cs.Put[k]
	}
	for _, k := range dels {
		delete(s.objects, k)
	}
	s.batches = append(s.batches, cs)
	s.version++
	s.mu.Unlock()
	s.applied <- struct{}{}
	return nil
}

func (s *memSink) Version() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.version
}

// state returns a copy of the objects, the version and the last batch.
func (s *memSink) state() (map[string][]byte, uint64, apisix.ChangeSet) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var last apisix.ChangeSet
	if len(s.batches) > 0 {
		last = s.batches[len(s.batches)-1]
	}
	return maps.Clone(s.objects), s.version, last
}

// amesh is the libxds pipeline (xDS client → translate → agent) with a memory sink.
type amesh struct {
	sc   *sidecar
	ag   *agent.Agent
	sink *memSink
}

func startAmesh(t *testing.T, environ []string) *amesh {
	t.Helper()
	sc := startSidecar(t, environ)
	a := &amesh{sc: sc, sink: newMemSink()}
	newTr := func() agent.Translator { return translate.New(translate.Options{}) }
	a.ag = agent.New(sc.c, newTr, a.sink, agent.Options{Logger: testLogger(t)})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.ag.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// waitFor waits until the written objects satisfy ok and returns them.
func (a *amesh) waitFor(t *testing.T, what string, ok func(objs map[string][]byte) bool) map[string][]byte {
	t.Helper()
	deadline := time.NewTimer(mustHappen)
	defer deadline.Stop()
	for {
		objs, _, _ := a.sink.state()
		if len(objs) > 0 && ok(objs) {
			return objs
		}
		select {
		case <-a.sink.applied:
		case <-deadline.C:
			st := a.ag.Stats()
			t.Fatalf("%s: not written within %v; agent: %d batches, last error %q", what, mustHappen, st.Batches, st.LastError)
		}
	}
}

// noWrite asserts that nothing is applied for quiet.
func (a *amesh) noWrite(t *testing.T, why string) {
	t.Helper()
	_, v0, _ := a.sink.state()
	select {
	case <-a.sink.applied:
		_, v, last := a.sink.state()
		puts, dels := last.Ordered()
		t.Errorf("%s: version %d -> %d, wrote %v, deleted %v", why, v0, v, puts, dels)
	case <-time.After(quiet):
	}
}

type route struct {
	Key        string
	ID         string         `json:"id"`
	Name       string         `json:"name"`
	URI        string         `json:"uri"`
	URIs       []string       `json:"uris"`
	Hosts      []string       `json:"hosts"`
	Priority   int            `json:"priority"`
	UpstreamID string         `json:"upstream_id"`
	Plugins    map[string]any `json:"plugins"`
}

type upstream struct {
	Key   string
	ID    string `json:"id"`
	Name  string `json:"name"`
	Type  string `json:"type"`
	Nodes []struct {
		Host string `json:"host"`
		Port int    `json:"port"`
	} `json:"nodes"`
}

func routesFor(t *testing.T, objs map[string][]byte, host string) []route {
	t.Helper()
	var out []route
	for k, v := range objs {
		if !strings.HasPrefix(k, "/routes/") {
			continue
		}
		var r route
		if err := json.Unmarshal(v, &r); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		r.Key = k
		if slices.Contains(r.Hosts, host) {
			out = append(out, r)
		}
	}
	return out
}

func upstreamsWithNodes(t *testing.T, objs map[string][]byte) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for k, v := range objs {
		if !strings.HasPrefix(k, "/upstreams/") {
			continue
		}
		var u upstream
		if err := json.Unmarshal(v, &u); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		var nodes []string
		for _, n := range u.Nodes {
			nodes = append(nodes, n.Host)
		}
		slices.Sort(nodes)
		out[k] = nodes
	}
	return out
}

func hasPlugin(rs []route, name string) bool {
	for _, r := range rs {
		if _, ok := r.Plugins[name]; ok {
			return true
		}
	}
	return false
}

// TestAPISIXConfig: the whole libxds pipeline against istiod. The APISIX objects are valid,
// carry the scenario's features, and an edit, an endpoint change and an identical push write
// exactly what changed (or nothing), one version bump per change.
func TestAPISIXConfig(t *testing.T) {
	requireEnv(t)
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			a := startAmesh(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			objs := a.waitFor(t, "initial config", func(map[string][]byte) bool { return true })
			for k, v := range objs {
				if err := schema.Validate(k, v); err != nil {
					t.Errorf("%s does not validate against APISIX's schema: %v\n%s", k, err, v)
				}
			}
			rv := routesFor(t, objs, reviews)
			if len(rv) < 6 {
				t.Fatalf("%d routes for %s, want at least the 6 of the VirtualService", len(rv), reviews)
			}
			for _, p := range []string{"traffic-split", "redirect", "fault-injection", "cors", "proxy-mirror", "proxy-rewrite"} {
				if !hasPlugin(rv, p) {
					t.Errorf("no %s route uses plugin %s", reviews, p)
				}
			}
			ups := upstreamsWithNodes(t, objs)
			if !slices.ContainsFunc(slices.Collect(maps.Values(ups)), func(n []string) bool {
				return slices.Equal(n, []string{"192.0.2.22", "192.0.2.23"})
			}) {
				t.Errorf("no upstream with the reviews v2 pods; upstreams: %v", ups)
			}
			_, v0, _ := a.sink.state()

			// An endpoint change writes upstreams only, in one bump.
			pod, slice := reviewsV2c(t)
			apply(t, pod)
			apply(t, slice)
			t.Cleanup(func() {
				removeReviewsV2c(t)
				a.waitFor(t, "reviews v2-c removed", func(o map[string][]byte) bool {
					return !strings.Contains(string(concat(o)), "192.0.2.24")
				})
			})
			a.waitFor(t, "reviews v2-c written", func(o map[string][]byte) bool {
				return strings.Contains(string(concat(o)), "192.0.2.24")
			})
			_, v1, last := a.sink.state()
			if v1 != v0+1 {
				t.Errorf("endpoint change: version %d -> %d, want one bump", v0, v1)
			}
			puts, dels := last.Ordered()
			for _, k := range append(puts, dels...) {
				if !strings.HasPrefix(k, "/upstreams/") {
					t.Errorf("endpoint change wrote %s", k)
				}
			}

			// A route edit rewrites routes of ratings only, in one bump.
			apply(t, ratingsVS(90, 10))
			t.Cleanup(func() {
				apply(t, ratingsVS(50, 50))
				a.waitFor(t, "ratings back to 50/50", func(o map[string][]byte) bool { return splitWeights(t, o, ratings) == "50/50" })
			})
			a.waitFor(t, "ratings 90/10", func(o map[string][]byte) bool { return splitWeights(t, o, ratings) == "90/10" })
			_, v2, last := a.sink.state()
			if v2 != v1+1 {
				t.Errorf("route edit: version %d -> %d, want one bump", v1, v2)
			}
			puts, dels = last.Ordered()
			ratingsRoutes := map[string]bool{}
			objs, _, _ = a.sink.state()
			for _, r := range routesFor(t, objs, ratings) {
				ratingsRoutes[r.Key] = true
			}
			for _, k := range append(puts, dels...) {
				if strings.HasPrefix(k, "/routes/") && !ratingsRoutes[k] {
					t.Errorf("route edit of ratings wrote %s", k)
				}
			}

			// An identical push writes nothing.
			responses := a.sc.c.Status().Types[resource.ClusterType].Responses
			forcePush(t)
			waitUntil(t, "the forced push reaches amesh", func() bool {
				return a.sc.c.Status().Types[resource.ClusterType].Responses > responses
			})
			a.noWrite(t, "identical push")
		})
	}
}

// splitWeights returns the traffic-split weights of host's weighted route as "w1/w2", or "".
func splitWeights(t *testing.T, objs map[string][]byte, host string) string {
	for _, r := range routesFor(t, objs, host) {
		ts, ok := r.Plugins["traffic-split"].(map[string]any)
		if !ok {
			continue
		}
		var ws []string
		for _, rule := range ts["rules"].([]any) {
			for _, wu := range rule.(map[string]any)["weighted_upstreams"].([]any) {
				ws = append(ws, fmt.Sprint(wu.(map[string]any)["weight"]))
			}
		}
		return strings.Join(ws, "/")
	}
	return ""
}

func concat(objs map[string][]byte) []byte {
	var b []byte
	for _, v := range objs {
		b = append(b, v...)
	}
	return b
}

var _ = client.Delta
