package translate

import (
	"bytes"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/amesh-dev/amesh/internal/apisix"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/overlay"
	"github.com/amesh-dev/amesh/internal/translate/store"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// Benchmarks on meshgen's Istio-shaped input: N services × 3 routes × 3 clusters
// (default + 2 subsets) × 10 endpoints. Run with -benchmem.
//
// The floor is the unavoidable part of a first translation: decoding the xDS from
// protobuf bytes (marshalled once, before timing, as they arrive on the wire) and
// encoding the produced JSON. BenchmarkFirst decodes from the same bytes, and measures
// the floor in the same run (interleaved, outside its timer) to report the ratio
// "x-floor". BenchmarkResendRouteConfigs likewise reports "x-decode": the cost of an
// unchanged resend relative to decoding those route configurations.

var benchSizes = []int{1000, 10000}

// wire is a mesh marshalled to protobuf bytes, per resource type and name.
type wire struct {
	seq          uint64
	listeners    map[string][]byte
	routeConfigs map[string][]byte
	clusters     map[string][]byte
	endpoints    map[string][]byte
}

func marshalAll[M proto.Message](b testing.TB, ms map[string]M) map[string][]byte {
	out := make(map[string][]byte, len(ms))
	for n, m := range ms {
		bs, err := proto.Marshal(m)
		if err != nil {
			b.Fatal(err)
		}
		out[n] = bs
	}
	return out
}

// marshalStored marshals the messages of stored resources (RouteConfig, Cluster).
func marshalStored[S interface{ Message() (M, error) }, M proto.Message](b testing.TB, in map[string]S) map[string][]byte {
	ms := make(map[string]M, len(in))
	for n, r := range in {
		m, err := r.Message()
		if err != nil {
			b.Fatal(err)
		}
		ms[n] = m
	}
	return marshalAll(b, ms)
}

func toWire(b testing.TB, m *meshgen.Mesh) *wire {
	s := m.Snapshot()
	eps := map[string]*endpointv3.ClusterLoadAssignment{}
	for name := range s.Endpoints {
		eps[name] = m.LoadAssignment(name)
	}
	return &wire{
		seq:          1,
		listeners:    marshalAll(b, s.Listeners),
		routeConfigs: marshalStored(b, s.RouteConfigs),
		clusters:     marshalStored(b, s.Clusters),
		endpoints:    marshalAll(b, eps),
	}
}

func decodeAll[M proto.Message](b testing.TB, bs map[string][]byte, newM func() M) map[string]M {
	return decodeEach(b, bs, func(name string, raw []byte) (M, error) {
		m := newM()
		return m, proto.Unmarshal(raw, m)
	})
}

// clientDecode decodes as one stream of the xDS client does: with one interning
// table for every resource.
var clientDecode = resource.DecodeOptions{Intern: resource.NewInterner()}

// decodeAs decodes every resource of one type as the xDS client does
// (resource.DecodeBytes: validated, pruned, into the form the client keeps: T is
// *resource.LoadAssignment, *resource.RouteConfig or *resource.Cluster).
func decodeAs[T any](b testing.TB, typeURL string, bs map[string][]byte) map[string]T {
	return decodeEach(b, bs, func(name string, raw []byte) (T, error) {
		d, err := resource.DecodeBytes(typeURL, raw, name, clientDecode)
		if err != nil {
			var zero T
			return zero, err
		}
		return d.Msg.(T), nil
	})
}

// decodeEach decodes every resource of one type the way the xDS client decodes a
// response: on every core when there are many (as client.parallelDecodeMin), one
// resource type after the other.
func decodeEach[M any](b testing.TB, bs map[string][]byte, dec func(name string, raw []byte) (M, error)) map[string]M {
	names := make([]string, 0, len(bs))
	for n := range bs {
		names = append(names, n)
	}
	ms := make([]M, len(names))
	errs := make([]error, len(names))
	workers := runtime.GOMAXPROCS(0)
	if len(names) < 256 {
		workers = 1
	}
	var wg sync.WaitGroup
	share := (len(names) + workers - 1) / workers
	for lo := 0; lo < len(names); lo += share {
		hi := min(lo+share, len(names))
		wg.Go(func() {
			for i := lo; i < hi; i++ {
				ms[i], errs[i] = dec(names[i], bs[names[i]])
			}
		})
	}
	wg.Wait()
	out := make(map[string]M, len(names))
	for i, n := range names {
		if errs[i] != nil {
			b.Fatal(errs[i])
		}
		out[n] = ms[i]
	}
	return out
}

func decodeRCs(b testing.TB, w *wire) map[string]*resource.RouteConfig {
	return decodeAs[*resource.RouteConfig](b, resource.RouteConfigType, w.routeConfigs)
}

// decode returns a new snapshot of fresh messages, asking for a full translation.
func (w *wire) decode(b testing.TB) *resource.State {
	w.seq++
	return &resource.State{
		Seq:          w.seq,
		Listeners:    decodeAll(b, w.listeners, func() *listenerv3.Listener { return &listenerv3.Listener{} }),
		RouteConfigs: decodeRCs(b, w),
		Clusters:     decodeAs[*resource.Cluster](b, resource.ClusterType, w.clusters),
		Endpoints:    decodeAs[*resource.LoadAssignment](b, resource.EndpointType, w.endpoints),
		Changes:      resource.Changes{Full: true},
	}
}

// keyed is an object of the output as a model value, with its key.
type keyed struct {
	key string
	v   any
}

// decodedObjects turns the output back into model values, so that the floor encodes
// the same objects with the same encoder.
func decodedObjects(b testing.TB, objs map[string][]byte) []keyed {
	out := make([]keyed, 0, len(objs))
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
		out = append(out, keyed{key: k, v: o})
	}
	return out
}

