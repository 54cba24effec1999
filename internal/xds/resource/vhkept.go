package resource

// The virtual hosts of a route configuration are kept compressed. Their wire forms are
// the largest single item of the agent's heap, and each is read only when it changed
// or a cluster it routes to did. DEFLATE at BestSpeed halves them cheaply (figures in
// BENCHMARKS.md); each is compressed on its own, so that one can
// still be compared (bytes.Equal) and decoded without the others.
//
// The kept form is a function of the wire form alone, and the wire form can be read
// back from it: equal kept forms <=> equal wire forms, which the translator's resend
// check relies on. A kept form is either the wire form itself, or compressedMark, the
// wire form's length (uvarint) and the wire form as a raw DEFLATE stream, whichever is
// shorter. A serialized message never starts with compressedMark (a tag of 0 would be
// field number 0, which does not exist), so the two cannot be confused; a wire form
// that does start with it (unknown fields only, set in code) is always compressed.

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"io"
	"sync"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// compressedMark starts a compressed kept form.
const compressedMark = 0

// vhCompressor makes kept forms. A flate.Writer holds hundreds of kilobytes of state:
// one is made per goroutine of a large decode, or taken from compressors, never per
// virtual host.
type vhCompressor struct {
	w   *flate.Writer
	out appendWriter
}

// compressors serves the small configurations (NewRouteConfig), which are decoded
// often: a large one's workers make their own, which are garbage after its decode
// instead of staying in the pool until two garbage collections have passed.
var compressors = sync.Pool{New: func() any { return newVHCompressor() }}

func newVHCompressor() *vhCompressor {
	w, err := flate.NewWriter(nil, flate.BestSpeed)
	if err != nil {
		panic(err) // only for an invalid level
	}
	return &vhCompressor{w: w}
}

// appendWriter appends what is written to b.
type appendWriter struct{ b []byte }

func (a *appendWriter) Write(p []byte) (int, error) {
	a.b = append(a.b, p...)
	return len(p), nil
}

// appendKept appends the kept form of wire to dst. Writer.Reset makes the writer
// equivalent to a new one, so the output depends on wire only.
func (c *vhCompressor) appendKept(dst, wire []byte) []byte {
	start := len(dst)
	dst = append(dst, compressedMark)
	dst = binary.AppendUvarint(dst, uint64(len(wire)))
	c.out.b = dst
	c.w.Reset(&c.out)
	_, _ = c.w.Write(wire) // appendWriter does not fail, so neither does the writer
	_ = c.w.Close()
	dst, c.out.b = c.out.b, nil
	if len(dst)-start < len(wire) || len(wire) > 0 && wire[0] == compressedMark {
		return dst
	}
	return append(dst[:start], wire...)
}

// keptHeader returns the length of the wire form of a compressed kept form and the
// DEFLATE stream, compressed false for a wire form kept as is.
func keptHeader(kept []byte) (n uint64, stream []byte, compressed bool, err error) {
	if len(kept) == 0 || kept[0] != compressedMark {
		return uint64(len(kept)), nil, false, nil
	}
	n, m := binary.Uvarint(kept[1:])
	if m <= 0 {
		return 0, nil, true, errors.New("virtual host: bad compressed length")
	}
	stream = kept[1+m:]
	// DEFLATE expands at most 1032:1 (258 bytes per 2-bit match): a larger length is
	// corrupt, and must not be allocated.
	if n > uint64(len(stream))*1032+64 {
		return 0, nil, true, errors.New("virtual host: compressed length out of range")
	}
	return n, stream, true, nil
}

// keptWireLen is the length of the wire form of a kept form (0 when corrupt).
func keptWireLen(kept []byte) int {
	n, _, _, err := keptHeader(kept)
	if err != nil {
		return 0
	}
	return int(n)
}

// vhDecompressor reads kept forms back. A flate reader holds tens of kilobytes: pooled.
type vhDecompressor struct {
	r   io.ReadCloser // also a flate.Resetter
	src bytes.Reader
	buf []byte
}

var decompressors = sync.Pool{New: func() any {
	d := &vhDecompressor{}
	d.r = flate.NewReader(&d.src)
	return d
}}

