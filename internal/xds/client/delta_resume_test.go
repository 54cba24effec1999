package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// A new Delta stream sends initial_resource_versions for everything held, so the
// server sends only what changed while the client was away.
func TestDeltaResume(t *testing.T) {
	srv := newServer(t, xdsOpts())
	basicMesh(t, srv)
	c := startClient(t, srv, client.Delta, nil)
	first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
	held := dumpOf(t, c).Types

	srv.Stop()
	waitStatus(t, c, func(st client.Status) bool { return st.State != client.Connected })
	if err := srv.Update(xdstest.StaticCluster("BlackHoleCluster2")); err != nil {
		t.Fatal(err)
	}
	if err := srv.Remove(resource.ClusterType, "BlackHoleCluster"); err != nil {
		t.Fatal(err)
	}
	mark := srv.Mark()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	s := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
	if _, ok := s.Clusters["BlackHoleCluster2"]; !ok {
		t.Fatalf("new cluster missing: %v", s.Clusters)
	}

	var resumed int64 // the stream after the restart
	for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType} {
		req, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, xdstest.IsType(u))
		resumed = req.Stream
		if err != nil {
			t.Fatal(err)
		}
		got := req.Delta.GetInitialResourceVersions()
		want := held[u].ResourceVersion
		if len(got) != len(want) {
			t.Errorf("%s initial_resource_versions %v, want %v", u, got, want)
		}
		for n, v := range want {
			if got[n] != v {
				t.Errorf("%s initial version of %s = %q, want %q", u, n, got[n], v)
			}
		}
	}
	// Only the changes were sent on the new stream.
	for _, r := range srv.Responses() {
		if r.Stream != resumed || r.TypeURL != resource.ClusterType {
			continue
		}
		if !equal(r.Names, []string{"BlackHoleCluster2"}) || !equal(r.Removed, []string{"BlackHoleCluster"}) {
			t.Errorf("resumed CDS response sent %v removed %v, want only the difference", r.Names, r.Removed)
		}
	}
	if s.Clusters["outbound|9080||a"] != first.Clusters["outbound|9080||a"] {
		t.Error("unchanged cluster got a new pointer")
	}
}
