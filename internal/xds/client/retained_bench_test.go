package client

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/amesh-dev/amesh/internal/meshgen"
)

// BenchmarkRetainedHeap measures what the client keeps after the initial sync of a
// mesh in the bench program's shapes (issue 7: a default and two subset clusters per
// service, 10 endpoints each, 3 routes per virtual host): live heap with the synced
// client, after its first snapshot was taken with Next, minus live heap without it,
// both after a full GC. The input (the serialized mesh) is alive in both
// measurements, so it is not counted.
func BenchmarkRetainedHeap(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			anys, err := meshgen.Generate(meshgen.Options{Services: services}).Anys()
			if err != nil {
				b.Fatal(err)
			}
			var retained, resources float64
			for i := 0; i < b.N; i++ {
				before := liveHeap()
				c := benchClient(b, SotW)
				syncSotw(b, c, anys, "1")
				if c.published == 0 {
					b.Fatal("no complete snapshot")
				}
				// The consumer takes the first snapshot, as the agent does: Next builds
				// the consumer's maps (one of the client's numViews views). The
				// translator releases the decoded route configurations it read (see
				// resource.RouteConfig): only their wire form stays.
				s, err := c.Next(context.Background())
				if err != nil {
					b.Fatal(err)
				}
				for _, rc := range s.RouteConfigs {
					rc.Release()
				}
				retained = float64(liveHeap() - before)
				resources = 0
				for _, t := range c.types {
					resources += float64(len(t.res))
				}
				runtime.KeepAlive(c)
			}
			b.ReportMetric(retained/(1<<20), "retained-MiB")
			b.ReportMetric(retained/resources, "retained-B/resource")
		})
	}
}

// liveHeap is the heap in use after a full collection.
func liveHeap() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
