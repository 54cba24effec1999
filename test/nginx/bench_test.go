package nginx

import (
	"bufio"
	"bytes"
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
