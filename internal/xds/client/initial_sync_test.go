package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func TestInitialSync(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)

			s := waitSnapshot(t, c, func(*resource.State) bool { return true })
			if got, want := countsOf(s), (counts{L: 1, R: 1, C: 3, E: 2}); got != want {
				t.Fatalf("first snapshot has %+v, want %+v (it must be complete)", got, want)
			}
			if !s.Changes.Full || s.Seq != 1 {
				t.Errorf("first snapshot: Seq %d Full %v, want 1 true", s.Seq, s.Changes.Full)
			}
			// Full says everything changed; the names would repeat the maps.
			if n := len(s.Changes.Clusters) + len(s.Changes.Endpoints) + len(s.Changes.Listeners) + len(s.Changes.RouteConfigs); n != 0 {
				t.Errorf("first snapshot lists %d changed names besides Full", n)
			}
			select {
			case <-c.Ready():
			default:
				t.Error("Ready not closed after the first snapshot")
			}
			if got := s.Endpoints["outbound|9080||b"].NumEndpoints(); got != 2 {
				t.Errorf("endpoints of b: %d, want 2", got)
			}
			if id := srv.NodeID(); id != testNode().GetId() {
				t.Errorf("server saw node %q", id)
			}
			st := c.Status()
			for _, u := range []string{resource.ListenerType, resource.ClusterType, resource.RouteConfigType, resource.EndpointType} {
				ts := st.Types[u]
				if ts.Responses == 0 || ts.ACKs != ts.Responses || ts.NACKs != 0 {
					t.Errorf("%s: %+v, want every response ACKed", u, ts)
				}
			}
			if !st.Types[resource.ListenerType].Wildcard || st.Types[resource.EndpointType].Subscribed != 2 || st.Types[resource.RouteConfigType].Subscribed != 1 {
				t.Errorf("subscriptions: %+v", st.Types)
			}
			if st.State != "connected" || !st.Ready || st.Protocol != p {
				t.Errorf("status %+v", st)
			}
			// /debug/xds serves this status: it must say that resources are pruned.
			if st.Stored != resource.StoredForm {
				t.Errorf("status says resources are stored %q, want %q", st.Stored, resource.StoredForm)
			}
		})
	}
}
