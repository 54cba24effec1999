package nginx

import (
	"fmt"
	"sync"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Route timeouts in real APISIX against an upstream that answers after 2 s: 1.5 s
// answers 504 after 1.5 s; what Envoy reads as no timeout (0, and under a
// millisecond, which Envoy reads in whole milliseconds) waits for the answer; one
// longer than nginx holds is clamped (reported) and waits for it too, where written
// as-is it would overflow nginx's timer.
func TestAPISIXRouteTimeouts(t *testing.T) {
	requireAPISIX(t)
	port := freePort(t)
	const delay = 2 * time.Second
	c := fmt.Sprintf("outbound|%d||slow.timeout.test", port)
	msgs := edsCluster(c, startBackendAt(t, "127.0.0.41", "slow", func() time.Duration { return delay }))
	cases := []struct {
		path    string
		timeout *durationpb.Duration
	}{
		{"/t1.5s", durationpb.New(1500 * time.Millisecond)},
		{"/t500us", durationpb.New(500 * time.Microsecond)},
		{"/t0", durationpb.New(0)},
		{"/t3e6s", &durationpb.Duration{Seconds: 3e6}},
	}
	var routes []*routev3.Route
	for _, tc := range cases {
		routes = append(routes, toCluster(tc.path, prefixMatch(tc.path), c, func(ra *routev3.RouteAction) { ra.Timeout = tc.timeout }))
	}
	msgs = append(msgs, outbound(port, "timeout"), routeConfig("timeout", vhost("timeout.test", routes...)))
	ap := startAPISIX(t, newXDS(t, resourcesOf(msgs...)), apisixOptions{Provider: "amesh", Workers: 2, Port: port})
	ap.waitServing()
	waitFor(t, "the routes", func() bool {
		ans, err := ap.call(port, "timeout.test", "/nothing")
		return err == nil && ans.code == 404
	})
	if e, ok := findEntry(ap.report(), "/t3e6s", "route.timeout", "exceeds what nginx holds"); !ok {
		t.Errorf("no report entry on the clamped timeout")
	} else {
		t.Logf("report: %s %s: %s", e.Resource, e.Field, e.Message)
	}

	answers := make([]answer, len(cases))
	var wg sync.WaitGroup
	for i, tc := range cases {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = ap.mustCall(port, "timeout.test", tc.path)
		}()
	}
	wg.Wait()
	for i, tc := range cases {
		ans := answers[i]
		t.Logf("%s: %d after %v", tc.path, ans.code, ans.took.Round(time.Millisecond))
		if tc.path == "/t1.5s" {
			// nginx's timer runs on its cached clock, which may lag by a few
			// milliseconds; the upstream's answer comes at 2 s.
			if ans.code != 504 || ans.took < 1450*time.Millisecond || ans.took > 1900*time.Millisecond {
				t.Errorf("%s: %d after %v, want 504 after 1.5 s", tc.path, ans.code, ans.took)
			}
			continue
		}
		if ans.code != 200 || ans.body != "slow" || ans.took < delay {
			t.Errorf("%s: %d %q after %v, want the upstream's answer after %v", tc.path, ans.code, ans.body, ans.took, delay)
		}
	}
}
