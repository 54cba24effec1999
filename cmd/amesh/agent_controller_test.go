package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

// reviewsServer serves one outbound listener on 9080 with a route to reviews, until
// the test ends.
func reviewsServer(t *testing.T) *xdstest.Server {
	t.Helper()
	srv, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	const cluster = "outbound|9080||reviews.default.svc.cluster.local"
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""))
	srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", cluster))
	srv.Set(resource.ClusterType, xdstest.EDSCluster(cluster))
	srv.Set(resource.EndpointType, xdstest.Endpoints(cluster, "10.1.0.1:9080"))
	return srv
}

// TestAgentControllerFlag checks that -controller-address reaches the pipeline: the
// agent serves Istio's config while no controller answers and shows the connection in
// its status server (the plugin merge itself is tested in internal/sidecar).
func TestAgentControllerFlag(t *testing.T) {
	setPodEnv(t)
	t.Setenv("AMESH_CONTROLLER_TOKEN_FILE", "none")
	srv := reviewsServer(t)

	ctx, cancel := withContext(t)
	ctl, statusAddr := freeAddr(t), freeAddr(t)
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"agent", "-xds-address", srv.Addr(), "-controller-address", ctl,
			"-output", filepath.Join(t.TempDir(), "apisix.yaml"), "-status-addr", statusAddr, "-log-level", "error"}, stdout, stderr)
	}()
	stdout.waitFor(t, "keeping it in sync", 30*time.Second)
	base := "http://" + statusAddr
	if _, body := httpGet(t, base+"/debug/controller"); !strings.Contains(body, `"configured": true`) ||
		!strings.Contains(body, `"address": "`+ctl+`"`) || !strings.Contains(body, `"connected": false`) {
		t.Errorf("/debug/controller = %s", body)
	}
	if _, metrics := httpGet(t, base+"/metrics"); !strings.Contains(metrics, "\namesh_controller_connected 0\n") {
		t.Errorf("/metrics lacks amesh_controller_connected 0:\n%s", metrics)
	}
	stopAgent(t, cancel, done, stderr)
}
