package client_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// Each client decodes with its own interning table, and each stream with a new one.
// Clusters that differ only in their names share their shape when decoded on one
// stream of one client; a second client's do not share them, nor do clusters decoded
// after a reconnect. What was published before the reconnect keeps its pointers and
// content.
func TestInternerPerClientAndStream(t *testing.T) {
	const a, b, c, d = "outbound|9080||a", "outbound|9080||b", "outbound|9080||c", "outbound|9080||d"
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			c1 := startClient(t, srv, p, nil)
			c2 := startClient(t, srv, p, nil)
			s1 := waitSnapshot(t, c1, hasCounts(counts{1, 1, 3, 2}))
			s2 := waitSnapshot(t, c2, hasCounts(counts{1, 1, 3, 2}))
			a1, b1 := s1.Clusters[a], s1.Clusters[b]
			if a1.Shape() != b1.Shape() {
				t.Fatal("clusters that differ only in their names, decoded on one stream, do not share their shape")
			}
			if a2 := s2.Clusters[a]; a2.Shape() == a1.Shape() || !a2.Equal(a1) {
				t.Error("two clients share an interned shape, or decoded different content")
			}
			shape := proto.Clone(a1.Shape())

			srv.Stop()
			waitStatus(t, c1, func(st client.Status) bool { return st.Reconnects >= 1 && st.State != client.Connected })
			withCluster := func(names ...string) {
				cs := []proto.Message{xdstest.StaticCluster("BlackHoleCluster")}
				es := []proto.Message{}
				for _, n := range names {
					cs = append(cs, xdstest.EDSCluster(n))
					es = append(es, xdstest.Endpoints(n, "10.0.0.1:9080"))
				}
				srv.Set(resource.ClusterType, cs...)
				srv.Set(resource.EndpointType, es...)
			}
			withCluster(a, b, c)
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			s := waitSnapshot(t, c1, func(s *resource.State) bool { return s.Clusters[c] != nil && s.Endpoints[c] != nil })
			if s.Clusters[a] != a1 || s.Clusters[b] != b1 {
				t.Error("clusters resent unchanged after the reconnect were replaced")
			}
			if !proto.Equal(a1.Shape(), shape) {
				t.Error("the shape published before the reconnect changed")
			}
			cc := s.Clusters[c]
			if cc.Shape() == a1.Shape() || !proto.Equal(cc.Shape(), shape) {
				t.Error("the new stream decoded with the previous stream's table, or decoded different content")
			}

			withCluster(a, b, c, d)
			s = waitSnapshot(t, c1, func(s *resource.State) bool { return s.Clusters[d] != nil && s.Endpoints[d] != nil })
			if s.Clusters[d].Shape() != cc.Shape() {
				t.Error("the new stream's table does not share the shape of clusters decoded on it")
			}
		})
	}
}
