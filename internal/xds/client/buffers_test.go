package client

import (
	"fmt"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xdstest"
)

// The codec decodes small and large messages alike (large ones from a buffer of their
// own), and encodes like gRPC's proto codec.
func TestCodecRoundTrip(t *testing.T) {
	c := newCodec()
	for _, n := range []int{2, 40000} { // a few hundred bytes; well over maxPooledBuffer
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.%d.%d.%d:9080", i>>16&255, i>>8&255, i&255)
		}
		in := xdstest.Endpoints("outbound|9080||big", addrs...)
		data, err := c.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		if n > 2 && data.Len() <= maxPooledBuffer {
			t.Fatalf("test message of %d bytes does not exceed maxPooledBuffer", data.Len())
		}
		out := &endpointv3.ClusterLoadAssignment{}
		if err := c.Unmarshal(data, out); err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(in, out) {
			t.Errorf("%d endpoints: the decoded message differs", n)
		}
		data.Free()
	}
}
