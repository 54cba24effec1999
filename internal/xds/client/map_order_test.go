package client_test

import (
	"bytes"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// mapOrderCluster returns cluster name (an EDS cluster) with two
// typed_extension_protocol_options entries, "a" and "b" (a field the client keeps, see
// resource.Prune), serialized in the given key order (see withMapOrder).
func mapOrderCluster(t *testing.T, name string, keys ...string) *clusterv3.Cluster {
	t.Helper()
	rest := xdstest.EDSCluster(name)
	rest.Name = ""
	c := &clusterv3.Cluster{Name: name}
	withMapOrder(t, c, rest, "typed_extension_protocol_options", keys...)
	return c
}

// mapOrderRouteConfig is mapOrderCluster for a route configuration sending everything
// to cluster, with two typed_per_filter_config entries.
func mapOrderRouteConfig(t *testing.T, name, cluster string, keys ...string) *routev3.RouteConfiguration {
	t.Helper()
	rest := xdstest.RouteConfig(name, cluster)
	rest.Name = ""
	rc := &routev3.RouteConfiguration{Name: name}
	withMapOrder(t, rc, rest, "typed_per_filter_config", keys...)
	return rc
}

// withMapOrder sets the unknown fields of m (which holds only its name) to rest (the
// rest of the message) followed by the entries "a" and "b" of m's map field, in the
// given key order. So any marshaller (the fake server's cache marshals
// deterministically) reproduces exactly these bytes: istiod marshals maps in no stable
// order, and this is how a test makes such a resend on purpose.
func withMapOrder(t *testing.T, m, rest proto.Message, field protoreflect.Name, keys ...string) {
	t.Helper()
	values := map[string]string{"a": "1", "b": "2"}
	num := m.ProtoReflect().Descriptor().Fields().ByName(field).Number()
	unknown, err := proto.Marshal(rest)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		a, err := anypb.New(wrapperspb.String(values[k]))
		if err != nil {
			t.Fatal(err)
		}
		v, err := proto.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		var e []byte // map entry {1: key, 2: value}
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		e = protowire.AppendBytes(e, v)
		unknown = protowire.AppendTag(unknown, num, protowire.BytesType)
		unknown = protowire.AppendBytes(unknown, e)
	}
	m.ProtoReflect().SetUnknown(unknown)
}

// twoOrders marshals a and b deterministically and checks that they are different
// bytes that decode to equal messages (into fresh messages of a's type).
func twoOrders(t *testing.T, a, b proto.Message) {
	t.Helper()
	det := proto.MarshalOptions{Deterministic: true}
	aBytes, err1 := det.Marshal(a)
	bBytes, err2 := det.Marshal(b)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if bytes.Equal(aBytes, bBytes) {
		t.Fatal("the two serializations are identical; the test would check nothing")
	}
	decA, decB := a.ProtoReflect().Type().New().Interface(), a.ProtoReflect().Type().New().Interface()
	if err := proto.Unmarshal(aBytes, decA); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(bBytes, decB); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(decA, decB) {
		t.Fatalf("the two serializations do not decode to the same message: %v / %v", decA, decB)
	}
}

// An unchanged resource that arrives with other bytes (map entries in another order)
// is not a change: no snapshot is published, the stored Cluster keeps its pointer,
// and a later real change lists only what really changed.
func TestMapOrderResendIsNoChange(t *testing.T) {
	const name = "outbound|9080||a"
	ab := mapOrderCluster(t, name, "a", "b")
	ba := mapOrderCluster(t, name, "b", "a")
	twoOrders(t, ab, ba)

	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			srv.Set(resource.ClusterType, ab, xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"))
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, func(s *resource.State) bool {
				if countsOf(s) != (counts{1, 1, 3, 2}) {
					return false
				}
				m, err := s.Clusters[name].Message()
				return err == nil && len(m.GetTypedExtensionProtocolOptions()) == 2
			})
			kept := first.Clusters[name]
			seq := first.Seq
			// The ACK of the first response may reach the server after a mark taken
			// now; wait for it, so that ackOf below finds the resends' ACKs.
			ackOf(t, srv, 0, resource.ClusterType, name)

			// The same cluster in the other byte order, then the first order again, then
			// the second again (now a remembered form): each is sent and ACKed, and
			// none publishes a snapshot.
			for i, m := range []*clusterv3.Cluster{ba, ab, ba} {
				mark := srv.Mark()
				if err := srv.Update(m); err != nil {
					t.Fatal(err)
				}
				ackOf(t, srv, mark, resource.ClusterType, name)
				if st := c.Status(); st.Seq != seq {
					t.Fatalf("resend %d of an unchanged cluster published snapshot %d (last was %d)", i, st.Seq, seq)
				}
			}

			// A real change: exactly one snapshot, listing only that cluster.
			srv.Set(resource.ClusterType, ba, xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"), xdstest.StaticCluster("PassthroughCluster"))
			s := waitSnapshot(t, c, func(s *resource.State) bool { return len(s.Clusters) == 4 })
			if s.Seq != seq+1 {
				t.Errorf("seq %d, want %d: the resends published snapshots", s.Seq, seq+1)
			}
			if s.Clusters[name] != kept {
				t.Error("cluster a was decoded anew although its content never changed")
			}
			if _, ok := s.Changes.Clusters["PassthroughCluster"]; !ok || len(s.Changes.Clusters) != 1 || s.Changes.Since != seq {
				t.Errorf("changes %+v, want only PassthroughCluster since %d", s.Changes, seq)
			}
		})
	}
}

// The same for a route configuration, which the client keeps in wire form
// (resource.RouteConfig): a resend in another map order keeps the published
// RouteConfig, and a later change elsewhere does not list it.
func TestMapOrderRouteConfigResendIsNoChange(t *testing.T) {
	const name, cluster = "9080", "outbound|9080||a"
	ab := mapOrderRouteConfig(t, name, cluster, "a", "b")
	ba := mapOrderRouteConfig(t, name, cluster, "b", "a")
	twoOrders(t, ab, ba)

	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			srv.Set(resource.RouteConfigType, ab)
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, func(s *resource.State) bool {
				if countsOf(s) != (counts{1, 1, 3, 2}) {
					return false
				}
				m, err := s.RouteConfigs[name].Message()
				return err == nil && len(m.GetTypedPerFilterConfig()) == 2
			})
			kept := first.RouteConfigs[name]
			seq := first.Seq
			// The ACK of the first response may reach the server after a mark taken
			// now; wait for it, so that ackOf below finds the resends' ACKs.
			ackOf(t, srv, 0, resource.RouteConfigType, name)

			for i, m := range []*routev3.RouteConfiguration{ba, ab, ba} {
				mark := srv.Mark()
				if err := srv.Update(m); err != nil {
					t.Fatal(err)
				}
				ackOf(t, srv, mark, resource.RouteConfigType, name)
				if st := c.Status(); st.Seq != seq {
					t.Fatalf("resend %d of an unchanged route configuration published snapshot %d (last was %d)", i, st.Seq, seq)
				}
			}

			srv.Set(resource.ClusterType, xdstest.EDSCluster(cluster), xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"), xdstest.StaticCluster("PassthroughCluster"))
			s := waitSnapshot(t, c, func(s *resource.State) bool { return len(s.Clusters) == 4 })
			if s.Seq != seq+1 {
				t.Errorf("seq %d, want %d: the resends published snapshots", s.Seq, seq+1)
			}
			if s.RouteConfigs[name] != kept {
				t.Error("route configuration was decoded anew although its content never changed")
			}
			if len(s.Changes.RouteConfigs) != 0 || s.Changes.Full {
				t.Errorf("changes %+v list route configurations", s.Changes)
			}
		})
	}
}

// ackOf waits for the client to ACK a response of type typeURL sent after mark that
// carried name.
func ackOf(t *testing.T, srv *xdstest.Server, mark int, typeURL, name string) {
	t.Helper()
	_, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool {
		if r.TypeURL() != typeURL || r.IsNACK() || r.Nonce() == "" {
			return false
		}
		resp, ok := srv.ResponseByNonce(r.Stream, r.Nonce())
		if !ok {
			return false
		}
		for _, n := range resp.Names {
			if n == name {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Fatal(err)
	}
}
