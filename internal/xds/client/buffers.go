package client

import (
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
)

// maxPooledBuffer is the largest message buffer kept for reuse between responses.
const maxPooledBuffer = 1 << 20

// Large messages get buffers of their own, never pooled. An initial sync or a full
// push of a 10,000-service mesh brings responses of 30–40 MB each; gRPC's pools keep
// buffers of any size in sync.Pools, which release them only after two garbage
// collections, and in a quiet sidecar those can be minutes apart: after every full
// push the agent held 60–86 MiB of receive buffers (measured with the bench's SotW
// identical push and its heap profiles). Large responses are rare, so allocating their
// buffers fresh costs nothing that matters. Two places take such buffers: the
// connection's frames (largeUnpooled) and the codec, which copies a received message
// into one piece before decoding it (codec).

// largeUnpooled is the buffer pool of the xDS connection: gRPC's default pool for
// ordinary buffers, fresh ones for large buffers.
type largeUnpooled struct{ small mem.BufferPool }

func (p largeUnpooled) Get(length int) *[]byte {
	if length > maxPooledBuffer {
		b := make([]byte, length)
		return &b
	}
	return p.small.Get(length)
}

func (p largeUnpooled) Put(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return // left to the garbage collector
	}
	p.small.Put(b)
}

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
