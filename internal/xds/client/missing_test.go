package client_test

import (
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// A dependent resource that never arrives holds the snapshot back only until the
// resource timeout; then the snapshot is published with it listed as missing.
func TestMissingResourceTimeout(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			// A listener whose route configuration the server does not have, and a
			// cluster without endpoints.
			if err := srv.Update(xdstest.Listener("0.0.0.0_8080", 8080, []string{"8080"}, ""), xdstest.EDSCluster("outbound|8080||c")); err != nil {
				t.Fatal(err)
			}
			c := startClient(t, srv, p, func(cfg *client.Config) { cfg.ResourceTimeout = 200 * time.Millisecond })
			s := waitSnapshot(t, c, func(*resource.State) bool { return true })
			if got := countsOf(s); got != (counts{2, 1, 4, 2}) {
				t.Errorf("counts %+v, want everything that arrived", got)
			}
			want := []resource.MissingResource{
				{TypeURL: resource.EndpointType, Name: "outbound|8080||c"},
				{TypeURL: resource.RouteConfigType, Name: "8080"},
			}
			if !equalMissing(s.Missing, want) || !equalMissing(c.Status().Missing, want) {
				t.Errorf("missing %v (status %v), want %v", s.Missing, c.Status().Missing, want)
			}

			// When it arrives late it is published and no longer missing.
			if err := srv.Update(xdstest.RouteConfig("8080", "outbound|9080||a")); err != nil {
				t.Fatal(err)
			}
			s = waitSnapshot(t, c, func(s *resource.State) bool { return len(s.RouteConfigs) == 2 })
			if !equalMissing(s.Missing, want[:1]) {
				t.Errorf("missing %v, want %v", s.Missing, want[:1])
			}
		})
	}
}

func equalMissing(a, b []resource.MissingResource) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
