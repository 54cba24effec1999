package translate

import (
	"encoding/json"
	"runtime"
	"strconv"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
)

// Benchmarks on meshgen's Istio-shaped input: N services × 3 routes × 3 clusters
// (default + 2 subsets) × 10 endpoints. "Floor" is the unavoidable part: decoding the
// xDS from protobuf bytes and encoding the produced JSON. Run with -benchmem; compare
// ns/op of BenchmarkFirst with BenchmarkFloor for the ratio.

var benchSizes = []int{1000, 10000}

// decodedObjects turns the output back into model values, so that the floor encodes
// the same objects with the same encoder.
func decodedObjects(b *testing.B, objs map[string][]byte) []any {
	out := make([]any, 0, len(objs))
	for k, v := range objs {
		var o any
		switch apisix.KindOf(k) {
		case apisix.KindRoutes:
			o = &apisix.Route{}
		case apisix.KindUpstreams:
			o = &apisix.Upstream{}
		default:
			o = &apisix.StreamRoute{}
		}
		if err := json.Unmarshal(v, o); err != nil {
			b.Fatal(err)
		}
		out = append(out, o)
	}
	return out
}

// decodeAll re-decodes every resource of m in place (new pointers, as the client
// produces them) and returns the snapshot.
func decodeAll(m *meshgen.Mesh) {
	m.Resend()
}

func BenchmarkFloor(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			m := meshgen.Generate(meshgen.Options{Services: n})
			tr := New(Options{})
			tr.Translate(m.Snapshot())
			decoded := decodedObjects(b, tr.Objects())
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				decodeAll(m)
				for _, o := range decoded {
					if _, err := apisix.Encode(o); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(len(decoded)), "objects")
		})
	}
}

func BenchmarkFirst(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			m := meshgen.Generate(meshgen.Options{Services: n})
			var retained uint64
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				decodeAll(m)
				snap := m.Snapshot()
				var before runtime.MemStats
				if i == b.N-1 {
					b.StopTimer()
					runtime.GC()
					runtime.ReadMemStats(&before)
					b.StartTimer()
				}
				tr := New(Options{})
				tr.Translate(snap)
				if i == b.N-1 {
					b.StopTimer()
					runtime.GC()
					var after runtime.MemStats
					runtime.ReadMemStats(&after)
					retained = after.HeapAlloc - before.HeapAlloc
					runtime.KeepAlive(tr)
					runtime.KeepAlive(snap)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
		})
	}
}

func BenchmarkEndpointChange(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			m := meshgen.Generate(meshgen.Options{Services: n})
			tr := New(Options{})
			tr.Translate(m.Snapshot())
			names := m.EDSClusters()
			// Change referenced clusters only (unreferenced ones produce no objects).
			var idx []int
			for i, c := range names {
				if len(tr.upsOf[c]) > 0 {
					idx = append(idx, i)
				}
			}
			puts := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := tr.Translate(m.ChangeEndpoint(idx[i%len(idx)]))
				puts += len(r.Changes.Put)
			}
			b.ReportMetric(float64(puts)/float64(b.N), "puts/op")
		})
	}
}

func BenchmarkResendRouteConfigs(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			m := meshgen.Generate(meshgen.Options{Services: n})
			tr := New(Options{})
			tr.Translate(m.Snapshot())
			changes := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				snap := m.ResendRouteConfigs() // decoding is measured by BenchmarkDecodeRouteConfigs
				b.StartTimer()
				r := tr.Translate(snap)
				changes += len(r.Changes.Put) + len(r.Changes.Delete)
			}
			b.ReportMetric(float64(changes), "changes")
		})
	}
}

func BenchmarkDecodeRouteConfigs(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			m := meshgen.Generate(meshgen.Options{Services: n})
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.ResendRouteConfigs()
			}
		})
	}
}
