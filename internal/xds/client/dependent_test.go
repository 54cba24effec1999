package client_test

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// A listener naming a new route configuration subscribes to it before the LDS ACK,
// and the snapshot waits for it (consistency); removing the listener unsubscribes.
// The RDS names of every filter chain count, the default chain included.
func TestDependentSubscriptions(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			mark := srv.Mark()
			if err := srv.Update(xdstest.Listener("0.0.0.0_8080", 8080, []string{"8080"}, "default-8080")); err != nil {
				t.Fatal(err)
			}
			sub, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, subReq(resource.RouteConfigType, "8080", "9080", "default-8080"))
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"8080", "9080", "default-8080"}
			if p == client.Delta {
				want = []string{"8080", "default-8080"}
				if got := sub.Delta.GetResourceNamesSubscribe(); !equal(got, want) {
					t.Errorf("subscribe %v, want %v", got, want)
				}
			} else if got := sub.SotW.GetResourceNames(); !equal(got, want) {
				t.Errorf("RDS names %v, want %v", got, want)
			}
			// The subscription went out before the LDS ACK.
			ack, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool {
				resp, ok := srv.ResponseByNonce(r.Stream, r.Nonce())
				return r.TypeURL() == resource.ListenerType && ok && contains(resp.Names, "0.0.0.0_8080")
			})
			if err != nil {
				t.Fatal(err)
			}
			reqs := srv.Requests()
			if indexOf(reqs, sub) > indexOf(reqs, ack) {
				t.Error("LDS ACK sent before the RDS subscription")
			}
			// The ACK has been handled (its status is posted before it is sent): nothing
			// published while the route configurations are missing.
			if st := c.Status(); st.Seq != first.Seq || st.Types[resource.RouteConfigType].Subscribed != 3 {
				t.Fatalf("published seq %d with route configs missing (status %+v)", st.Seq, st.Types[resource.RouteConfigType])
			}

			if err := srv.Update(xdstest.RouteConfig("8080", "outbound|9080||b"), xdstest.RouteConfig("default-8080", "outbound|9080||a")); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c, hasCounts(counts{2, 3, 3, 2}))
			if s.Seq != first.Seq+1 {
				t.Errorf("seq %d, want %d: an inconsistent snapshot was published in between", s.Seq, first.Seq+1)
			}

			mark = srv.Mark()
			if err := srv.Remove(resource.ListenerType, "0.0.0.0_8080"); err != nil {
				t.Fatal(err)
			}
			s = waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))
			if _, ok := s.RouteConfigs["9080"]; !ok {
				t.Error("route config 9080 lost")
			}
			unsub, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, subReq(resource.RouteConfigType, "9080"))
			if err != nil {
				t.Fatal(err)
			}
			if p == client.Delta {
				if got := unsub.Delta.GetResourceNamesUnsubscribe(); !equal(got, []string{"8080", "default-8080"}) {
					t.Errorf("unsubscribe %v", got)
				}
			} else if got := unsub.SotW.GetResourceNames(); !equal(got, []string{"9080"}) {
				t.Errorf("RDS names %v, want [9080]", got)
			}
		})
	}
}

func equal(a, b []string) bool {
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

func indexOf(reqs []xdstest.Request, r xdstest.Request) int {
	for i, x := range reqs {
		if x.SotW == r.SotW && x.Delta == r.Delta {
			return i
		}
	}
	return -1
}

// subReq matches requests of typeURL that change the subscription: Delta requests
// with names to (un)subscribe, SotW requests listing exactly sotwNames.
func subReq(typeURL string, sotwNames ...string) func(xdstest.Request) bool {
	return func(r xdstest.Request) bool {
		if r.TypeURL() != typeURL {
			return false
		}
		if r.Delta != nil {
			return len(r.Delta.GetResourceNamesSubscribe())+len(r.Delta.GetResourceNamesUnsubscribe()) > 0 && r.Nonce() == ""
		}
		return equal(r.SotW.GetResourceNames(), sotwNames)
	}
}