// maxPooledBuf bounds the wire buffer a pooled decompressor keeps (one virtual host
// with thousands of routes need not stay in memory).
const maxPooledBuf = 64 << 10

// wire returns the wire form of kept: kept itself, or decompressed into d.buf (valid
// until d is used again).
func (d *vhDecompressor) wire(kept []byte) ([]byte, error) {
	n, stream, compressed, err := keptHeader(kept)
	if err != nil || !compressed {
		return kept, err
	}
	d.src.Reset(stream)
	if err := d.r.(flate.Resetter).Reset(&d.src, nil); err != nil {
		return nil, err
	}
	if uint64(cap(d.buf)) < n {
		d.buf = make([]byte, n)
	}
	out := d.buf[:n]
	if _, err := io.ReadFull(d.r, out); err != nil {
		return nil, errors.New("virtual host: corrupt compressed form: " + err.Error())
	}
	// The stream must end exactly there.
	var one [1]byte
	if m, err := d.r.Read(one[:]); m != 0 || err != io.EOF {
		return nil, errors.New("virtual host: corrupt compressed form: longer than its length")
	}
	return out, nil
}

// release returns d to decompressors.
func (d *vhDecompressor) release() {
	if cap(d.buf) > maxPooledBuf {
		d.buf = nil
	}
	decompressors.Put(d)
}

// decodeKept unmarshals a kept form into vh.
func decodeKept(kept []byte, vh *routev3.VirtualHost) error {
	if len(kept) == 0 || kept[0] != compressedMark {
		return proto.Unmarshal(kept, vh)
	}
	d := decompressors.Get().(*vhDecompressor)
	defer d.release()
	w, err := d.wire(kept)
	if err != nil {
		return err
	}
	// Unmarshal copies strings and bytes: the buffer can be reused.
	return proto.Unmarshal(w, vh)
}

// VirtualHostWire returns the deterministic wire form of a virtual host from its kept
// form (an element of RouteConfig.VirtualHosts), in a new slice.
func VirtualHostWire(kept []byte) ([]byte, error) {
	d := decompressors.Get().(*vhDecompressor)
	defer d.release()
	w, err := d.wire(kept)
	if err != nil {
		return nil, err
	}
	return bytes.Clone(w), nil
}

// reuse finds the kept forms of a configuration's previous version by the hash and
// length of their wire forms: an update compresses only the virtual hosts that
// changed. A 64-bit hash and the length matching by accident is as unlikely as the
// client's own resend check (Hash) failing.
type reuse struct {
	prev   *RouteConfig
	byHash func() map[uint64]int32
}

// newReuse returns nil (nothing to reuse) when prev has no virtual hosts.
func newReuse(prev *RouteConfig) *reuse {
	if prev == nil || len(prev.VirtualHosts) == 0 || len(prev.sums) != len(prev.VirtualHosts) {
		return nil
	}
	// Built when a virtual host is not where it was (one was added or removed before
	// it); by then the decode is already working on every core, so it is built once.
	byHash := sync.OnceValue(func() map[uint64]int32 {
		m := make(map[uint64]int32, len(prev.sums))
		for j, s := range prev.sums {
			m[s] = int32(j)
		}
		return m
	})
	return &reuse{prev: prev, byHash: byHash}
}

// find returns the kept form of the previous virtual host whose wire form has hash
// sum and length n, nil if there is none. i is where to look first.
func (x *reuse) find(i int, sum uint64, n int) []byte {
	if x == nil {
		return nil
	}
	vhs := x.prev.VirtualHosts
	if i < len(vhs) && x.prev.sums[i] == sum && keptWireLen(vhs[i]) == n {
		return vhs[i]
	}
	if j, ok := x.byHash()[sum]; ok && keptWireLen(vhs[j]) == n {
		return vhs[j]
	}
	return nil
}

// appendVH appends the kept form of the virtual host at index i with wire form wire to
// dst (prev's when it has it), and returns the hash of wire.
func (c *vhCompressor) appendVH(dst, wire []byte, i int, x *reuse) ([]byte, uint64) {
	sum := Hash(wire)
	if k := x.find(i, sum, len(wire)); k != nil {
		return append(dst, k...), sum
	}
	return c.appendKept(dst, wire), sum
}
