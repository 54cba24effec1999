package client_test

import (
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// When the server goes away the client keeps its last good state, retries with
// backoff, and after the server is back resubscribes and follows new changes.
func TestServerRestart(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			srv.Stop()
			// The client notices, and keeps trying (several attempts while down).
			waitStatus(t, c, func(st client.Status) bool { return st.Reconnects >= 3 && st.State != client.Connected })
			st := dumpOf(t, c)
			if st.LastError == "" {
				t.Error("no LastError while the server is down")
			}
			if st.Seq != first.Seq || len(st.Types[resource.ClusterType].ResourceVersion) != 3 {
				t.Errorf("state changed while disconnected: seq %d, clusters %v", st.Seq, st.Types[resource.ClusterType].ResourceVersion)
			}

			srv.Set(resource.EndpointType, xdstest.Endpoints("outbound|9080||a", "10.0.0.7:9080"), xdstest.Endpoints("outbound|9080||b", "10.0.0.2:9080", "10.0.0.3:9080"))
			mark := srv.Mark()
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, func(s *resource.State) bool {
				return s.Endpoints["outbound|9080||a"] != first.Endpoints["outbound|9080||a"]
			})
			if got := countsOf(s); got != (counts{1, 1, 3, 2}) {
				t.Errorf("after restart %+v", got)
			}
			// Only the changed endpoints are new; the resent rest kept its pointers.
			if len(s.Changes.Endpoints) != 1 || len(s.Changes.Clusters) != 0 || len(s.Changes.Listeners) != 0 {
				t.Errorf("changes after restart: %+v", s.Changes)
			}
			// The new stream resubscribed to every type, dependent ones included.
			for _, u := range []string{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteConfigType} {
				if _, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, xdstest.IsType(u)); err != nil {
					t.Errorf("no %s request on the new stream: %v", u, err)
				}
			}
			waitStatus(t, c, func(st client.Status) bool { return st.State == client.Connected })
		})
	}
}

// waitStatus polls Status until ok (Status has no change notification; the polling
// interval is not an assertion, the deadline is).
func waitStatus(t *testing.T, c *client.Client, ok func(client.Status) bool) {
	t.Helper()
	deadline := time.Now().Add(mustHappen)
	for !ok(c.Status()) {
		if time.Now().After(deadline) {
			t.Fatalf("status never matched: %+v", c.Status())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
