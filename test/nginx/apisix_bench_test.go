package nginx

import (
	"bufio"
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// BenchmarkAPISIXProviders measures APISIX 3.18 (AMESH_APISIX_HOME) with libxds.so on a
// fake control plane, once with APISIX's stock config_xds.lua and radixtree_host_uri
// and once with amesh's provider and amesh_host_uri, and prints one table with both:
//
//	go test -run XXX -bench APISIXProviders -benchtime 1x -timeout 60m ./test/nginx/
//
// AMESH_BENCH_SERVICES (default 10000) sizes the mesh (per service: 3 routes, one
// cluster, 10 endpoints), AMESH_BENCH_BUMPS (default 100) the number of endpoint changes,
// 2 s apart, under load; AMESH_BENCH_PROVIDERS (default "stock,amesh") which providers
// run. Per provider:
//   - first: time from amesh's first batch (its log) to the first request answered
//   - visible: one endpoint change (the probed service moves to another backend) until
//     requests reach the new backend, p50 / max over all changes (10 one at a time,
//     then the ones under load; one not visible before the next counts apart)
//   - CPU/bump: worker CPU (schedstat) per endpoint change and per one-route
//     VirtualService change, one at a time until the workers are quiet again, less
//     the idle cost (polling, a trickle of requests), mean per worker
//   - p99: request latency of a closed loop of 4 clients over 100 services without
//     bumps, and while the bumps come (requests that fail count as 20 s)
//   - RSS: workers' resident memory after the first request, and before and after
//     the changes under load (the requests before them warm it up)
func BenchmarkAPISIXProviders(b *testing.B) {
	requireAPISIX(b)
	services := envInt("AMESH_BENCH_SERVICES", 10000)
	bumps := envInt("AMESH_BENCH_BUMPS", 100)
	providers := strings.Split(cmp.Or(os.Getenv("AMESH_BENCH_PROVIDERS"), "stock,amesh"), ",")
	var rows []apisixRow
	for _, provider := range providers {
		r := benchProvider(b, provider, services, bumps)
		rows = append(rows, r)
		b.Logf("%s: %+v", provider, r)
	}
	printAPISIXTable(rows, services, bumps)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

type apisixRow struct {
	provider              string
	first                 time.Duration
	visible               []time.Duration
	censored              int // bumps superseded before they were visible
	cpuEndpoint, cpuRoute time.Duration
	noise                 time.Duration // resolution of the CPU figures
	p99Idle, p99Bumps     time.Duration
	// MiB per worker: after the first request, before and after the bumps under load
	rssFirst, rssStart, rssEnd float64
	requestsIdle, reqsBumps    int
}

// loadServices is how many services the load and the probe reach (their endpoints
// are local backends; the others' addresses answer nobody and are never asked).
const loadServices = 100

func benchProvider(b *testing.B, provider string, services, bumps int) apisixRow {
	row := apisixRow{provider: provider}
	port := freePort(b)
	mesh := meshgen.Generate(meshgen.Options{Services: services, Subsets: -1, BasePort: port})
	backends := []*backend{startBackend(b, "A"), startBackend(b, "B"), startBackend(b, "C")}
	res := mesh.Resources()
	hosts := make([]string, loadServices)
	for i := range hosts {
		hosts[i] = serviceHost(i + 1)
	}
	res[resource.EndpointType] = pointAt(res[resource.EndpointType], backends[0].port, hosts...)
	probe := serviceHost(0)
	res[resource.EndpointType] = pointAt(res[resource.EndpointType], backends[0].port, probe)
	xds := newXDS(b, res)

	ap := startAPISIX(b, xds, apisixOptions{Provider: provider, Workers: 2, Port: port})
	started := time.Now()
	firstAnswer := waitFirstAnswer(b, ap, probe)
	batch := firstBatchTime(b, filepath.Join(ap.dir, "logs", "amesh.log"))
	row.first = firstAnswer.Sub(batch)
	b.Logf("%s: first batch %v after start, first answer %v after it", provider, batch.Sub(started), row.first)
	workers := ap.processes("worker process")
	if len(workers) != 2 {
		b.Fatalf("%d workers", len(workers))
	}

	// A trickle of requests (2 clients, 50 ms apart) through the phases that measure
	// CPU, so that both workers route (APISIX rebuilds a router on the first request
	// after a change); its cost and the idle polling are measured first.
	trickle := startTrickle(ap, hosts)
	time.Sleep(2 * time.Second)
	row.rssFirst = rssMiB(workers)
	// base is the idle cost in ns per second (both workers); noise how far one 2 s
	// window of it strays from the mean, per worker: the resolution of the CPU figures.
	var windows []float64
	c0, t0 := cpuNS(workers), time.Now()
	for range 4 {
		c := cpuNS(workers)
		time.Sleep(2 * time.Second)
		windows = append(windows, float64(cpuNS(workers)-c))
	}
	base := float64(cpuNS(workers)-c0) / time.Since(t0).Seconds()
	for _, w := range windows {
		row.noise = max(row.noise, time.Duration(abs(w-base*2)/2))
	}

	target := 0
	bump := func() (want string, at time.Time) {
		target = (target + 1) % len(backends)
		res[resource.EndpointType] = pointAt(res[resource.EndpointType], backends[target].port, probe)
		at = time.Now()
		if err := xds.Update(findCLA(res[resource.EndpointType], probe)); err != nil {
			b.Fatal(err)
		}
		return backends[target].name, at
	}
	// visibleAfter polls the probed service until it answers want, up to d.
	visibleAfter := func(want string, at time.Time, d time.Duration) (time.Duration, bool) {
		for time.Since(at) < d {
			if _, body, err := ap.request(probe, "/"); err == nil && body == want {
				return time.Since(at), true
			}
			time.Sleep(5 * time.Millisecond)
		}
		return 0, false
	}
	// cpuOf measures the workers' CPU for one change: from before it until both
	// workers are quiet again, less the baseline.
	cpuOf := func(change func()) time.Duration {
		c, t := cpuNS(workers), time.Now()
		change()
		time.Sleep(2 * time.Second) // the stock provider polls once a second
		for last := cpuNS(workers); time.Since(t) < 2*time.Minute; {
			time.Sleep(250 * time.Millisecond)
			now := cpuNS(workers)
			if float64(now-last) <= base*0.25+float64(4*time.Millisecond) {
				break
			}
			last = now
		}
		return time.Duration((float64(cpuNS(workers)-c) - base*time.Since(t).Seconds()) / 2)
	}

	// Endpoint changes, one at a time: CPU per change and when traffic sees it.
	const measured = 10
	var cpu time.Duration
	for range measured {
		cpu += cpuOf(func() {
			want, at := bump()
			if d, ok := visibleAfter(want, at, time.Minute); ok {
				row.visible = append(row.visible, d)
			} else {
				row.censored++
			}
		})
	}
	row.cpuEndpoint = cpu / measured

	// One-route VirtualService changes: the route configuration is resent whole (as
	// istiod does); amesh writes the routes that changed.
	const routeBumps = 5
	cpu = 0
	for i := range routeBumps {
		cpu += cpuOf(func() {
			res[resource.RouteConfigType] = editRoute(res[resource.RouteConfigType], 7*i+3, fmt.Sprintf("user-bench-%d", i))
			if err := xds.Update(res[resource.RouteConfigType]...); err != nil {
				b.Fatal(err)
			}
		})
	}
	row.cpuRoute = cpu / routeBumps
	trickle()

	// Latency under load, without and with an endpoint change every 2 s (or, with
	// AMESH_BENCH_NO_CHANGES, the same load again without them: the control for RSS).
	noChanges := os.Getenv("AMESH_BENCH_NO_CHANGES") != ""
	lat, n, _ := runLoad(ap, hosts, 15*time.Second, nil)
	row.p99Idle, row.requestsIdle = percentile(lat, 0.99), n
	row.rssStart = rssMiB(workers)
	lat, n, _ = runLoad(ap, hosts, time.Duration(bumps)*2*time.Second+time.Second, func(stop <-chan struct{}) {
		tick := time.NewTicker(2 * time.Second)
		defer tick.Stop()
		for range bumps {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			if noChanges {
				continue
			}
			want, at := bump()
			if d, ok := visibleAfter(want, at, 2*time.Second-100*time.Millisecond); ok {
				row.visible = append(row.visible, d)
			} else {
				row.censored++
			}
		}
	})
	row.p99Bumps, row.reqsBumps = percentile(lat, 0.99), n
	row.rssEnd = rssMiB(workers)
	ap.stop()
	return row
}

// waitFirstAnswer waits until probe answers "A" (the first backend) and returns when.
func waitFirstAnswer(b *testing.B, ap *apisixInstance, probe string) time.Time {
	var at time.Time
	waitForLong(b, "the first request answered", 10*time.Minute, func() bool {
		code, body, err := ap.request(probe, "/")
		if err == nil && code == 200 && body == "A" {
			at = time.Now()
			return true
		}
		time.Sleep(10 * time.Millisecond)
		return false
	})
	return at
}

// startTrickle sends requests from 2 clients, 50 ms apart, until the returned
// function is called.
func startTrickle(ap *apisixInstance, hosts []string) (stop func()) {
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := c; !stopped.Load(); i++ {
				_, _, _ = ap.request(hosts[i%len(hosts)], "/")
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
	return func() { stopped.Store(true); wg.Wait() }
}

// findCLA returns the load assignment of host's cluster.
func findCLA(clas []proto.Message, host string) proto.Message {
	for _, m := range clas {
		if strings.HasSuffix(m.(*endpointv3.ClusterLoadAssignment).GetClusterName(), "|"+host) {
			return m
		}
	}
	return nil
}

// runLoad runs 4 closed-loop clients over hosts for d (and bump meanwhile, if set) and
// returns every request's latency (20 s for a failed one), their number and the time
// it took.
func runLoad(ap *apisixInstance, hosts []string, d time.Duration, bump func(stop <-chan struct{})) ([]time.Duration, int, time.Duration) {
	var (
		mu  sync.Mutex
		lat []time.Duration
		wg  sync.WaitGroup
	)
	stop := make(chan struct{})
	var stopped atomic.Bool
	start := time.Now()
	for c := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(c), 1))
			for !stopped.Load() {
				t0 := time.Now()
				code, _, err := ap.request(hosts[rng.IntN(len(hosts))], "/")
				l := time.Since(t0)
				if err != nil || code != 200 {
					l = max(l, 20*time.Second)
				}
				mu.Lock()
				lat = append(lat, l)
				mu.Unlock()
			}
		}()
	}
	if bump != nil {
		wg.Add(1)
		go func() { defer wg.Done(); bump(stop) }()
	}
	time.Sleep(d)
	stopped.Store(true)
	close(stop)
	wg.Wait()
	return lat, len(lat), time.Since(start)
}

