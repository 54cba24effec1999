package client

import (
	"fmt"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xdstest"
)

// countingPool records what reaches the pool behind largeUnpooled.
type countingPool struct{ gets, puts int }

func (p *countingPool) Get(n int) *[]byte { p.gets++; b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.puts++ }

// Ordinary buffers go through the pool; large ones are neither taken from it nor
// returned to it, so they are freed by the next garbage collection.
func TestLargeBuffersAreNotPooled(t *testing.T) {
	inner := &countingPool{}
	p := largeUnpooled{small: inner}
	small := p.Get(4096)
	p.Put(small)
	if inner.gets != 1 || inner.puts != 1 || len(*small) != 4096 {
		t.Fatalf("small buffer: %d gets, %d puts, len %d; want 1, 1, 4096", inner.gets, inner.puts, len(*small))
	}
	large := p.Get(maxPooledBuffer + 1)
	p.Put(large)
	if inner.gets != 1 || inner.puts != 1 || len(*large) != maxPooledBuffer+1 {
		t.Fatalf("large buffer: %d gets, %d puts, len %d; want the pool untouched and a buffer of the length asked", inner.gets, inner.puts, len(*large))
	}
}

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