// floor decodes every resource and encodes every object once, with the encoder the
// translator uses (the fastest that gives apisix.Encode's bytes), into a map of key
// to JSON: the form a translation hands to the sink (ChangeSet.Put), and what the
// scale benchmark's floor produces too (bench/floor.go).
func floor(b testing.TB, w *wire, objs []keyed) map[string][]byte {
	w.decode(b)
	var e store.Encoder
	out := make(map[string][]byte, len(objs))
	for _, o := range objs {
		j, err := e.Encode(o.v)
		if err != nil {
			b.Fatal(err)
		}
		out[o.key] = bytes.Clone(j)
	}
	return out
}

// floorInputs returns the wire form of a mesh and its output (JSON by key).
func floorInputs(b testing.TB, n int) (*wire, map[string][]byte) {
	m := meshgen.Generate(meshgen.Options{Services: n})
	r := New(Options{}).Translate(m.Snapshot())
	return toWire(b, m), r.Changes.Put
}

func BenchmarkFloor(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			w, out := floorInputs(b, n)
			objs := decodedObjects(b, out)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				floor(b, w, objs)
			}
			b.ReportMetric(float64(len(objs)), "objects")
		})
	}
}

// outputBytes is the size of the output itself: keys and JSON values.
func outputBytes(objs map[string][]byte) int {
	n := 0
	for k, v := range objs {
		n += len(k) + len(v)
	}
	return n
}

// BenchmarkFirst measures a first translation, decoding included. retained-MiB is the
// heap the translator keeps afterwards, beyond the snapshot; snapshot-MiB is what the
// snapshot itself holds once translated (route configurations in wire form, see
// resource.RouteConfig); output-MiB is the size of the output handed over in the
// change set (and not kept).
func BenchmarkFirst(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			w, output := floorInputs(b, n)
			var retained, snapSize int64
			var floorTime time.Duration
			var out int
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				// The floor's model values exist only while it runs: each side starts
				// from the same live heap (the wire bytes and the output JSON), so
				// neither pays the other's garbage collection.
				objs := decodedObjects(b, output)
				runtime.GC()
				start := time.Now()
				floor(b, w, objs)
				floorTime += time.Since(start)
				objs = nil
				runtime.GC()
				var before runtime.MemStats
				if i == b.N-1 {
					// What a translated state holds: decoded, its changes (with
					// their decoded route configurations) dropped as the agent
					// drops them.
					runtime.ReadMemStats(&before)
					s := w.decode(b)
					s.Done()
					runtime.GC()
					var m runtime.MemStats
					runtime.ReadMemStats(&m)
					snapSize = int64(m.HeapAlloc) - int64(before.HeapAlloc)
					runtime.KeepAlive(s)
					s = nil
					runtime.GC()
					runtime.ReadMemStats(&before)
				}
				b.StartTimer()

				snap := w.decode(b)
				tr := New(Options{})
				r := tr.Translate(snap)
				if i == b.N-1 {
					b.StopTimer()
					// The change set's JSON goes to the sink; the translator keeps
					// digests only.
					out = outputBytes(r.Changes.Put) // r is dead after this
					runtime.GC()
					var after runtime.MemStats
					runtime.ReadMemStats(&after)
					retained = int64(after.HeapAlloc) - int64(before.HeapAlloc) - snapSize
					runtime.KeepAlive(tr)
					runtime.KeepAlive(snap)
					b.StartTimer()
				}
			}
			b.ReportMetric(float64(retained)/(1<<20), "retained-MiB")
			b.ReportMetric(float64(snapSize)/(1<<20), "snapshot-MiB")
			b.ReportMetric(float64(out)/(1<<20), "output-MiB")
			b.ReportMetric(float64(b.Elapsed())/float64(floorTime), "x-floor")
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
				if len(tr.idsOf(c)) > 0 {
					idx = append(idx, i)
				}
			}
			puts := 0
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				snap := m.ChangeEndpoint(idx[i%len(idx)]) // decoding the change is not translation
				b.StartTimer()
				r := tr.Translate(snap)
				puts += len(r.Changes.Put)
			}
			b.ReportMetric(float64(puts)/float64(b.N), "puts/op")
		})
	}
}

