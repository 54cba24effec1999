package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
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

	s, err := c.Next(ctxFor(t, mustHappen))
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
