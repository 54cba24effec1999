package client

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// These tests drive the Delta handler directly (no network, no Run), so that every
// publication is observable: after each response the accepted state is recorded
// under the Seq it was published with, and whatever Next returns later must equal it.

// modelState is the accepted state at one publication, per type: name -> message.
type modelState [numTypes]map[string]any

func captureState(c *Client) modelState {
	var st modelState
	for i, t := range c.types {
		st[i] = make(map[string]any, len(t.res))
		for n, e := range t.res {
			st[i][n] = e.msg
		}
	}
	return st
}

type modelHarness struct {
	t     *testing.T
	c     *Client
	d     *deltaStream
	nonce int
	// states holds the state of every published Seq.
	states map[uint64]modelState
	// state is the consumer's, built by applying every update Next returned.
	state resource.State
}

func newModelHarness(t *testing.T, clusters int) *modelHarness {
	t.Helper()
	c, err := New(Config{Server: "127.0.0.1:1", Protocol: Delta, Node: xdstestNode()})
	if err != nil {
		t.Fatal(err)
	}
	h := &modelHarness{t: t, c: c, d: &deltaStream{c: c, s: &discardDelta{}}, states: map[uint64]modelState{}}
	var cls, eps []proto.Message
	for i := range clusters {
		cls = append(cls, xdstest.EDSCluster(modelCluster(i)))
		eps = append(eps, xdstest.Endpoints(modelCluster(i), "10.0.0.1:80"))
	}
	cls = append(cls, xdstest.StaticCluster("BlackHoleCluster"))
	h.send(resource.ClusterType, cls, nil)
	h.send(resource.EndpointType, eps, nil)
	h.send(resource.ListenerType, []proto.Message{xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, "")}, nil)
	h.send(resource.RouteConfigType, []proto.Message{xdstest.RouteConfig("80", modelCluster(0))}, nil)
	if c.published != 1 {
		t.Fatalf("initial sync published %d snapshots, want 1", c.published)
	}
	return h
}

func modelCluster(i int) string { return fmt.Sprintf("outbound|80||svc%d", i) }

func xdstestNode() *corev3.Node {
	return &corev3.Node{Id: "sidecar~10.0.0.1~model.default~default.svc.cluster.local"}
}

// send handles one Delta response and records the state if it was published.
func (h *modelHarness) send(typeURL string, upserts []proto.Message, removed []string) {
	h.t.Helper()
	h.nonce++
	resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: typeURL, Nonce: fmt.Sprint(h.nonce), RemovedResources: removed}
	for _, m := range upserts {
		a, err := anypb.New(m)
		if err != nil {
			h.t.Fatal(err)
		}
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: nameOf(m), Version: fmt.Sprint(h.nonce), Resource: a})
	}
	before := h.c.published
	handleDelta(h.d, resp)
	if h.c.published != before {
		if h.c.published != before+1 {
			h.t.Fatalf("one response published %d snapshots", h.c.published-before)
		}
		h.states[h.c.published] = captureState(h.c)
	}
}

// next calls Next, which must return at once (something was published), applies the
// update to the harness's state as a consumer does, and returns a copy of that state
// with the update.
func (h *modelHarness) next() (*resource.State, *resource.Update) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h.c.published == h.c.returned {
		h.t.Fatal("next called with nothing published")
	}
	u, err := h.c.Next(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	h.state.Apply(u)
	s := h.state
	s.Listeners, s.RouteConfigs = maps.Clone(s.Listeners), maps.Clone(s.RouteConfigs)
	s.Clusters, s.Endpoints = maps.Clone(s.Clusters), maps.Clone(s.Endpoints)
	return &s, u
}

// copyUpdate is a copy of u's maps and slices, to check later that nothing changed them.
func copyUpdate(u *resource.Update) resource.Update {
	c := *u
	c.Listeners.Upsert, c.Listeners.Remove = maps.Clone(u.Listeners.Upsert), slices.Clone(u.Listeners.Remove)
	c.RouteConfigs.Upsert, c.RouteConfigs.Remove = maps.Clone(u.RouteConfigs.Upsert), slices.Clone(u.RouteConfigs.Remove)
	c.Clusters.Upsert, c.Clusters.Remove = maps.Clone(u.Clusters.Upsert), slices.Clone(u.Clusters.Remove)
	c.Endpoints.Upsert, c.Endpoints.Remove = maps.Clone(u.Endpoints.Upsert), slices.Clone(u.Endpoints.Remove)
	c.Decoded, c.Missing = maps.Clone(u.Decoded), slices.Clone(u.Missing)
	return c
}

func sameUpdate(a, b *resource.Update) bool {
	return maps.Equal(a.Listeners.Upsert, b.Listeners.Upsert) && slices.Equal(a.Listeners.Remove, b.Listeners.Remove) &&
		maps.Equal(a.RouteConfigs.Upsert, b.RouteConfigs.Upsert) && slices.Equal(a.RouteConfigs.Remove, b.RouteConfigs.Remove) &&
		maps.Equal(a.Clusters.Upsert, b.Clusters.Upsert) && slices.Equal(a.Clusters.Remove, b.Clusters.Remove) &&
		maps.Equal(a.Endpoints.Upsert, b.Endpoints.Upsert) && slices.Equal(a.Endpoints.Remove, b.Endpoints.Remove) &&
		maps.Equal(a.Decoded, b.Decoded) && slices.Equal(a.Missing, b.Missing)
}

// checkMaps asserts that the maps of s hold exactly the messages (same pointers) of
// the state published with s.Seq.
func (h *modelHarness) checkMaps(s *resource.State, what string) {
	h.t.Helper()
	want, ok := h.states[s.Seq]
	if !ok {
		h.t.Fatalf("%s: snapshot %d was never published", what, s.Seq)
	}
	samePointers(h.t, what+" listeners", s.Listeners, want[ldsIdx])
	samePointers(h.t, what+" route configs", s.RouteConfigs, want[rdsIdx])
	samePointers(h.t, what+" clusters", s.Clusters, want[cdsIdx])
	samePointers(h.t, what+" endpoints", s.Endpoints, want[edsIdx])
}

func samePointers[M any](t *testing.T, what string, got map[string]M, want map[string]any) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d resources, want %d", what, len(got), len(want))
	}
	for n, w := range want {
		if g, ok := got[n]; !ok || any(g) != w {
			t.Errorf("%s: %s is not the published message", what, n)
		}
	}
}

// changedNames is every name whose message differs between two states.
func changedNames(a, b map[string]any) map[string]struct{} {
	out := map[string]struct{}{}
	for n, m := range a {
		if b[n] != m {
			out[n] = struct{}{}
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			out[n] = struct{}{}
		}
	}
	return out
}

func sameSet(a, b map[string]struct{}) bool {
	return len(a) == len(b) && maps.EqualFunc(a, b, func(struct{}, struct{}) bool { return true })
}

