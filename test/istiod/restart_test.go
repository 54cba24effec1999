package istiod_test

import (
	"bytes"
	"context"
	"maps"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// TestIstiodRestart: istiod is killed (SIGKILL, no goodbye); while it is down the details
// ServiceEntry is deleted; istiod comes back on the same address. Both ADS variants keep
// their last snapshot while disconnected, reconnect, resync, and drop what was deleted.
func TestIstiodRestart(t *testing.T) {
	requireEnv(t)
	sidecars := map[client.Protocol]*sidecar{}
	for _, proto := range protocols {
		sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
		snap := sc.next(t, mustHappen)
		if snap.Clusters[outbound("9080", "", details)] == nil {
			t.Fatalf("%s: details cluster missing before the restart", proto)
		}
		sidecars[proto] = sc
	}

	// And the whole pipeline, whose written APISIX config must stay in force meanwhile.
	a := startAmesh(t, sidecarEnv(t, env.istiod.GRPCAddr, client.Delta))
	hasDetails := func(o map[string][]byte) bool {
		return len(routesFor(t, o, details)) > 0 || strings.Contains(string(concat(o)), "127.0.0.51")
	}
	a.waitFor(t, "details written", hasDetails)
	written, version, _ := a.sink.state()

	env.istiod.Kill()
	// Whatever happens below, leave a running istiod and the details ServiceEntry for the
	// tests that follow.
	se := find(t, mustRead(t, "istio.yaml"), "ServiceEntry", "details")
	t.Cleanup(func() {
		if err := env.istiod.Restart(context.Background()); err != nil && !isRunning() {
			t.Fatalf("restart istiod: %v", err)
		}
		apply(t, se)
		for _, sc := range sidecars {
			sc.waitFor(t, "details back", func(s *resource.State) bool {
				return s.Clusters[outbound("9080", "", details)] != nil
			})
		}
	})
	for proto, sc := range sidecars {
		waitUntil(t, string(proto)+" client notices istiod is gone", func() bool {
			return sc.c.Status().State != client.Connected
		})
		sc.noSnapshot(t, string(proto)+": while istiod is down")
	}
	a.noWrite(t, "while istiod is down")
	if now, v, _ := a.sink.state(); v != version || !maps.EqualFunc(now, written, bytes.Equal) {
		t.Errorf("the APISIX config changed while istiod was down (version %d -> %d)", version, v)
	}
	if err := env.kube.Client.Delete(context.Background(), se); err != nil {
		t.Fatal(err)
	}
	reconnects := map[client.Protocol]uint64{}
	for proto, sc := range sidecars {
		reconnects[proto] = sc.c.Status().Reconnects
	}

	if err := env.istiod.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	objs := a.waitFor(t, "details routes and upstream deleted after the resync", func(o map[string][]byte) bool { return !hasDetails(o) })
	if len(routesFor(t, objs, reviews)) == 0 {
		t.Errorf("reviews routes lost in the resync")
	}
	for proto, sc := range sidecars {
		snap := sc.waitFor(t, string(proto)+": details dropped after the resync", func(s *resource.State) bool {
			// istiod sends CDS before RDS; a snapshot between the two is consistent (a route
			// to a missing cluster answers 503), so wait for both.
			return s.Clusters[outbound("9080", "", details)] == nil && vhost(t, s.RouteConfigs["9080"], details) == nil
		})
		if snap.Endpoints[outbound("9080", "", details)] != nil {
			t.Errorf("%s: endpoints of the deleted details service kept", proto)
		}
		if snap.Clusters[outbound("9080", "v1", reviews)] == nil || len(endpoints(snap.Endpoints[outbound("9080", "v2", reviews)])) != 2 {
			t.Errorf("%s: the rest of the mesh did not survive the resync", proto)
		}
		if st := sc.c.Status(); st.State != client.Connected || st.Reconnects <= reconnects[proto] {
			t.Errorf("%s: state %s, reconnects %d (before the restart %d)", proto, st.State, st.Reconnects, reconnects[proto])
		}
	}
}

func isRunning() bool {
	select {
	case <-env.istiod.Proc.Exited():
		return false
	default:
		return true
	}
}

func mustRead(t *testing.T, name string) []harness.Object {
	t.Helper()
	objs, err := readObjects(name)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}
