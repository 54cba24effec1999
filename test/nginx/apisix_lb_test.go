package nginx

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/lbsim"
)

// expDelay draws exponential service times of the given mean (lbsim's model of a host).
func expDelay(mean time.Duration) func() time.Duration {
	return func() time.Duration { return time.Duration(rand.ExpFloat64() * float64(mean)) }
}

// withWeights sets the load balancing weights of a load assignment's endpoints.
func withWeights(cla proto.Message, weights ...uint32) {
	lbs := cla.(*endpointv3.ClusterLoadAssignment).GetEndpoints()[0].GetLbEndpoints()
	for i, w := range weights {
		lbs[i].LoadBalancingWeight = wrapperspb.UInt32(w)
	}
}

// LEAST_REQUEST clusters (istiod's default) spread sequential requests over their
// hosts by weight in real APISIX, as Envoy's least request does when no request is in
// flight: with equal weights it takes the first of two hosts drawn at random (each
// request independently uniform), with unequal weights it follows an earliest-deadline
// schedule of the weights (the shares exactly). Under concurrency with one slow host,
// APISIX's round robin ignores load where Envoy avoids the slow host: the shares and
// latencies are measured and set beside lbsim's model of Envoy.
func TestAPISIXLeastRequest(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	cluster := func(host string) string { return fmt.Sprintf("outbound|%d||%s", port, host) }
	const fastMean, slowMean = 20 * time.Millisecond, 100 * time.Millisecond
	equal := edsCluster(cluster("equal.test"), startBackendAt(t, "127.0.0.11", "equal-1", nil), startBackendAt(t, "127.0.0.12", "equal-2", nil))
	weighted := edsCluster(cluster("weighted.test"), startBackendAt(t, "127.0.0.13", "heavy", nil), startBackendAt(t, "127.0.0.14", "light", nil))
	withWeights(weighted[1], 3, 1)
	loaded := edsCluster(cluster("loaded.test"), startBackendAt(t, "127.0.0.15", "fast", expDelay(fastMean)), startBackendAt(t, "127.0.0.16", "slow", expDelay(slowMean)))
	msgs := []proto.Message{outbound(port, "lb"), routeConfig("lb",
		vhost("equal.test", toCluster("equal", prefixMatch("/"), cluster("equal.test"), nil)),
		vhost("weighted.test", toCluster("weighted", prefixMatch("/"), cluster("weighted.test"), nil)),
		vhost("loaded.test", toCluster("loaded", prefixMatch("/"), cluster("loaded.test"), nil)),
	)}
	msgs = append(append(append(msgs, equal...), weighted...), loaded...)
	xds := newXDS(t, resourcesOf(msgs...))
	const workers = 2
	ap := startAPISIX(t, xds, apisixOptions{Provider: "amesh", Workers: workers, Port: port})
	ap.waitServing()
	for _, h := range []string{"equal.test", "weighted.test", "loaded.test"} {
		ap.waitCode(port, h, "/", 200)
		if e, ok := findEntry(ap.report(), cluster(h), "lb_policy", "LEAST_REQUEST"); !ok {
			t.Errorf("no report entry on %s's LEAST_REQUEST", cluster(h))
		} else {
			t.Logf("report: %s %s: %s", e.Resource, e.Field, e.Message)
		}
	}

	const n = 1000
	got := ap.counts(port, "equal.test", "/", n)
	t.Logf("equal weights, %d sequential requests: %v", n, got)
	checkShares(t, "equal weights", got, n, map[string]uint32{"equal-1": 1, "equal-2": 1}, binomialBound(n))

	got = ap.counts(port, "weighted.test", "/", n)
	t.Logf("weights 3:1, %d sequential requests: %v", n, got)
	// Envoy's schedule gives the shares exactly, up to where in it the requests
	// start; so does round robin in each worker: one round of the weights per worker.
	checkShares(t, "weights 3:1", got, n, map[string]uint32{"heavy": 3, "light": 1}, func(float64) float64 { return workers * (3 + 1) })

	t.Run("concurrency with a slow host", func(t *testing.T) {
		const clients, m = 16, 3000
		var mu sync.Mutex
		hits := map[string]int{}
		var sum time.Duration
		var wg sync.WaitGroup
		next := make(chan struct{}, m)
		for range m {
			next <- struct{}{}
		}
		close(next)
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range next {
					ans, err := ap.call(port, "loaded.test", "/")
					mu.Lock()
					switch {
					case err != nil:
						hits["error: "+err.Error()]++
					case ans.code != 200:
						hits[fmt.Sprintf("%d %s", ans.code, ans.body)]++
					default:
						hits[ans.body]++
						sum += ans.took
					}
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		elapsed := time.Since(start)
		if hits["fast"]+hits["slow"] != m {
			t.Fatalf("answers: %v", hits)
		}
		real := []float64{float64(hits["fast"]) / m, float64(hits["slow"]) / m}
		s := lbsim.Scenario{Weights: []int{1, 1}, Latency: []float64{fastMean.Seconds(), slowMean.Seconds()}, Clients: clients, Workers: workers}
		envoy, rr, lc := s.Run(lbsim.Envoy, 20000, 1), s.Run(lbsim.RoundRobin, 20000, 2), s.Run(lbsim.LeastConn, 20000, 3)
		service := func(sh []float64) time.Duration {
			return time.Duration(sh[0]*float64(fastMean) + sh[1]*float64(slowMean))
		}
		t.Logf("%d clients, %d requests, hosts of mean service time %v and %v (exponential), %d workers:", clients, m, fastMean, slowMean, workers)
		t.Logf("  real APISIX (roundrobin): shares %s, mean latency %.1f ms (the hosts' mean service times at these shares: %.1f ms), %.0f requests/s",
			lbsim.Shares(real), msOf(sum/m), msOf(service(real)), m/elapsed.Seconds())
		t.Logf("  lbsim roundrobin:         shares %s, service time %.1f ms", lbsim.Shares(rr), msOf(service(rr)))
		t.Logf("  lbsim least_conn (not used): shares %s, service time %.1f ms", lbsim.Shares(lc), msOf(service(lc)))
		// Envoy's latency: its service time plus what APISIX adds to the service time.
		overhead := sum/m - service(real)
		envoyLatency := service(envoy) + overhead
		t.Logf("  lbsim Envoy least request: shares %s, service time %.1f ms; with APISIX's %.1f ms on top, %.1f ms and %.0f requests/s:",
			lbsim.Shares(envoy), msOf(service(envoy)), msOf(overhead), msOf(envoyLatency), clients/envoyLatency.Seconds())
		t.Logf("  round robin's mean latency is %.2fx Envoy's (a closed loop's throughput the inverse)", float64(sum/m)/float64(envoyLatency))
		// The model of APISIX must hold in APISIX, or its Envoy figures say nothing:
		// 0.05 is 5 standard deviations of a share over m requests at random.
		if d := lbsim.Distance(real, rr); d > 0.05 {
			t.Errorf("real APISIX's shares %s are %.2f from lbsim's round robin %s", lbsim.Shares(real), d, lbsim.Shares(rr))
		}
	})
}

func msOf(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// A split over 25 weighted clusters (more than APISIX's traffic-split takes), in two
// groups of equal upstream settings, is served by merged upstreams whose node weights
// give each cluster its weight's share: over n sequential requests in real APISIX each
// cluster's count is within the binomial bound of Envoy's random weighted pick.
func TestAPISIXSplitOverTwentyClusters(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	const clusters = 25
	var msgs []proto.Message
	split := &routev3.WeightedCluster{}
	want := map[string]uint32{}
	var total uint32
	for i := range clusters {
		name := fmt.Sprintf("outbound|%d|v%02d|split.test", port, i)
		b := startBackendAt(t, fmt.Sprintf("127.0.0.%d", 100+i), fmt.Sprintf("v%02d", i), nil)
		c := edsCluster(name, b)
		if i%2 == 1 {
			// Another connect timeout: another upstream, so two groups.
			c[0].(*clusterv3.Cluster).ConnectTimeout = durationpb.New(3 * time.Second)
		}
		msgs = append(msgs, c...)
		w := uint32(i + 1)
		want[b.name] = w
		total += w
		split.Clusters = append(split.Clusters, &routev3.WeightedCluster_ClusterWeight{Name: name, Weight: wrapperspb.UInt32(w)})
	}
	msgs = append(msgs, outbound(port, "split"), routeConfig("split", vhost("split.test",
		&routev3.Route{Name: "split", Match: prefixMatch("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: split}}}})))
	ap := startAPISIX(t, newXDS(t, resourcesOf(msgs...)), apisixOptions{Provider: "amesh", Workers: 2, Port: port})
	ap.waitServing()
	ap.waitCode(port, "split.test", "/", 200)
	if e, ok := findEntry(ap.report(), "split", "route.weighted_clusters", "share upstreams"); !ok {
		t.Errorf("no report entry on the merged split")
	} else {
		t.Logf("report: %s %s: %s", e.Resource, e.Field, e.Message)
	}
	n := 8 * int(total)
	got := ap.counts(port, "split.test", "/", n)
	t.Logf("%d requests over %d clusters of weights 1..%d: %v", n, clusters, clusters, got)
	checkShares(t, "split", got, n, want, binomialBound(n))
}