// A consumer calling Next at random points of a random sequence of endpoint changes,
// cluster removals and re-additions and applying each update to its state always has
// the state published last, with exactly the names changed since the update it applied
// before as Changes; unchanged resources keep their pointers, and the client never
// touches an update it handed over.
func TestNextUpdatesBuildThePublishedState(t *testing.T) {
	const clusters = 12
	h := newModelHarness(t, clusters)
	rng := rand.New(rand.NewPCG(7, 11))
	first, u := h.next()
	type heldUpdate struct{ u, copy resource.Update }
	updates := []heldUpdate{{*u, copyUpdate(u)}}
	if !first.Changes.Full || first.Seq != 1 {
		t.Fatalf("first snapshot: seq %d full %v", first.Seq, first.Changes.Full)
	}
	h.checkMaps(first, "first")
	held := []*resource.State{first} // returned snapshots, newest last
	present := map[int]bool{}
	for i := range clusters {
		present[i] = true
	}
	nexts, skipped := 0, 0
	for step := 0; step < 600; step++ {
		i := rng.IntN(clusters)
		switch op := rng.IntN(6); {
		case op <= 2 && present[i]: // an endpoint moves
			h.send(resource.EndpointType, []proto.Message{xdstest.Endpoints(modelCluster(i), fmt.Sprintf("10.0.%d.%d:80", step/250, step%250+1))}, nil)
		case op == 3 && present[i] && i != 0: // the cluster goes away (svc0 is routed to)
			h.send(resource.ClusterType, nil, []string{modelCluster(i)})
			present[i] = false
		case op == 3 && !present[i]: // it comes back: no snapshot until its endpoints do
			seq := h.c.published
			h.send(resource.ClusterType, []proto.Message{xdstest.EDSCluster(modelCluster(i))}, nil)
			if h.c.published != seq {
				t.Fatalf("step %d: published a cluster without its endpoints", step)
			}
			h.send(resource.EndpointType, []proto.Message{xdstest.Endpoints(modelCluster(i), "10.1.0.1:80")}, nil)
			present[i] = true
		case op >= 4 && h.c.published > h.c.returned:
			prev := held[len(held)-1]
			s, u := h.next()
			updates = append(updates, heldUpdate{*u, copyUpdate(u)})
			nexts++
			if s.Seq != h.c.published || s.Changes.Since != prev.Seq || s.Changes.Full {
				t.Fatalf("step %d: seq %d since %d full %v, want %d %d false", step, s.Seq, s.Changes.Since, s.Changes.Full, h.c.published, prev.Seq)
			}
			h.checkMaps(s, fmt.Sprintf("step %d", step))
			for _, k := range []struct {
				idx int
				got map[string]struct{}
			}{{ldsIdx, s.Changes.Listeners}, {rdsIdx, s.Changes.RouteConfigs}, {cdsIdx, s.Changes.Clusters}, {edsIdx, s.Changes.Endpoints}} {
				// Every name some skipped publication changed (a name added and removed
				// again in between is listed although the two ends agree).
				want := map[string]struct{}{}
				for q := prev.Seq + 1; q <= s.Seq; q++ {
					maps.Copy(want, changedNames(h.states[q-1][k.idx], h.states[q][k.idx]))
				}
				if !sameSet(k.got, want) {
					t.Fatalf("step %d: %s changes %v, want %v", step, typeURLs[k.idx], k.got, want)
				}
			}
			if s.Seq > prev.Seq+1 {
				skipped++
			}
			held = append(held, s)
			for _, old := range updates {
				if !sameUpdate(&old.u, &old.copy) {
					t.Fatalf("step %d: update %d changed after Next returned it", step, old.u.Seq)
				}
			}
		}
		if t.Failed() {
			t.FailNow()
		}
	}
	if nexts < 50 || skipped < 20 || h.c.published < 200 {
		t.Fatalf("weak run: %d Next calls (%d skipping snapshots) over %d snapshots", nexts, skipped, h.c.published)
	}
	t.Logf("%d Next calls (%d skipping snapshots) over %d snapshots", nexts, skipped, h.c.published)
}

// A consumer that stops calling Next while more names change than the mesh holds
// gets, when it comes back, the right state flagged Full (the client dropped the name
// lists instead of growing them without bound), and incremental changes after that.
func TestStalledConsumerGetsFull(t *testing.T) {
	h := newModelHarness(t, 4)
	h.next()
	var statics []proto.Message
	var names []string
	for i := range overflowSlack + 100 {
		n := fmt.Sprintf("static-%d", i)
		statics = append(statics, xdstest.StaticCluster(n))
		names = append(names, n)
	}
	h.send(resource.ClusterType, statics, nil)
	h.send(resource.ClusterType, nil, names)
	h.c.pubMu.Lock()
	held := len(h.c.out.whole[cdsIdx]) + len(h.c.out.msgs[cdsIdx])
	h.c.pubMu.Unlock()
	if !h.c.out.replaced[cdsIdx] || held != len(h.c.types[cdsIdx].res) {
		t.Errorf("pending cluster delta holds %d names, want the %d clusters", held, len(h.c.types[cdsIdx].res))
	}
	s, u := h.next()
	if !u.Clusters.Replace || u.Endpoints.Replace {
		t.Errorf("update replaces clusters %v endpoints %v, want clusters only", u.Clusters.Replace, u.Endpoints.Replace)
	}
	if !s.Changes.Full || s.Changes.Since != 1 {
		t.Errorf("changes since %d full %v, want since 1, full", s.Changes.Since, s.Changes.Full)
	}
	h.checkMaps(s, "after the stall")

	h.send(resource.EndpointType, []proto.Message{xdstest.Endpoints(modelCluster(1), "10.9.9.9:80")}, nil)
	s, _ = h.next()
	if s.Changes.Full || len(s.Changes.Endpoints) != 1 || len(s.Changes.Clusters) != 0 {
		t.Errorf("after the stall: changes %+v, want endpoints of svc1 only", s.Changes)
	}
	h.checkMaps(s, "after the stall, one change")
}

