package nginx

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// benchMesh is 10,000 services in istiod's shapes: one port, 3 routes each, a default
// and one subset cluster, 3 endpoints per cluster.
func benchMesh() *meshgen.Mesh {
	return meshgen.Generate(meshgen.Options{Services: 10000, Subsets: 1, EndpointsPerCluster: 3})
}

var writeRe = regexp.MustCompile(`msg="applied batch".* put=(\d+) .* latency=(\S+) write=(\S+)`)

// lastBatch returns the put count, push-to-write latency and write time of the
// newest "applied batch" line in amesh's log with at least minPuts keys.
func (n *instance) lastBatch(b *testing.B, minPuts int) (puts int, latency, write time.Duration) {
	b.Helper()
	f, err := os.Open(filepath.Join(n.prefix, "amesh.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if m := writeRe.FindSubmatch(sc.Bytes()); m != nil {
			if p, _ := strconv.Atoi(string(m[1])); p < minPuts {
				continue
			}
			puts, _ = strconv.Atoi(string(m[1]))
			latency, _ = time.ParseDuration(string(m[2]))
			write, _ = time.ParseDuration(string(m[3]))
		}
	}
	return puts, latency, write
}

// BenchmarkFullConfig10k measures writing a complete 10,000-service configuration:
// each iteration kills the process running libxds.so; nginx respawns it and the
// library fetches everything from the control plane, translates it and writes every
// key. Reported: the whole recovery (kill → all keys visible in nginx), the shared
// dict write alone (from the agent's log), keys and dict bytes used.
func BenchmarkFullConfig10k(b *testing.B) {
	mesh := benchMesh()
	res := mesh.Resources()
	xds := newXDS(b, res)
	n := start(b, xds, options{Workers: 1, DictSize: "512m"})
	keys := len(expected(b, res))
	d := waitBench(b, n, func(d dump) bool { return len(d.Keys) == keys })

	var total, write time.Duration
	b.ResetTimer()
	for i := range b.N {
		loader, v := d.LoaderPID, d.version()
		t0 := time.Now()
		if err := killPID(loader); err != nil {
			b.Fatal(err)
		}
		// The first batch may precede the last EDS responses; wait for all keys.
		waitFor(b, "the respawned worker's full write", func() bool {
			if nv := n.version(); nv == 0 || nv == v {
				return false
			}
			d = n.dump()
			return len(d.Keys) == keys
		})
		total += time.Since(t0)
		b.StopTimer()
		if d.Loads != i+2 {
			b.Fatalf("after respawn: %d keys (want %d), %d loads", len(d.Keys), keys, d.Loads)
		}
		_, _, w := n.lastBatch(b, keys*9/10) // the full batch, not a later completion
		write += w
		b.StartTimer()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/full-resync")
	b.ReportMetric(float64(write.Microseconds())/1000/float64(b.N), "ms/dict-write")
	b.ReportMetric(float64(keys), "keys")
	b.ReportMetric(float64(dictUsed(b, n))/(1<<20), "MiB-used")
}

// BenchmarkIncrementalChange measures one endpoint change in the 10,000-service mesh:
// from the control plane's update to the version bump seen through nginx, and the
// agent's push-to-write latency and dict write for that batch.
func BenchmarkIncrementalChange(b *testing.B) {
	mesh := benchMesh()
	xds := newXDS(b, mesh.Resources())
	n := start(b, xds, options{Workers: 1, DictSize: "512m"})
	keys := len(expected(b, mesh.Resources()))
	waitBench(b, n, func(d dump) bool { return len(d.Keys) == keys })
	var lat, write time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		mesh.ChangeEndpoint(2*i + 1) // a subset cluster that routes use
		name := mesh.EDSClusters()[(2*i+1)%len(mesh.EDSClusters())]
		var changed []proto.Message
		for _, m := range mesh.Resources()[resource.EndpointType] {
			if m.(*endpointv3.ClusterLoadAssignment).GetClusterName() == name {
				changed = append(changed, m)
			}
		}
		v := n.version()
		b.StartTimer()
		if err := xds.Update(changed...); err != nil {
			b.Fatal(err)
		}
		waitFor(b, "the version bump", func() bool { return n.version() != v })
		b.StopTimer()
		_, l, w := n.lastBatch(b, 1)
		lat += l
		write += w
		b.StartTimer()
	}
	b.ReportMetric(float64(lat.Microseconds())/1000/float64(b.N), "ms-push-to-write/op")
	b.ReportMetric(float64(write.Microseconds())/1000/float64(b.N), "ms-dict-write/op")
}

