package file

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/translate"
)

// meshObjects translates a generated Istio-shaped mesh of n services (3 routes, 3
// clusters of 10 endpoints each per service).
func meshObjects(b *testing.B, n int) map[string][]byte {
	b.Helper()
	r := translate.New(translate.Options{}).Translate(meshgen.Generate(meshgen.Options{Services: n}).Snapshot())
	return r.Changes.Put
}

// BenchmarkRender is the cost of producing the whole standalone file, which the sink
// does for every change (APISIX re-reads the whole file anyway).
func BenchmarkRender(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		objs := meshObjects(b, n)
		for _, f := range []Format{YAML, JSON} {
			b.Run(fmt.Sprintf("services=%d/%s", n, f), func(b *testing.B) {
				out, err := Render(objs, f)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(int64(len(out)))
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := Render(objs, f); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(len(out))/(1<<20), "file-MiB")
				b.ReportMetric(float64(len(objs)), "objects")
			})
		}
	}
}

// BenchmarkApplyChange is one changed object in a 10,000-service mesh: render, compare
// and write the file atomically (temp file, fsync, rename).
func BenchmarkApplyChange(b *testing.B) {
	objs := meshObjects(b, 10000)
	s, err := New(Options{Path: filepath.Join(b.TempDir(), "apisix.yaml"), Logger: quiet})
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Apply(context.Background(), apisix.ChangeSet{Put: objs}); err != nil {
		b.Fatal(err)
	}
	key := apisix.Key(apisix.KindRoutes, "bench-toggle")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Alternate between two states so every Apply writes.
		cs := apisix.ChangeSet{Delete: []string{key}}
		if i%2 == 0 {
			cs = apisix.ChangeSet{Put: map[string][]byte{key: []byte(`{"id":"bench-toggle","uri":"/x"}`)}}
		}
		if err := s.Apply(context.Background(), cs); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if s.Version() < uint64(b.N) {
		b.Fatalf("version %d after %d changes", s.Version(), b.N)
	}
}