// The agent's pipeline: a reader goroutine calls Next and hands each update over an
// unbuffered channel to a translator goroutine, which applies it to its state, while
// the reader calls Next again. With updates published concurrently, the race detector
// checks that the client never touches an update it handed over, and the translator
// checks every state is consistent.
func TestPipelinedConsumer(t *testing.T) {
	const clusters, updates = 8, 300
	h := newModelHarness(t, clusters)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	pubErr := make(chan error, 1)
	go func() {
		for i := range updates {
			a, err := anypb.New(xdstest.Endpoints(modelCluster(i%clusters), fmt.Sprintf("10.2.%d.%d:80", i/250, i%250+1)))
			if err != nil {
				pubErr <- err
				return
			}
			resp := &discoveryv3.DeltaDiscoveryResponse{TypeUrl: resource.EndpointType, Nonce: fmt.Sprint("u", i),
				Resources: []*discoveryv3.Resource{{Name: modelCluster(i % clusters), Version: fmt.Sprint(i), Resource: a}}}
			handleDelta(h.d, resp)
		}
		pubErr <- nil
	}()

	ups := make(chan *resource.Update)
	readErr := make(chan error, 1)
	go func() {
		defer close(ups)
		for {
			u, err := h.c.Next(ctx)
			if err != nil {
				readErr <- err
				return
			}
			ups <- u
			if u.Seq == updates+1 {
				readErr <- nil
				return
			}
		}
	}()

	got := 0
	var s resource.State
	for u := range ups {
		s.Apply(u)
		got++
		for name, cl := range s.Clusters {
			if cl.EDS != "" && s.Endpoints[cl.EDS].NumEndpoints() == 0 {
				t.Errorf("snapshot %d: cluster %s without endpoints", s.Seq, name)
			}
		}
		if len(s.Clusters) != clusters+1 || len(s.Endpoints) != clusters {
			t.Errorf("snapshot %d: %d clusters %d endpoint sets", s.Seq, len(s.Clusters), len(s.Endpoints))
		}
	}
	if err := <-pubErr; err != nil {
		t.Fatal(err)
	}
	if err := <-readErr; err != nil {
		t.Fatalf("after %d snapshots: %v", got, err)
	}
	t.Logf("translated %d of %d snapshots", got, updates+1)
}

// An update hands over the decoded message of each route configuration it brings,
// equal to what its wire form decodes to; the client keeps none once Next returned
// it, and an update that brings no route configuration brings no decoded message.
func TestUpdateHandsOverDecodedRouteConfigs(t *testing.T) {
	h := newModelHarness(t, 2)
	check := func(u *resource.Update, want string) {
		t.Helper()
		if len(u.Decoded) != 1 || u.Decoded[want] == nil {
			t.Fatalf("update %d: decoded %v, want route configuration %q", u.Seq, slices.Collect(maps.Keys(u.Decoded)), want)
		}
		fromWire, err := u.RouteConfigs.Upsert[want].Message()
		if err != nil || !proto.Equal(fromWire, u.Decoded[want]) {
			t.Fatalf("update %d: the decoded message differs from its wire form (%v)", u.Seq, err)
		}
		h.c.pubMu.Lock()
		defer h.c.pubMu.Unlock()
		if len(h.c.decoded) != 0 || h.c.out.decoded != nil {
			t.Fatalf("update %d: the client still holds %d decoded route configurations", u.Seq, len(h.c.decoded)+len(h.c.out.decoded))
		}
	}
	_, u := h.next()
	check(u, "80")

	h.send(resource.RouteConfigType, []proto.Message{xdstest.RouteConfig("80", modelCluster(1))}, nil)
	_, u = h.next()
	check(u, "80")

	h.send(resource.EndpointType, []proto.Message{xdstest.Endpoints(modelCluster(0), "10.0.0.2:80")}, nil)
	if _, u = h.next(); u.Decoded != nil {
		t.Fatalf("an endpoint change brought decoded route configurations %v", u.Decoded)
	}
}
