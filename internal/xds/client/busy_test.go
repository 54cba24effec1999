package client_test

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// While the client decodes a large response, Status and Next answer at once: the
// decoding holds nothing they wait for. Status shows the response counted and not
// yet acknowledged (its arrival is posted before decoding, its ACK after), and Next
// hands over the update published before it; a Status taken after Next returned
// still shows the response unacknowledged. If either waited for the decoding, the
// first Status seeing the response would already see it acknowledged.
func TestStatusAndNextDuringDecoding(t *testing.T) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, hasCounts(counts{1, 1, 3, 2}))

			// An update left for Next to take during the decoding.
			if err := srv.Update(xdstest.Endpoints("outbound|9080||a", "10.0.0.9:9080")); err != nil {
				t.Fatal(err)
			}
			waitStatus(t, c, func(st client.Status) bool { return st.Seq == first.Seq+1 })
			before := c.Status().Types[resource.ClusterType]

			// Enough clusters to keep the decoding busy far longer than a Status or a
			// Next takes, whatever the machine.
			const n = 10000
			big := make([]proto.Message, n)
			for i := range big {
				big[i] = xdstest.StaticCluster(fmt.Sprintf("static-%05d", i))
			}
			if err := srv.Update(big...); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(mustHappen)
			var during client.TypeStatus
			for {
				during = c.Status().Types[resource.ClusterType]
				if during.Responses > before.Responses {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the large response never arrived: %d responses", during.Responses)
				}
			}
			seen := time.Now()
			if during.ACKs != before.ACKs {
				t.Fatalf("Status first saw the large response already acknowledged: %d responses %d ACKs (before %d and %d)",
					during.Responses, during.ACKs, before.Responses, before.ACKs)
			}
			u, err := c.Next(ctxFor(t, mustHappen))
			if err != nil {
				t.Fatal(err)
			}
			took := time.Since(seen)
			after := c.Status().Types[resource.ClusterType]
			if u.Seq != first.Seq+1 || len(u.Clusters.Upsert) != 0 {
				t.Errorf("Next returned update %d with %d clusters, want %d, the endpoint change", u.Seq, len(u.Clusters.Upsert), first.Seq+1)
			}
			if after.ACKs != before.ACKs {
				t.Errorf("Next returned (after %v) only once the large response was acknowledged", took)
			}

			s := waitSnapshot(t, c, func(s *resource.State) bool { return len(s.Clusters) == 3+n })
			t.Logf("Next returned %v after Status saw the response; the response was handled %v after", took, time.Since(seen))
			if s.Seq != first.Seq+2 {
				t.Errorf("the large response was published as %d, want %d", s.Seq, first.Seq+2)
			}
		})
	}
}
