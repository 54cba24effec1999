package client_test

import (
	"bytes"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// mapOrderCluster returns cluster name (an EDS cluster) with two
// typed_extension_protocol_options entries, "a" and "b" (a field the client keeps, see
// resource.Prune), serialized in the given key order. The message it returns carries
// everything but the name as unknown fields, so that any marshaller (the fake server's
// cache marshals deterministically) reproduces exactly these bytes: istiod marshals
// maps in no stable order, and this is how a test makes such a resend on purpose.
func mapOrderCluster(t *testing.T, name string, keys ...string) *clusterv3.Cluster {
	t.Helper()
	values := map[string]string{"a": "1", "b": "2"}
	optsField := (&clusterv3.Cluster{}).ProtoReflect().Descriptor().Fields().ByName("typed_extension_protocol_options").Number()
	rest := xdstest.EDSCluster(name)
	rest.Name = ""
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
		unknown = protowire.AppendTag(unknown, optsField, protowire.BytesType)
		unknown = protowire.AppendBytes(unknown, e)
	}
	c := &clusterv3.Cluster{Name: name}
	c.ProtoReflect().SetUnknown(unknown)
	return c
}

// An unchanged resource that arrives with other bytes (map entries in another order)
// is not a change: no snapshot is published, the decoded message keeps its pointer,
// and a later real change lists only what really changed.
func TestMapOrderResendIsNoChange(t *testing.T) {
	const name = "outbound|9080||a"
	ab := mapOrderCluster(t, name, "a", "b")
	ba := mapOrderCluster(t, name, "b", "a")
	det := proto.MarshalOptions{Deterministic: true}
	abBytes, err1 := det.Marshal(ab)
	baBytes, err2 := det.Marshal(ba)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if bytes.Equal(abBytes, baBytes) {
		t.Fatal("the two serializations are identical; the test would check nothing")
	}
	var decAB, decBA clusterv3.Cluster
	if err := proto.Unmarshal(abBytes, &decAB); err != nil {
		t.Fatal(err)
	}
	if err := proto.Unmarshal(baBytes, &decBA); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(&decAB, &decBA) || len(decAB.GetTypedExtensionProtocolOptions()) != 2 {
		t.Fatalf("the two serializations do not decode to the same cluster with two options: %v / %v", &decAB, &decBA)
	}

	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			srv := newServer(t, xdsOpts())
			basicMesh(t, srv)
			srv.Set(resource.ClusterType, ab, xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"))
			c := startClient(t, srv, p, nil)
			first := waitSnapshot(t, c, func(s *resource.Snapshot) bool {
				return countsOf(s) == counts{1, 1, 3, 2} && len(s.Clusters[name].GetTypedExtensionProtocolOptions()) == 2
			})
			kept := first.Clusters[name]
			seq := first.Seq

			// The same cluster in the other byte order, then the first order again, then
			// the second again (now a remembered form): each is sent and ACKed, and
			// none publishes a snapshot.
			for i, m := range []*clusterv3.Cluster{ba, ab, ba} {
				mark := srv.Mark()
				if err := srv.Update(m); err != nil {
					t.Fatal(err)
				}
				ackOf(t, srv, mark, name)
				if st := c.Status(); st.Seq != seq {
					t.Fatalf("resend %d of an unchanged cluster published snapshot %d (last was %d)", i, st.Seq, seq)
				}
			}

			// A real change: exactly one snapshot, listing only that cluster.
			srv.Set(resource.ClusterType, ba, xdstest.EDSCluster("outbound|9080||b"), xdstest.StaticCluster("BlackHoleCluster"), xdstest.StaticCluster("PassthroughCluster"))
			s := waitSnapshot(t, c, func(s *resource.Snapshot) bool { return len(s.Clusters) == 4 })
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

// ackOf waits for the client to ACK a cluster response sent after mark that carried
// name.
func ackOf(t *testing.T, srv *xdstest.Server, mark int, name string) {
	t.Helper()
	_, err := srv.WaitRequest(ctxFor(t, mustHappen), mark, func(r xdstest.Request) bool {
		if r.TypeURL() != resource.ClusterType || r.IsNACK() || r.Nonce() == "" {
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