// BenchmarkResendRouteConfigs measures the translation of an unchanged resend of every
// route configuration (new messages, same content), decoding excluded; x-decode
// compares it with decoding those route configurations, measured in the same run.
func BenchmarkResendRouteConfigs(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			w := toWire(b, meshgen.Generate(meshgen.Options{Services: n}))
			snap := w.decode(b)
			tr := New(Options{})
			tr.Translate(snap)
			all := make(map[string]struct{}, len(w.routeConfigs))
			for name := range w.routeConfigs {
				all[name] = struct{}{}
			}
			changes := 0
			var decodeTime time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				start := time.Now()
				rcs := decodeRCs(b, w)
				decodeTime += time.Since(start)
				w.seq++
				next := *snap
				next.Seq, next.RouteConfigs = w.seq, rcs
				next.Changes = resource.Changes{Since: snap.Seq, RouteConfigs: all}
				snap = &next
				b.StartTimer()
				r := tr.Translate(snap)
				changes += len(r.Changes.Put) + len(r.Changes.Delete)
			}
			b.ReportMetric(float64(changes), "changes")
			b.ReportMetric(float64(b.Elapsed())/float64(decodeTime), "x-decode")
		})
	}
}

// BenchmarkDecodeRouteConfigs is decoding every route configuration from bytes.
func BenchmarkDecodeRouteConfigs(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			w := toWire(b, meshgen.Generate(meshgen.Options{Services: n}))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				decodeRCs(b, w)
			}
		})
	}
}

// BenchmarkTranslateOnly is a first translation of an already decoded snapshot: the
// translator's own share of BenchmarkFirst.
func BenchmarkTranslateOnly(b *testing.B) {
	for _, n := range benchSizes {
		b.Run("N="+strconv.Itoa(n), func(b *testing.B) {
			w := toWire(b, meshgen.Generate(meshgen.Options{Services: n}))
			snap := w.decode(b)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				New(Options{}).Translate(snap)
			}
		})
	}
}

// BenchmarkPluginSetChange measures the translation of a new controller plugin set
// (nothing else changed) on a mesh where a tenth of the services carry a config scoped
// to their host: one config's plugin changes (the routes of one service), or one config
// over every outbound route comes and goes (every outbound route). x-endpoint compares
// it with an endpoint change measured in the same run.
func BenchmarkPluginSetChange(b *testing.B) {
	for _, n := range benchSizes {
		m := meshgen.Generate(meshgen.Options{Services: n})
		var base []overlay.Config
		for i := 0; i < n; i += 10 {
			ns := "default" // meshgen's namespaces
			if i%4 != 0 {
				ns = fmt.Sprintf("ns-%d", i%16)
			}
			host := fmt.Sprintf("svc-%05d.%s.svc.cluster.local", i, ns)
			base = append(base, overlay.Config{Namespace: "ns", Name: fmt.Sprint("c", i),
				Scope:   overlay.Scope{Hosts: []string{host}, Direction: overlay.DirectionOutbound},
				Plugins: []overlay.Plugin{{Name: "proxy-rewrite", Config: json.RawMessage(`{"headers":{"set":{"x-tenant":"a"}}}`)}}})
		}
		endpoint := func() time.Duration {
			tr := New(Options{})
			tr.Translate(m.Snapshot())
			start := time.Now()
			const k = 20
			for i := 0; i < k; i++ {
				tr.Translate(m.ChangeEndpoint(i))
			}
			return time.Since(start) / k
		}
		for _, tc := range []struct {
			name   string
			change func(i int) []overlay.Config
		}{
			{"one", func(i int) []overlay.Config {
				cs := slices.Clone(base)
				cs[0].Generation = int64(i + 1)
				cs[0].Plugins = []overlay.Plugin{{Name: "proxy-rewrite", Config: json.RawMessage(fmt.Sprintf(`{"headers":{"set":{"x-tenant":"%d"}}}`, i))}}
				return cs
			}},
			{"all", func(i int) []overlay.Config {
				if i%2 == 0 {
					return base
				}
				return append(slices.Clone(base), overlay.Config{Namespace: "ns", Name: "all",
					Scope:   overlay.Scope{Direction: overlay.DirectionOutbound},
					Plugins: []overlay.Plugin{{Name: "cors", Config: json.RawMessage(`{}`)}}})
			}},
		} {
			b.Run("N="+strconv.Itoa(n)+"/"+tc.name, func(b *testing.B) {
				epTime := endpoint()
				tr := New(Options{})
				tr.SetPlugins(overlay.Set{Version: 1, Configs: base})
				snap := m.Snapshot()
				tr.Translate(snap)
				snap = unchanged(snap)
				puts := 0
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					tr.SetPlugins(overlay.Set{Version: uint64(i + 2), Configs: tc.change(i + 1)})
					puts += len(tr.Translate(snap).Changes.Put)
				}
				b.ReportMetric(float64(puts)/float64(b.N), "puts/op")
				b.ReportMetric(float64(b.Elapsed())/float64(b.N)/float64(epTime), "x-endpoint")
			})
		}
	}
}
