package client

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
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
	if err := h.d.handle(resp); err != nil {
		h.t.Fatal(err)
	}
	if h.c.published != before {
		if h.c.published != before+1 {
			h.t.Fatalf("one response published %d snapshots", h.c.published-before)
		}
		h.states[h.c.published] = captureState(h.c)
	}
}

// next calls Next, which must return at once (something was published).
func (h *modelHarness) next() *resource.Snapshot {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if h.c.published == h.c.returned {
		h.t.Fatal("next called with nothing published")
	}
	s, err := h.c.Next(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// checkMaps asserts that the maps of s hold exactly the messages (same pointers) of
// the state published with s.Seq.
func (h *modelHarness) checkMaps(s *resource.Snapshot, what string) {
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
// cluster removals and re-additions always gets the state published last, with exactly
// the names changed since the snapshot it saw before as Changes, unchanged
// resources keep their pointers, and the maps of the two snapshots it got before stay
// as they were (the documented lifetime).
func TestNextPatchesMapsInPlace(t *testing.T) {
	const clusters = 12
	h := newModelHarness(t, clusters)
	rng := rand.New(rand.NewPCG(7, 11))
	first := h.next()
	if !first.Changes.Full || first.Seq != 1 {
		t.Fatalf("first snapshot: seq %d full %v", first.Seq, first.Changes.Full)
	}
	h.checkMaps(first, "first")
	held := []*resource.Snapshot{first} // returned snapshots, newest last
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
			s := h.next()
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
			if len(held) > numViews {
				held = held[1:]
			}
			for _, old := range held[:len(held)-1] {
				h.checkMaps(old, fmt.Sprintf("step %d: snapshot %d held", step, old.Seq))
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
	h.c.mu.Lock()
	held := len(h.c.out.whole[cdsIdx]) + len(h.c.out.msgs[cdsIdx])
	h.c.mu.Unlock()
	if !h.c.out.replaced[cdsIdx] || held != len(h.c.types[cdsIdx].res) {
		t.Errorf("pending cluster delta holds %d names, want the %d clusters", held, len(h.c.types[cdsIdx].res))
	}
	s := h.next()
	if !s.Changes.Full || s.Changes.Since != 1 {
		t.Errorf("changes since %d full %v, want since 1, full", s.Changes.Since, s.Changes.Full)
	}
	h.checkMaps(s, "after the stall")

	h.send(resource.EndpointType, []proto.Message{xdstest.Endpoints(modelCluster(1), "10.9.9.9:80")}, nil)
	s = h.next()
	if s.Changes.Full || len(s.Changes.Endpoints) != 1 || len(s.Changes.Clusters) != 0 {
		t.Errorf("after the stall: changes %+v, want endpoints of svc1 only", s.Changes)
	}
	h.checkMaps(s, "after the stall, one change")
}

// The agent's pipeline: a reader goroutine calls Next and hands each snapshot over an
// unbuffered channel to a translator goroutine, then calls Next again while the
// translator still reads the snapshot before. With updates published concurrently,
// the race detector checks that Next never patches maps the translator is reading,
// and the translator checks every snapshot is consistent.
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
			if err := h.d.handle(resp); err != nil {
				pubErr <- err
				return
			}
		}
		pubErr <- nil
	}()

	snaps := make(chan *resource.Snapshot)
	readErr := make(chan error, 1)
	go func() {
		defer close(snaps)
		for {
			s, err := h.c.Next(ctx)
			if err != nil {
				readErr <- err
				return
			}
			snaps <- s
			if s.Seq == updates+1 {
				readErr <- nil
				return
			}
		}
	}()

	got := 0
	for s := range snaps {
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
