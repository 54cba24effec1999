package client_test

import (
	"sort"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// A consumer that falls behind gets the newest snapshot with the changes of every
// snapshot it skipped merged, relative to the one it saw last.
func TestNextMergesSkippedChanges(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	c := startClient(t, srv, client.Delta, nil)
	first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

	if err := srv.Update(xdstest.Endpoints("outbound|9080||a", "10.0.0.8:9080")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(st client.Status) bool { return st.Seq == first.Seq+1 })
	if err := srv.Update(xdstest.StaticCluster("PassthroughCluster")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(st client.Status) bool { return st.Seq == first.Seq+2 })

	s, err := next(ctxFor(t, mustHappen), c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Seq != first.Seq+2 || s.Changes.Since != first.Seq || s.Changes.Full {
		t.Errorf("seq %d since %d full %v, want %d %d false", s.Seq, s.Changes.Since, s.Changes.Full, first.Seq+2, first.Seq)
	}
	if _, ok := s.Changes.Endpoints["outbound|9080||a"]; !ok || len(s.Changes.Endpoints) != 1 {
		t.Errorf("endpoint changes %v", s.Changes.Endpoints)
	}
	if _, ok := s.Changes.Clusters["PassthroughCluster"]; !ok || len(s.Changes.Clusters) != 1 {
		t.Errorf("cluster changes %v", s.Changes.Clusters)
	}
}

// A consumer that calls Next after several publications sees the state of the last one
// (the client patches its maps with everything published in between), the merged
// Changes, the pointers of unchanged resources, and the snapshot it had before still
// as it was.
func TestNextAfterSeveralPublishes(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	c := startClient(t, srv, client.Delta, nil)
	first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

	for i, change := range []func() error{
		func() error { return srv.Update(xdstest.Endpoints("outbound|9080||a", "10.0.0.8:9080")) },
		func() error { return srv.Update(xdstest.StaticCluster("PassthroughCluster")) },
		func() error { return srv.Remove(resource.ClusterType, "outbound|9080||b") },
	} {
		if err := change(); err != nil {
			t.Fatal(err)
		}
		waitStatus(t, c, func(st client.Status) bool { return st.Seq == first.Seq+uint64(i)+1 })
	}

	s, err := next(ctxFor(t, mustHappen), c)
	if err != nil {
		t.Fatal(err)
	}
	if s.Seq != first.Seq+3 || s.Changes.Since != first.Seq || s.Changes.Full {
		t.Errorf("seq %d since %d full %v, want %d %d false", s.Seq, s.Changes.Since, s.Changes.Full, first.Seq+3, first.Seq)
	}
	if got := countsOf(s); got != (counts{1, 1, 3, 1}) {
		t.Errorf("counts %+v, want {1 1 3 1}", got)
	}
	if got := s.Endpoints["outbound|9080||a"].Localities[0].Address(0); got != "10.0.0.8" {
		t.Errorf("endpoint of a is %q, want the updated 10.0.0.8", got)
	}
	if s.Clusters["PassthroughCluster"] == nil || s.Clusters["outbound|9080||b"] != nil || s.Endpoints["outbound|9080||b"] != nil {
		t.Errorf("clusters %v endpoints %v: want PassthroughCluster added, b and its endpoints gone", keys(s.Clusters), keys(s.Endpoints))
	}
	if s.Listeners["0.0.0.0_9080"] != first.Listeners["0.0.0.0_9080"] || s.Clusters["outbound|9080||a"] != first.Clusters["outbound|9080||a"] {
		t.Error("unchanged resources lost their pointer identity")
	}
	wantChanges := map[string]map[string]struct{}{
		"clusters":  {"PassthroughCluster": {}, "outbound|9080||b": {}},
		"endpoints": {"outbound|9080||a": {}, "outbound|9080||b": {}},
	}
	for kind, got := range map[string]map[string]struct{}{"clusters": s.Changes.Clusters, "endpoints": s.Changes.Endpoints, "listeners": s.Changes.Listeners, "route configs": s.Changes.RouteConfigs} {
		if want := wantChanges[kind]; !sameKeys(got, want) {
			t.Errorf("changed %s: %v, want %v", kind, keys(got), keys(want))
		}
	}
	// The previous snapshot is still intact while the consumer works on this one.
	if got := countsOf(first); got != (counts{1, 1, 3, 2}) || first.Endpoints["outbound|9080||b"] == nil {
		t.Errorf("the previous snapshot changed under the consumer: %+v", got)
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

func sameKeys(a, b map[string]struct{}) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// A snapshot says when the newest response it includes arrived: after the server sent
// it and before Next returned it, later for a later response, and the same for a
// snapshot that skipped earlier ones (where a change's latency is measured from).
func TestSnapshotReceived(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	start := time.Now()
	c := startClient(t, srv, client.Delta, nil)
	first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
	if first.Received.Before(start) || first.Received.After(time.Now()) {
		t.Fatalf("first snapshot received at %v, want between the client's start %v and now", first.Received, start)
	}
	sent := time.Now()
	if err := srv.Update(xdstest.Endpoints("outbound|9080||a", "10.0.0.8:9080")); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, c, func(st client.Status) bool { return st.Seq == first.Seq+1 })
	s, err := next(ctxFor(t, mustHappen), c)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Received.After(sent) || s.Received.After(time.Now()) {
		t.Errorf("update received at %v, want after it was sent (%v) and before Next returned", s.Received, sent)
	}
}
