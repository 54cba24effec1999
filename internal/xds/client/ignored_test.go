package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// Resources for names the client is not subscribed to (istiod sends them right after
// an unsubscribe) are ignored: not published, not NACKed, even when invalid.
func TestIgnoresUnsubscribedNames(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			srv.InjectNext(resource.EndpointType, xdstest.Endpoints("outbound|9080||gone", "10.0.0.9:9080"))
			srv.InjectNext(resource.RouteConfigType, xdstest.RouteConfig("8080", "outbound|9080||a"))
			// Trigger one EDS and one RDS response.
			if err := srv.Update(xdstest.Endpoints("outbound|9080||a", "10.0.0.1:9080", "10.0.0.5:9080"), xdstest.RouteConfig("9080", "outbound|9080||b")); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, func(s *resource.State) bool {
				return s.RouteConfigs["9080"] != first.RouteConfigs["9080"] && s.Endpoints["outbound|9080||a"] != first.Endpoints["outbound|9080||a"]
			})
			if got := countsOf(s); got != (counts{1, 1, 3, 2}) {
				t.Errorf("counts %+v: unsubscribed resources were published", got)
			}
			st := c.Status()
			for _, u := range []string{resource.EndpointType, resource.RouteConfigType} {
				if ts := st.Types[u]; ts.Ignored != 1 || ts.NACKs != 0 {
					t.Errorf("%s: ignored %d nacks %d, want 1 and 0", u, ts.Ignored, ts.NACKs)
				}
			}
		})
	}
}
