package resource_test

import (
	"bytes"
	"path/filepath"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// decodeBoth decodes b as a route configuration serially and on every core.
func decodeBoth(t *testing.T, b []byte, want string) (serial, parallel *resource.Decoded, serr, perr error) {
	t.Helper()
	so, po := clientOpts, clientOpts
	so.ParallelRDSMin, po.ParallelRDSMin = 1<<62, 1
	serial, serr = resource.DecodeBytes(resource.RouteConfigType, b, want, so)
	parallel, perr = resource.DecodeBytes(resource.RouteConfigType, b, want, po)
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
// (one virtual host per service), serially and on every core: the first time, and as
// an update with one virtual host changed (the previous version's kept virtual hosts
// reused). kept-MiB is what the configuration keeps (header and virtual hosts), wire-MiB
// what its wire forms would take.
func BenchmarkDecodeRouteConfig(b *testing.B) {
	var raw, changed []byte
	for _, rc := range meshgen.Generate(meshgen.Options{Services: 10000, Subsets: -1}).Resources()[resource.RouteConfigType] {
		var err error
		if raw, err = proto.Marshal(rc); err != nil {
			b.Fatal(err)
		}
		next := proto.Clone(rc).(*routev3.RouteConfiguration)
		next.VirtualHosts[len(next.VirtualHosts)/2].Domains = append(next.VirtualHosts[len(next.VirtualHosts)/2].Domains, "more")
		if changed, err = proto.Marshal(next); err != nil {
			b.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		min    int
		update bool
	}{{"serial", 1 << 62, false}, {"parallel", 1, false}, {"serial-update", 1 << 62, true}, {"parallel-update", 1, true}} {
		b.Run(tc.name, func(b *testing.B) {
			opts := clientOpts
			opts.ParallelRDSMin = tc.min
			var prev any
			in := &anypb.Any{TypeUrl: resource.RouteConfigType, Value: raw}
			if tc.update {
				d, err := resource.DecodeBytes(resource.RouteConfigType, raw, "", clientOpts)
				if err != nil {
					b.Fatal(err)
				}
				prev, in.Value = d.Msg, changed
			}
			b.SetBytes(int64(len(in.Value)))
			var d *resource.Decoded
			for b.Loop() {
				var err error
				if d, err = resource.DecodeUpdate(resource.RouteConfigType, in, "", prev, opts); err != nil {
					b.Fatal(err)
				}
			}
			r := d.Msg.(*resource.RouteConfig)
			kept, wire := len(r.Header), len(r.Header)
			for _, v := range r.VirtualHosts {
				w, err := resource.VirtualHostWire(v)
				if err != nil {
					b.Fatal(err)
				}
				kept += len(v)
				wire += len(w)
			}
			b.ReportMetric(float64(kept)/(1<<20), "kept-MiB")
			b.ReportMetric(float64(wire)/(1<<20), "wire-MiB")
		})
	}
	// What resource.Validate (Envoy's checks beyond the protos' rules) adds to a
	// serial decode: its share of serial/ns.
	b.Run("validate", func(b *testing.B) {
		rc := &routev3.RouteConfiguration{}
		if err := proto.Unmarshal(raw, rc); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := resource.Validate(rc); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// routeConfigInputs are route configurations in the shapes amesh meets: hand-made with
// everything Prune clears, generated, and recorded from istiod.
func routeConfigInputs(t *testing.T, services int) map[string]*routev3.RouteConfiguration {
	t.Helper()
	inputs := map[string]*routev3.RouteConfiguration{"rich": richRC(t)}
	for _, rc := range meshgen.Generate(meshgen.Options{Services: services}).Resources()[resource.RouteConfigType] {
		inputs["meshgen/"+rc.(*routev3.RouteConfiguration).GetName()] = rc.(*routev3.RouteConfiguration)
	}
	if res, err := dump.LoadDir(filepath.Join("..", "..", "..", "testdata", "istiod", "sotw")); err == nil {
		for _, rc := range res.RouteConfigs {
			inputs["istiod/"+rc.GetName()] = rc
		}
	}
	return inputs
}

// Each kept virtual host, compressed or not, is the pruned virtual host's deterministic
// wire form and decodes to it, on both decode paths.
func TestRouteConfigKeptVirtualHosts(t *testing.T) {
	compressed, plain := 0, 0
	for name, rc := range routeConfigInputs(t, 300) {
		t.Run(name, func(t *testing.T) {
			want := proto.Clone(rc).(*routev3.RouteConfiguration)
			resource.Prune(want)
			s, p, serr, perr := decodeBoth(t, marshal(t, rc), "")
			if serr != nil || perr != nil {
				t.Fatalf("serial: %v, parallel: %v", serr, perr)
			}
			for _, d := range []*resource.Decoded{s, p} {
				r := d.Msg.(*resource.RouteConfig)
				for i, kept := range r.VirtualHosts {
					wire, err := resource.VirtualHostWire(kept)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(wire, deterministicWire(t, want.VirtualHosts[i])) {
						t.Fatalf("virtual host %d: the kept form is not the wire form of the pruned one", i)
					}
					vh, err := resource.DecodeVirtualHost(kept)
					if err != nil || !proto.Equal(vh, want.VirtualHosts[i]) {
						t.Fatalf("virtual host %d decodes to %v (%v), want %v", i, vh, err, want.VirtualHosts[i])
					}
					if len(kept) < len(wire) {
						compressed++
					} else {
						plain++
					}
					if len(kept) > len(wire)+1 {
						t.Errorf("virtual host %d: kept in %d bytes, its wire form has %d", i, len(kept), len(wire))
					}
				}
			}
		})
	}
	if compressed == 0 || plain == 0 {
		t.Errorf("%d virtual hosts kept compressed, %d as is: the test does not check both", compressed, plain)
	}
}

func deterministicWire(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A kept virtual host is equal to another exactly when their content is: the same
// virtual host sent again in another map order, or within another configuration, is
// kept in the same bytes; a changed one is not.
func TestRouteConfigKeptEquality(t *testing.T) {
	msgs := meshgen.Generate(meshgen.Options{Services: 200}).Resources()[resource.RouteConfigType]
	rc := msgs[0].(*routev3.RouteConfiguration)
	changed := proto.Clone(rc).(*routev3.RouteConfiguration)
	changed.VirtualHosts[5].Routes[0].Name += "-changed"
	changed.VirtualHosts = append(changed.VirtualHosts[:9], changed.VirtualHosts[10:]...) // 10 removed
	a, _, err, _ := decodeBoth(t, marshal(t, rc), "")
	if err != nil {
		t.Fatal(err)
	}
	_, b, _, err := decodeBoth(t, marshal(t, changed), "")
	if err != nil {
		t.Fatal(err)
	}
	ra, rb := a.Msg.(*resource.RouteConfig), b.Msg.(*resource.RouteConfig)
	for i, kb := range rb.VirtualHosts {
		j := i
		if i >= 9 {
			j = i + 1
		}
		if same := bytes.Equal(ra.VirtualHosts[j], kb); same == (i == 5) {
			t.Errorf("virtual host %d (%d before): kept forms equal %v", i, j, same)
		}
	}
	if ra.Equal(rb) || resource.Equal(ra, rb) {
		t.Error("changed configuration equal")
	}
}

// A decode that reuses the previous version's kept virtual hosts gives the same
// configuration as one that does not, whatever changed, on both decode paths; and it
// keeps nothing of the previous version.
func TestDecodeUpdateMatchesDecode(t *testing.T) {
	rc := meshgen.Generate(meshgen.Options{Services: 300}).Resources()[resource.RouteConfigType][0].(*routev3.RouteConfiguration)
	next := proto.Clone(rc).(*routev3.RouteConfiguration)
	next.VirtualHosts[3].Domains = append(next.VirtualHosts[3].Domains, "more")
	next.VirtualHosts = append(next.VirtualHosts[:7], next.VirtualHosts[8:]...)
	next.VirtualHosts = append([]*routev3.VirtualHost{proto.Clone(rc.VirtualHosts[1]).(*routev3.VirtualHost)}, next.VirtualHosts...)
	next.VirtualHosts[0].Name, next.VirtualHosts[0].Domains = "added", []string{"added"}
	for name, min := range map[string]int{"serial": 1 << 62, "parallel": 1} {
		t.Run(name, func(t *testing.T) {
			opts := clientOpts
			opts.ParallelRDSMin = min
			prev, err := resource.Decode(resource.RouteConfigType, mustAny(t, rc), "")
			if err != nil {
				t.Fatal(err)
			}
			plain, err := resource.Decode(resource.RouteConfigType, mustAny(t, next), "")
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range []any{prev.Msg, nil, "not a route configuration"} {
				got, err := resource.DecodeUpdate(resource.RouteConfigType, mustAny(t, next), "", p, opts)
				if err != nil {
					t.Fatal(err)
				}
				sameRouteConfig(t, plain, got)
			}
			got, _ := resource.DecodeUpdate(resource.RouteConfigType, mustAny(t, next), "", prev.Msg, clientOpts)
			for _, v := range prev.Msg.(*resource.RouteConfig).VirtualHosts {
				clear(v)
			}
			sameRouteConfig(t, plain, got)
			// And an invalid update is rejected as without reuse.
			bad := proto.Clone(next).(*routev3.RouteConfiguration)
			bad.VirtualHosts[2].Domains = nil
			_, err1 := resource.Decode(resource.RouteConfigType, mustAny(t, bad), "")
			_, err2 := resource.DecodeUpdate(resource.RouteConfigType, mustAny(t, bad), "", plain.Msg, clientOpts)
			if err1 == nil || err2 == nil || err1.Error() != err2.Error() {
				t.Fatalf("invalid update: %v, with reuse %v", err1, err2)
			}
		})
	}
}
