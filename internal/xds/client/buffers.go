package client

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// maxPooledBuffer is the largest received message the codec decodes from a buffer of
// gRPC's global pool.
const maxPooledBuffer = 1 << 20

// The xDS connection pools none of its buffers (dial: mem.NopBufferPool), and the
// codec copies a large received message into a fresh buffer. gRPC's pools are
// sync.Pools, which release buffers only after two garbage collections, and in a
// quiet sidecar those can be minutes apart. An initial sync or a full push of a large
// mesh brings responses of tens of megabytes, read as thousands of frames: pooled,
// they would stay on the heap long after the push (BENCHMARKS.md has the figures).
// xDS traffic is rare next to a data plane's, so allocating its buffers fresh costs
// nothing that matters.

// codec is gRPC's proto codec, except that a large received message is copied into a
// fresh buffer instead of one from gRPC's global pool.
type codec struct{ proto encoding.CodecV2 }

func newCodec() codec { return codec{proto: encoding.GetCodecV2("proto")} }

func (c codec) Name() string { return c.proto.Name() }

func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok || data.Len() <= maxPooledBuffer {
		return c.proto.Unmarshal(data, v)
	}
	return proto.Unmarshal(data.Materialize(), m)
}
