package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// After a NACK the last good state stays: no snapshot is published for the rejected
// response, and the next valid response applies on top of the old state.
func TestNACKKeepsLastGoodState(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			// Replace cluster a by an invalid version of itself.
			mark := srv.Mark()
			if err := srv.Update(xdstest.InvalidCluster("outbound|9080||a")); err != nil {
				t.Fatal(err)
			}
			if _, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool { return r.IsNACK() }); err != nil {
				t.Fatal(err)
			}
			if st := c.Status(); st.Seq != first.Seq {
				t.Fatalf("a snapshot was published for a NACKed response: seq %d", st.Seq)
			}

			// A valid change replaces the bad one; nothing of it leaks into the snapshot.
			srv.Set(resource.ClusterType, xdstest.EDSCluster("outbound|9080||a"), xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"), xdstest.StaticCluster("PassthroughCluster"))
			s := waitSnapshot(t, c, hasCounts(counts{1, 1, 4, 2}))
			if s.Seq != first.Seq+1 {
				t.Errorf("seq %d, want %d (one snapshot after the NACK)", s.Seq, first.Seq+1)
			}
			if s.Clusters["outbound|9080||a"] != first.Clusters["outbound|9080||a"] {
				t.Error("cluster a changed although its only update was rejected")
			}
			if _, ok := s.Changes.Clusters["PassthroughCluster"]; !ok || len(s.Changes.Clusters) != 1 {
				t.Errorf("changes %v, want only PassthroughCluster", s.Changes.Clusters)
			}
		})
	}
}
