package overlay

import (
	"fmt"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// BenchmarkConfigChange measures re-merging after a config change on a sidecar with
// many routes, of which the changed config's scope selects a tenth.
func BenchmarkConfigChange(b *testing.B) {
	const routes = 5000
	objects := map[string][]byte{}
	for i := 0; i < routes; i++ {
		host := fmt.Sprintf("svc-%d.ns.svc.cluster.local", i%500)
		objects[fmt.Sprintf("/routes/r%d", i)] = route(b, fmt.Sprint("r", i), []string{host}, "/", 9080+i%10,
			map[string]any{"proxy-rewrite": map[string]any{"uri": "/"}})
	}
	feed := &Latest{}
	tr := NewTranslator(&fakeTranslator{next: objects}, feed, Options{})
	tr.Translate(&resource.State{})
	puts := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		feed.Publish(Set{Version: uint64(i + 1), Configs: []Config{
			cfg("ns", "all", 0, Scope{}, plugin("cors", `{}`)),
			cfg("ns", "one-port", 1, Scope{Ports: []uint32{9080}}, plugin("limit-count", fmt.Sprintf(`{"count":%d,"time_window":60}`, i))),
		}})
		puts += len(tr.Translate(&resource.State{}).Changes.Put)
	}
	b.ReportMetric(float64(routes), "routes")
	b.ReportMetric(float64(puts)/float64(b.N), "puts/op")
}

// BenchmarkTranslationChange measures the overlay's cost when xDS changes one route
// while configs apply to all routes.
func BenchmarkTranslationChange(b *testing.B) {
	const routes = 5000
	objects := map[string][]byte{}
	for i := 0; i < routes; i++ {
		objects[fmt.Sprintf("/routes/r%d", i)] = route(b, fmt.Sprint("r", i), []string{"h"}, "/", 9080, nil)
	}
	feed := &Latest{}
	feed.Publish(Set{Version: 1, Configs: []Config{cfg("ns", "all", 0, Scope{}, plugin("cors", `{}`))}})
	inner := &fakeTranslator{next: objects}
	tr := NewTranslator(inner, feed, Options{})
	tr.Translate(&resource.State{})
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		next := make(map[string][]byte, len(objects))
		for k, v := range objects {
			next[k] = v
		}
		next["/routes/r0"] = route(b, "r0", []string{"h"}, fmt.Sprint("/", i), 9080, nil)
		inner.next = next
		b.StartTimer()
		if n := len(tr.Translate(&resource.State{}).Changes.Put); n != 1 {
			b.Fatalf("%d puts, want 1", n)
		}
	}
	b.ReportMetric(float64(routes), "routes")
}
