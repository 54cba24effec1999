package client_test

import (
	"path/filepath"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// The xDS a real istiod sent a sidecar (testdata/istiod, see its README), served by the
// fake control plane, comes out of the client as one complete, consistent snapshot
// equal to what istiod sent.
func TestReplayIstiod(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want counts
	}{
		{"sotw", counts{L: 4, R: 1, C: 13, E: 9}}, // REDIRECT mode
		{"delta", counts{L: 4, R: 1, C: 13, E: 9}},
		{"sotw-interception-none", counts{L: 2, R: 1, C: 12, E: 9}},
	} {
		res, err := dump.LoadDir(filepath.Join("..", "..", "..", "testdata", "istiod", tc.dir))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range protocols {
			t.Run(tc.dir+"/"+string(p), func(t *testing.T) {
				srv := newServer(t, xdsOpts())
				srv.Set(resource.ClusterType, msgs(res.Clusters)...)
				srv.Set(resource.EndpointType, msgs(res.Endpoints)...)
				srv.Set(resource.ListenerType, msgs(res.Listeners)...)
				srv.Set(resource.RouteConfigType, msgs(res.RouteConfigs)...)
				c := startClient(t, srv, p, nil)

				s := waitSnapshot(t, c, func(*resource.State) bool { return true })
				if got := countsOf(s); got != tc.want {
					t.Fatalf("first snapshot %+v, want %+v", got, tc.want)
				}
				if len(s.Missing) != 0 {
					t.Errorf("missing %v", s.Missing)
				}
				assertConsistent(t, s)
				want := res.Snapshot()
				for name, l := range want.Listeners {
					if !proto.Equal(pruned(l), s.Listeners[name]) {
						t.Errorf("listener %s differs from what istiod sent (pruned)", name)
					}
				}
				for _, r := range res.RouteConfigs {
					got := s.RouteConfigs[r.GetName()]
					if got == nil {
						t.Errorf("route config %s missing", r.GetName())
						continue
					}
					m, err := got.Message()
					if err != nil {
						t.Fatalf("route config %s: %v", r.GetName(), err)
					}
					if !proto.Equal(pruned(r), m) || !got.Equal(resource.AsStored(r).(*resource.RouteConfig)) {
						t.Errorf("route config %s differs", r.GetName())
					}
				}
				for _, cl := range res.Clusters {
					got := s.Clusters[cl.GetName()]
					if got == nil {
						t.Errorf("cluster %s missing", cl.GetName())
						continue
					}
					m, err := got.Message()
					if err != nil {
						t.Fatalf("cluster %s: %v", cl.GetName(), err)
					}
					if !proto.Equal(pruned(cl), m) || !got.Equal(resource.AsStored(cl).(*resource.Cluster)) {
						t.Errorf("cluster %s differs", cl.GetName())
					}
				}
				for name, e := range want.Endpoints {
					if !e.Equal(s.Endpoints[name]) { // the dump's are converted with FromCLA
						t.Errorf("endpoints %s differ", name)
					}
				}
				for u, ts := range c.Status().Types {
					if ts.NACKs != 0 {
						t.Errorf("%s NACKed: %s", u, ts.LastNACK)
					}
				}
			})
		}
	}
}

// assertConsistent checks the Snapshot contract: every RDS name of a listener and
// every EDS name of a cluster is present.
func assertConsistent(t *testing.T, s *resource.State) {
	t.Helper()
	for name, l := range s.Listeners {
		rds, err := resource.ListenerRouteNames(l)
		if err != nil {
			t.Errorf("listener %s: %v", name, err)
		}
		for _, r := range rds {
			if s.RouteConfigs[r] == nil {
				t.Errorf("listener %s needs route config %s, not in the snapshot", name, r)
			}
		}
	}
	for name, cl := range s.Clusters {
		if cl.EDS != "" && s.Endpoints[cl.EDS] == nil {
			t.Errorf("cluster %s has no endpoints in the snapshot", name)
		}
	}
}

func msgs[M proto.Message](in []M) []proto.Message {
	out := make([]proto.Message, len(in))
	for i, m := range in {
		out[i] = m
	}
	return out
}
