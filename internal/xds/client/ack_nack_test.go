package client_test

import (
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// Every response is ACKed with its nonce and (SotW) its version, and an invalid one is
// NACKed with its nonce, the last accepted version and an error_detail naming the
// resource and the problem.
func TestACKAndNACKContents(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			// Every response so far was ACKed by a request carrying its nonce and version.
			for _, resp := range srv.Responses() {
				ack, err := srv.WaitRequest(ctxFor(t, mustHappen), 0, func(r xdstest.Request) bool {
					return r.Stream == resp.Stream && r.TypeURL() == resp.TypeURL && r.Nonce() == resp.Nonce
				})
				if err != nil {
					t.Fatalf("response %+v never ACKed: %v", resp, err)
				}
				if ack.IsNACK() {
					t.Fatalf("response %+v NACKed: %s", resp, ack.ErrorDetail())
				}
				if p == client.SotW && ack.SotW.GetVersionInfo() != resp.Version {
					t.Errorf("ACK of %s has version %q, want %q", resp.TypeURL, ack.SotW.GetVersionInfo(), resp.Version)
				}
			}
			goodVersion := c.Status().Types[resource.ClusterType].Version

			mark := srv.Mark()
			if err := srv.Update(xdstest.InvalidCluster("outbound|9080||bad")); err != nil {
				t.Fatal(err)
			}
			nack, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool { return r.IsNACK() })
			if err != nil {
				t.Fatal(err)
			}
			resp, ok := srv.ResponseByNonce(nack.Stream, nack.Nonce())
			if !ok || resp.TypeURL != resource.ClusterType || !contains(resp.Names, "outbound|9080||bad") {
				t.Fatalf("NACK nonce %q does not match the response with the invalid cluster (found %v: %+v)", nack.Nonce(), ok, resp)
			}
			detail := nack.ErrorDetail()
			for _, want := range []string{`cluster "outbound|9080||bad"`, "ConnectTimeout"} {
				if !strings.Contains(detail, want) {
					t.Errorf("error_detail %q does not mention %q", detail, want)
				}
			}
			if p == client.SotW {
				if got := nack.SotW.GetVersionInfo(); got != goodVersion || got == resp.Version {
					t.Errorf("NACK version_info %q, want the last accepted %q (rejected: %q)", got, goodVersion, resp.Version)
				}
				if len(nack.SotW.GetResourceNames()) != 0 {
					t.Errorf("NACK changed the wildcard subscription: %v", nack.SotW.GetResourceNames())
				}
			}
			st := c.Status().Types[resource.ClusterType]
			if st.NACKs != 1 || !strings.Contains(st.LastNACK, "outbound|9080||bad") {
				t.Errorf("status after NACK: %+v", st)
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
