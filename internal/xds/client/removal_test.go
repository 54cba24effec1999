package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// A cluster missing from a SotW response, or in Delta removed_resources, is removed
// together with its endpoints (which are unsubscribed).
func TestRemovals(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			mark := srv.Mark()
			if err := srv.Remove(resource.ClusterType, "outbound|9080||b"); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, hasCounts(counts{1, 1, 2, 1}))
			if _, ok := s.Clusters["outbound|9080||b"]; ok {
				t.Error("cluster b still there")
			}
			if _, ok := s.Endpoints["outbound|9080||b"]; ok {
				t.Error("endpoints of b still there")
			}
			for name, kind := range map[string]map[string]struct{}{"clusters": s.Changes.Clusters, "endpoints": s.Changes.Endpoints} {
				if _, ok := kind["outbound|9080||b"]; !ok || len(kind) != 1 {
					t.Errorf("changed %s: %v, want only b", name, kind)
				}
			}
			if s.Clusters["outbound|9080||a"] != first.Clusters["outbound|9080||a"] || s.Listeners["0.0.0.0_9080"] != first.Listeners["0.0.0.0_9080"] {
				t.Error("unchanged resources lost their pointer identity")
			}
			// The EDS subscription shrank.
			unsub, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, subReq(resource.EndpointType, "outbound|9080||a"))
			if err != nil {
				t.Fatal(err)
			}
			if p == client.Delta {
				if got := unsub.Delta.GetResourceNamesUnsubscribe(); len(got) != 1 || got[0] != "outbound|9080||b" {
					t.Errorf("unsubscribe %v", got)
				}
			} else if got := unsub.SotW.GetResourceNames(); len(got) != 1 || got[0] != "outbound|9080||a" {
				t.Errorf("EDS names after removal %v, want [a]", got)
			}

			// Removing the listener removes its route configuration.
			if err := srv.Remove(resource.ListenerType, "0.0.0.0_9080"); err != nil {
				t.Fatal(err)
			}
			waitSnapshot(t, c, hasCounts(counts{0, 0, 2, 1}))
		})
	}
}
