package resource

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
)

// testVH is a virtual host in the shape istiod sends, compressible like one.
func testVH(n, routes int) *routev3.VirtualHost {
	name := fmt.Sprintf("svc-%d.ns-%d.svc.cluster.local:8080", n, n%7)
	vh := &routev3.VirtualHost{Name: name, Domains: []string{name, fmt.Sprintf("svc-%d", n), fmt.Sprintf("svc-%d.ns-%d", n, n%7)}}
	for r := range routes {
		vh.Routes = append(vh.Routes, &routev3.Route{
			Name:  fmt.Sprintf("route-%d", r),
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: fmt.Sprintf("/api/v%d/", r)}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: fmt.Sprintf("outbound|8080|v%d|svc-%d.ns-%d.svc.cluster.local", r, n, n%7)},
			}},
		})
	}
	return vh
}

func wireOf(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := deterministic.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The kept form reads back as the wire form, is compressed only when shorter (or when
// the wire form starts with the mark), and does not depend on what the compressor did
// before: equal wire forms give equal kept forms.
func TestKeptForm(t *testing.T) {
	rnd := rand.New(rand.NewPCG(1, 2))
	random := make([]byte, 300)
	for i := range random {
		random[i] = byte(rnd.Uint32())
	}
	random[0] = 0x0a
	inputs := map[string]struct {
		wire       []byte
		compressed bool
	}{
		"empty":                {nil, false},
		"tiny":                 {wireOf(t, &routev3.VirtualHost{Name: "a"}), false},
		"istiod-like":          {wireOf(t, testVH(1, 3)), true},
		"many routes":          {wireOf(t, testVH(2, 200)), true},
		"incompressible":       {random, false},
		"starts with the mark": {append([]byte{compressedMark}, random[1:]...), true},
		"only the mark":        {[]byte{compressedMark}, true},
	}
	used := newVHCompressor()
	for name, tc := range inputs {
		t.Run(name, func(t *testing.T) {
			fresh := newVHCompressor().appendKept(nil, tc.wire)
			// The used compressor has compressed everything else first.
			for _, o := range inputs {
				used.appendKept(nil, o.wire)
			}
			again := used.appendKept([]byte("prefix"), tc.wire)
			if !bytes.Equal(again[len("prefix"):], fresh) {
				t.Fatal("a used compressor's kept form differs from a new one's")
			}
			if got := len(fresh) > 0 && fresh[0] == compressedMark; got != tc.compressed {
				t.Fatalf("compressed %v, want %v (%d bytes kept for %d)", got, tc.compressed, len(fresh), len(tc.wire))
			}
			if tc.compressed && len(fresh) >= len(tc.wire) && (len(tc.wire) == 0 || tc.wire[0] != compressedMark) {
				t.Fatalf("compressed to %d bytes, no shorter than %d", len(fresh), len(tc.wire))
			}
			w, err := VirtualHostWire(fresh)
			if err != nil || !bytes.Equal(w, tc.wire) {
				t.Fatalf("wire form back: %x (%v), want %x", w, err, tc.wire)
			}
			if keptWireLen(fresh) != len(tc.wire) {
				t.Fatalf("keptWireLen %d, want %d", keptWireLen(fresh), len(tc.wire))
			}
		})
	}
}

// A corrupt compressed kept form is an error, never a panic nor another virtual host
// of the announced length read from garbage.
func TestKeptFormCorrupt(t *testing.T) {
	wire := wireOf(t, testVH(3, 20))
	kept := newVHCompressor().appendKept(nil, wire)
	if kept[0] != compressedMark {
		t.Fatal("not compressed: the test tests nothing")
	}
	mustFail := map[string][]byte{
		"no length":        {compressedMark},
		"bad length":       {compressedMark, 0xff},
		"no stream":        {compressedMark, 10},
		"huge length":      append([]byte{compressedMark, 0xff, 0xff, 0xff, 0xff, 0x0f}, kept[2:]...),
		"truncated stream": kept[:len(kept)-5],
	}
	// kept[1:3] is the uvarint length of the wire form (two bytes for this size).
	if len(wire) < 128 || len(wire) >= 1<<14 || kept[1]&0x7f == 0x7f || kept[1]&0x7f == 0 {
		t.Fatalf("wire form of %d bytes: its length is not two bytes that can be changed by one", len(wire))
	}
	mustFail["length too long"] = append([]byte{compressedMark, kept[1] + 1, kept[2]}, kept[3:]...)
	mustFail["length too short"] = append([]byte{compressedMark, kept[1] - 1, kept[2]}, kept[3:]...)
	for name, b := range mustFail {
		if _, err := VirtualHostWire(b); err == nil {
			t.Errorf("%s: VirtualHostWire accepts it", name)
		}
		if _, err := DecodeVirtualHost(b); err == nil {
			t.Errorf("%s: DecodeVirtualHost accepts it", name)
		}
	}
	// Any truncation or flipped byte: an error or some virtual host, no panic.
	for i := 1; i < len(kept); i++ {
		_, _ = DecodeVirtualHost(kept[:i])
		b := bytes.Clone(kept)
		b[i] ^= 0x5a
		_, _ = DecodeVirtualHost(b)
	}
	if vh, err := DecodeVirtualHost(kept); err != nil || !proto.Equal(vh, testVH(3, 20)) {
		t.Fatalf("the intact kept form: %v (%v)", vh, err)
	}
}

// A new version of a configuration reuses the kept forms of the virtual hosts it has
// unchanged, also where they moved, and is otherwise what a decode without it makes.
func TestRouteConfigReuse(t *testing.T) {
	var vhs []*routev3.VirtualHost
	for i := range 50 {
		vhs = append(vhs, testVH(i, 3))
	}
	// prev is the configuration with every kept form replaced by its wire form: the
	// same content, other bytes, so that a reused kept form shows.
	makePrev := func() *RouteConfig {
		prev := MustRouteConfig(&routev3.RouteConfiguration{Name: "8080", VirtualHosts: vhs})
		for i, v := range prev.VirtualHosts {
			if v[0] != compressedMark {
				t.Fatalf("virtual host %d is not compressed: the test tests nothing", i)
			}
			w, err := VirtualHostWire(v)
			if err != nil {
				t.Fatal(err)
			}
			prev.VirtualHosts[i] = w
		}
		return prev
	}
	// The next version: one inserted at the front (all others move), one changed
	// (virtual host 9, now at index 10).
	next := append([]*routev3.VirtualHost{testVH(100, 3)}, vhs...)
	next[10] = testVH(9, 4)
	rc := &routev3.RouteConfiguration{Name: "8080", VirtualHosts: next}
	b, err := proto.Marshal(rc)
	if err != nil {
		t.Fatal(err)
	}
	for name, min := range map[string]int{"serial": 1 << 62, "parallel": 1} {
		t.Run(name, func(t *testing.T) {
			prev := makePrev()
			d, err := decodeBytes(RouteConfigType, b, "", prev, DecodeOptions{ParallelRDSMin: min})
			if err != nil {
				t.Fatal(err)
			}
			plain, err := decodeBytes(RouteConfigType, b, "", nil, DecodeOptions{ParallelRDSMin: min})
			if err != nil {
				t.Fatal(err)
			}
			got, want := d.Msg.(*RouteConfig), plain.Msg.(*RouteConfig)
			for i := range next {
				reused := i != 0 && i != 10
				if g := got.VirtualHosts[i]; reused != (g[0] != compressedMark) {
					t.Errorf("virtual host %d: kept form reused %v, want %v", i, g[0] != compressedMark, reused)
				}
				gw, _ := VirtualHostWire(got.VirtualHosts[i])
				ww, _ := VirtualHostWire(want.VirtualHosts[i])
				if !bytes.Equal(gw, ww) || got.sums[i] != want.sums[i] {
					t.Errorf("virtual host %d: another wire form than without reuse", i)
				}
			}
			// Reused bytes are copied: nothing of prev is kept.
			for _, v := range prev.VirtualHosts {
				clear(v)
			}
			m, err := got.Message()
			if err != nil || !proto.Equal(m, rc) {
				t.Errorf("the reusing decode does not decode to the configuration (%v)", err)
			}
		})
	}
}

// BenchmarkKeptForm compresses and decodes virtual hosts in istiod's shape.
func BenchmarkKeptForm(b *testing.B) {
	var wires [][]byte
	raw := 0
	for i := range 1000 {
		w := wireOf(b, testVH(i, 3))
		wires = append(wires, w)
		raw += len(w)
	}
	c := newVHCompressor()
	var kept [][]byte
	size := 0
	for _, w := range wires {
		k := c.appendKept(nil, w)
		kept = append(kept, k)
		size += len(k)
	}
	b.Run("compress", func(b *testing.B) {
		var buf []byte
		for b.Loop() {
			for _, w := range wires {
				buf = c.appendKept(buf[:0], w)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(wires)), "ns/vhost")
		b.ReportMetric(float64(size)/float64(raw), "kept/wire")
	})
	b.Run("decode", func(b *testing.B) {
		for b.Loop() {
			for _, k := range kept {
				if _, err := DecodeVirtualHost(k); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(wires)), "ns/vhost")
	})
}