var batchTimeRe = regexp.MustCompile(`^time=(\S+) .*msg="applied batch"`)

// firstBatchTime is the time of amesh's first "applied batch" log line.
func firstBatchTime(b *testing.B, path string) time.Time {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if m := batchTimeRe.FindSubmatch(sc.Bytes()); m != nil {
			t, err := time.Parse(time.RFC3339Nano, string(m[1]))
			if err != nil {
				b.Fatal(err)
			}
			return t
		}
	}
	b.Fatal("no applied batch in amesh's log")
	return time.Time{}
}

// cpuNS is the CPU time of the processes' threads in nanoseconds (schedstat).
func cpuNS(pids []int) int64 {
	var total int64
	for _, p := range pids {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", p))
		for _, t := range tasks {
			b, _ := os.ReadFile(t)
			if f := strings.Fields(string(b)); len(f) > 0 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				total += v
			}
		}
	}
	return total
}

// rssMiB is the processes' mean resident memory.
func rssMiB(pids []int) float64 {
	var total float64
	for _, p := range pids {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseFloat(f[1], 64)
				total += kb / 1024
			}
		}
	}
	return total / float64(len(pids))
}

func percentile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	slices.Sort(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func printAPISIXTable(rows []apisixRow, services, bumps int) {
	la, _ := os.ReadFile("/proc/loadavg")
	fmt.Printf("\nAPISIX 3.18, %d services (3 routes, 1 cluster, 10 endpoints each), 2 workers, %d endpoint changes 2 s apart under load (load average at the end: %s)\n\n",
		services, bumps, strings.Join(strings.Fields(string(la))[:3], " "))
	fmt.Printf("| provider | first request after first batch | change visible p50 / max | not visible within 2 s | worker CPU per endpoint change | per one-route change | p99 no bumps → bumps | requests | worker RSS first request; before → after the bumps |\n")
	fmt.Printf("(CPU figures ± the idle noise of a 2 s window; below it they read as ≤ that.)\n")
	fmt.Printf("|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Printf("| %s | %s | %s / %s | %d | %s | %s | %s → %s | %d → %d | %.0f; %.0f → %.0f MiB |\n",
			r.provider, ms(r.first), ms(percentile(r.visible, 0.5)), ms(percentile(r.visible, 1)), r.censored,
			cpuFigure(r.cpuEndpoint, r.noise), cpuFigure(r.cpuRoute, r.noise), ms(r.p99Idle), ms(r.p99Bumps),
			r.requestsIdle, r.reqsBumps, r.rssFirst, r.rssStart, r.rssEnd)
	}
	fmt.Println()
}

// cpuFigure is d ± noise, or "≤ noise" when d is within it.
func cpuFigure(d, noise time.Duration) string {
	if d <= noise {
		return "≤ " + ms(noise)
	}
	return ms(d) + " ± " + ms(noise)
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }
