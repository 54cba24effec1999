package nginx

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// BenchmarkAPISIXStreamMemory measures what the stream subsystem costs APISIX's workers
// (AMESH_APISIX_HOME, amesh's provider) on a mesh of AMESH_BENCH_SERVICES (default
// 10000) services, with it off and on (as the chart runs it), in one run:
//
//	go test -run XXX -bench APISIXStreamMemory -benchtime 1x -timeout 60m ./test/nginx/
//
// Per run: the workers' mean RSS once the first requests are answered (and one connection
// went through the stream proxy), and the Lua heap (collectgarbage("count") after a full
// collection) of a worker's http VM and, when on, of its stream VM, the largest of 10
// reads.
func BenchmarkAPISIXStreamMemory(b *testing.B) {
	requireAPISIX(b)
	services := envInt("AMESH_BENCH_SERVICES", 10000)
	type row struct {
		rss, httpHeap, streamHeap float64
	}
	var rows [2]row
	for i, stream := range []bool{false, true} {
		port, heapPort := freePort(b), freePort(b)
		mesh := meshgen.Generate(meshgen.Options{Services: services, Subsets: -1, BasePort: port})
		res := mesh.Resources()
		backend := startBackend(b, "A")
		probe := serviceHost(0)
		res[resource.EndpointType] = pointAt(res[resource.EndpointType], backend.port, probe)
		xds := newXDS(b, res)
		// The heap endpoints: a full collection first, so that the figure is what
		// the VM holds, not what it has yet to collect.
		const heap = `content_by_lua_block { collectgarbage("collect") collectgarbage("collect") ngx.say(collectgarbage("count")) }`
		o := apisixOptions{Provider: "amesh", Workers: 2, Port: port,
			Snippet: fmt.Sprintf("server { listen 127.0.0.1:%d; location / { %s } }", heapPort, heap)}
		var streamPort, streamHeapPort int
		if stream {
			streamPort, streamHeapPort = freePort(b), freePort(b)
			o.StreamPort = streamPort
			o.StreamSnippet = fmt.Sprintf("server { listen 127.0.0.1:%d; %s }", streamHeapPort, heap)
		}
		ap := startAPISIX(b, xds, o)
		waitFirstAnswer(b, ap, probe)
		// More requests, on connections of their own, so that both workers built their
		// router (on the first request they take).
		for range 50 {
			_, _, _ = ap.request(probe, "/")
		}
		if stream {
			// One connection through the stream proxy, so that its router is built.
			if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(streamPort), 5*time.Second); err == nil {
				_ = c.SetDeadline(time.Now().Add(2 * time.Second))
				_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: " + probe + "\r\n\r\n"))
				_, _ = c.Read(make([]byte, 1))
				c.Close()
			}
		}
		time.Sleep(3 * time.Second)
		workers := ap.processes("worker process")
		if len(workers) != 2 {
			b.Fatalf("%d workers", len(workers))
		}
		rows[i].rss = rssMiB(workers)
		// Which worker answers is the kernel's choice: the largest of several reads.
		for range 10 {
			body, err := ap.get(heapPort, "/")
			if err != nil {
				b.Fatal(err)
			}
			rows[i].httpHeap = max(rows[i].httpHeap, parseKiB(b, string(body)))
			if !stream {
				continue
			}
			c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(streamHeapPort), 5*time.Second)
			if err != nil {
				b.Fatal(err)
			}
			_ = c.SetDeadline(time.Now().Add(30 * time.Second))
			buf := make([]byte, 64)
			n, _ := c.Read(buf)
			c.Close()
			rows[i].streamHeap = max(rows[i].streamHeap, parseKiB(b, string(buf[:n])))
		}
		b.Logf("stream %v: %+v", stream, rows[i])
		ap.stop()
	}
	off, on := rows[0], rows[1]
	fmt.Printf("\nAPISIX 3.18, amesh provider, %d services (3 routes, 1 cluster, 10 endpoints each), 2 workers\n\n", services)
	fmt.Printf("| stream subsystem | worker RSS | http VM Lua heap | stream VM Lua heap |\n|---|---|---|---|\n")
	fmt.Printf("| off | %.0f MiB | %.0f MiB | - |\n", off.rss, off.httpHeap/1024)
	fmt.Printf("| on | %.0f MiB (%.2f× off) | %.0f MiB | %.0f MiB (%.2f× the http VM's) |\n\n",
		on.rss, on.rss/off.rss, on.httpHeap/1024, on.streamHeap/1024, on.streamHeap/on.httpHeap)
}

// parseKiB reads collectgarbage("count")'s figure.
func parseKiB(b *testing.B, s string) float64 {
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil {
		b.Fatalf("heap %q: %v", s, err)
	}
	return v
}
