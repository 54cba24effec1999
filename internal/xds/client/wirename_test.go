package client

import (
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xdstest"
)

// wireName finds the name of every kind the client stores, wherever field 1 is in
// the bytes, and gives up on malformed bytes.
func TestWireName(t *testing.T) {
	for _, m := range []proto.Message{
		xdstest.EDSCluster("outbound|80||a.default.svc.cluster.local"),
		xdstest.StaticCluster("static"),
		xdstest.Endpoints("outbound|80||a.default.svc.cluster.local", "10.0.0.1:80"),
		xdstest.Listener("0.0.0.0_80", 80, []string{"80"}, ""),
		xdstest.RouteConfig("80", "outbound|80||a.default.svc.cluster.local"),
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		want := nameOf(m)
		if got := string(wireName(b)); got != want {
			t.Errorf("%T: wireName %q, want %q", m, got, want)
		}
	}
	// Field 1 after other fields is found too.
	late := protowire.AppendString(protowire.AppendTag(protowire.AppendVarint(protowire.AppendTag(nil, 99, protowire.VarintType), 7), 1, protowire.BytesType), "late")
	if got := string(wireName(late)); got != "late" {
		t.Errorf("name after another field: %q, want \"late\"", got)
	}
	if got := wireName([]byte{0x0a, 0x05, 'a'}); got != nil {
		t.Errorf("truncated name: %q, want nil", got)
	}
	if got := wireName(protowire.AppendVarint(protowire.AppendTag(nil, 2, protowire.VarintType), 7)); got != nil {
		t.Errorf("no name: %q, want nil", got)
	}
}