func waitBench(b *testing.B, n *instance, cond func(dump) bool) dump {
	b.Helper()
	var d dump
	waitFor(b, "the initial configuration", func() bool { d = n.dump(); return cond(d) })
	return d
}

func dictUsed(b *testing.B, n *instance) int64 {
	conf, err := os.ReadFile(filepath.Join(n.prefix, "nginx.conf"))
	if err != nil || !bytes.Contains(conf, []byte("xds-config 512m")) {
		b.Fatalf("unexpected dict size in nginx.conf: %v", err)
	}
	return 512<<20 - n.dump().FreeSpace
}

// readersAt polls /readers until every worker's reader has applied the dict's version
// v (or any version other than not, when v is empty) and returns them.
func (n *instance) readersAt(b *testing.B, not string) map[string]readerV {
	b.Helper()
	var out map[string]readerV
	waitForLong(b, "the readers to apply a new version", 10*time.Minute, func() bool {
		body, err := n.get("/readers")
		if err != nil {
			b.Fatal(err)
		}
		var d struct {
			Version *string            `json:"version"`
			Readers map[string]readerV `json:"readers"`
		}
		if err := json.Unmarshal(body, &d); err != nil {
			b.Fatal(err)
		}
		if d.Version == nil || *d.Version == not || len(d.Readers) != n.opts.Workers {
			return false
		}
		for _, r := range d.Readers {
			if r.Version != *d.Version {
				return false
			}
		}
		out = d.Readers
		return true
	})
	return out
}

// BenchmarkProviderCore10k compares, in one run, the worker CPU per version bump of
// the stock provider's reading (every kind lists every key and decodes its own: the
// "stock" reader, without APISIX's schema checks and router, so a lower bound) with
// amesh's provider core (the "amesh" reader: the journal, only the changed keys), at
// 10,000 services (40,000 keys) with 2 workers: one endpoint change and one
// one-route VirtualService change, and the first load.
func BenchmarkProviderCore10k(b *testing.B) {
	for _, reader := range []string{"stock", "amesh"} {
		mesh := benchMesh()
		res := mesh.Resources()
		xds := newXDS(b, res)
		n := start(b, xds, options{Workers: 2, DictSize: "512m", Reader: reader})
		keys := len(expected(b, res))
		var rs map[string]readerV
		waitForLong(b, "the whole mesh", 10*time.Minute, func() bool {
			rs = n.readersAt(b, "")
			for _, r := range rs {
				if reader == "amesh" && r.Keys != keys {
					return false
				}
			}
			return reader == "amesh" || anyKeys(rs) >= keys
		})
		first := meanCPU(rs, func(r readerV) float64 { return r.CPUms })
		var endpoint, route float64
		const bumps = 10
		for i := range bumps {
			v := n.version()
			mesh.ChangeEndpoint(2*i + 1)
			name := mesh.EDSClusters()[(2*i+1)%len(mesh.EDSClusters())]
			if err := xds.Update(mesh.LoadAssignment(name)); err != nil {
				b.Fatal(err)
			}
			rs = n.readersAt(b, strconv.FormatUint(v, 10))
			endpoint += meanCPU(rs, func(r readerV) float64 { return r.LastCPUms })
		}
		for i := range bumps {
			v := n.version()
			res[resource.RouteConfigType] = editRoute(res[resource.RouteConfigType], 11*i+5, fmt.Sprintf("user-core-%d", i))
			if err := xds.Update(res[resource.RouteConfigType]...); err != nil {
				b.Fatal(err)
			}
			rs = n.readersAt(b, strconv.FormatUint(v, 10))
			route += meanCPU(rs, func(r readerV) float64 { return r.LastCPUms })
		}
		b.ReportMetric(first, reader+"-ms-first-load")
		b.ReportMetric(endpoint/bumps, reader+"-ms/endpoint-bump")
		b.ReportMetric(route/bumps, reader+"-ms/route-bump")
		n.stop()
	}
}

func anyKeys(rs map[string]readerV) int {
	for _, r := range rs {
		return r.Keys
	}
	return 0
}

// meanCPU is the mean over the workers of f.
func meanCPU(rs map[string]readerV, f func(readerV) float64) float64 {
	var sum float64
	for _, r := range rs {
		sum += f(r)
	}
	return sum / float64(len(rs))
}
