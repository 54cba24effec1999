package resource_test

import (
	"bytes"
	"path/filepath"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// decodeBoth decodes b as a route configuration serially and on every core.
func decodeBoth(t *testing.T, b []byte, want string) (serial, parallel *resource.Decoded, serr, perr error) {
	t.Helper()
	restore := resource.SetParallelRDSMin(1 << 62)
	serial, serr = resource.DecodeBytes(resource.RouteConfigType, b, want)
	restore()
	restore = resource.SetParallelRDSMin(0)
	parallel, perr = resource.DecodeBytes(resource.RouteConfigType, b, want)
	restore()
	return serial, parallel, serr, perr
}

// sameRouteConfig fails unless a and b are byte for byte the same wire form with equal
// decoded messages.
func sameRouteConfig(t *testing.T, a, b *resource.Decoded) {
	t.Helper()
	ra, rb := a.Msg.(*resource.RouteConfig), b.Msg.(*resource.RouteConfig)
	if a.Name != b.Name || a.Hash != b.Hash || ra.Name != rb.Name || ra.Routes != rb.Routes ||
		!bytes.Equal(ra.Header, rb.Header) || len(ra.VirtualHosts) != len(rb.VirtualHosts) {
		t.Fatalf("serial %s (%d routes, header %d bytes, %d virtual hosts), parallel %s (%d, %d, %d)",
			ra.Name, ra.Routes, len(ra.Header), len(ra.VirtualHosts), rb.Name, rb.Routes, len(rb.Header), len(rb.VirtualHosts))
	}
	for i := range ra.VirtualHosts {
		if !bytes.Equal(ra.VirtualHosts[i], rb.VirtualHosts[i]) {
			t.Fatalf("virtual host %d differs", i)
		}
	}
	ma, _ := ra.Message()
	mb, _ := rb.Message()
	if !proto.Equal(ma, mb) {
		t.Fatal("decoded messages differ")
	}
}

// Decoding a route configuration on every core gives exactly the serial result.
func TestParallelRDSDecodeMatchesSerial(t *testing.T) {
	inputs := map[string]*routev3.RouteConfiguration{"rich": richRC(t)}
	for name, rc := range meshgen.Generate(meshgen.Options{Services: 300}).Resources() {
		if name == resource.RouteConfigType {
			inputs["meshgen"] = rc[0].(*routev3.RouteConfiguration)
		}
	}
	if res, err := dump.LoadDir(filepath.Join("..", "..", "..", "testdata", "istiod", "sotw")); err == nil {
		for _, rc := range res.RouteConfigs {
			inputs["istiod/"+rc.GetName()] = rc
		}
	}
	for name, rc := range inputs {
		t.Run(name, func(t *testing.T) {
			s, p, serr, perr := decodeBoth(t, marshal(t, rc), "")
			if serr != nil || perr != nil {
				t.Fatalf("serial: %v, parallel: %v", serr, perr)
			}
			sameRouteConfig(t, s, p)
		})
	}
}

// Whatever the serial path rejects, the parallel path rejects with the same error.
func TestParallelRDSDecodeErrors(t *testing.T) {
	valid := marshal(t, richRC(t))
	noDomains := richRC(t)
	noDomains.VirtualHosts[1].Domains = nil // domains: min_items 1
	badRoute := richRC(t)
	badRoute.VirtualHosts[2].Routes[0].Match = nil // match: required
	unnamed := richRC(t)
	unnamed.Name = ""
	for name, tc := range map[string]struct {
		b    []byte
		want string
	}{
		"invalid virtual host": {marshal(t, noDomains), ""},
		"invalid route":        {marshal(t, badRoute), ""},
		"truncated":            {valid[:len(valid)-3], ""},
		"no name":              {marshal(t, unnamed), ""},
		"announced as another": {valid, "other"},
		"garbage in a vhost":   {append(append([]byte{}, valid...), 0x12, 0x02, 0xff, 0xff), ""},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, serr, perr := decodeBoth(t, tc.b, tc.want)
			if serr == nil {
				t.Fatal("the serial path accepts it: the case tests nothing")
			}
			if perr == nil || perr.Error() != serr.Error() {
				t.Fatalf("parallel: %v\nserial:   %v", perr, serr)
			}
		})
	}
	// And a valid one decodes both ways (the cases above differ from it by their defect).
	if _, _, serr, perr := decodeBoth(t, valid, ""); serr != nil || perr != nil {
		t.Fatalf("valid: serial %v, parallel %v", serr, perr)
	}
}

// A virtual_hosts field of another wire type is an unknown field to the protobuf
// runtime, not an error: the parallel path leaves such input to the serial one, and
// the results are the same.
func TestParallelRDSDecodeOddWireType(t *testing.T) {
	b := append(marshal(t, richRC(t)), 0x10, 0x01) // field 2 as a varint
	s, p, serr, perr := decodeBoth(t, b, "")
	if serr != nil || perr != nil {
		t.Fatalf("serial: %v, parallel: %v", serr, perr)
	}
	sameRouteConfig(t, s, p)
	if m, _ := s.Msg.(*resource.RouteConfig).Message(); len(m.ProtoReflect().GetUnknown()) == 0 {
		t.Fatal("the odd field is not kept as unknown: the case tests nothing")
	}
}

// BenchmarkDecodeRouteConfig decodes the route configuration of a 10,000-service mesh
// (one virtual host per service), serially and on every core.
func BenchmarkDecodeRouteConfig(b *testing.B) {
	var raw []byte
	for _, rc := range meshgen.Generate(meshgen.Options{Services: 10000, Subsets: -1}).Resources()[resource.RouteConfigType] {
		var err error
		if raw, err = proto.Marshal(rc); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		min  int
	}{{"serial", 1 << 62}, {"parallel", 0}} {
		b.Run(tc.name, func(b *testing.B) {
			defer resource.SetParallelRDSMin(tc.min)()
			b.SetBytes(int64(len(raw)))
			for b.Loop() {
				if _, err := resource.DecodeBytes(resource.RouteConfigType, raw, ""); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
