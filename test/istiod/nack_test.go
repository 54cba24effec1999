package istiod_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// badConnectTimeout is an EnvoyFilter that makes istiod send the details cluster with a
// negative connect_timeout: istiod applies EnvoyFilter patches without validating them, so
// this is how a real istiod ends up sending a resource Envoy (and amesh) must reject.
func badConnectTimeout() harness.Object {
	return harness.Object{
		"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
		"metadata": map[string]any{"name": "bad-connect-timeout", "namespace": namespace},
		"spec": map[string]any{
			"workloadSelector": map[string]any{"labels": map[string]any{"app": "productpage"}},
			"configPatches": []any{map[string]any{
				"applyTo": "CLUSTER",
				"match": map[string]any{"context": "SIDECAR_OUTBOUND",
					"cluster": map[string]any{"service": details, "portNumber": 9080}},
				"patch": map[string]any{"operation": "MERGE", "value": map[string]any{"connect_timeout": "-1s"}},
			}},
		},
	}
}

// TestNACK: istiod sends an invalid cluster. amesh NACKs it with a detail naming the resource
// and the problem, keeps the last good version of it, and keeps applying everything else.
func TestNACK(t *testing.T) {
	requireEnv(t)
	for _, proto := range protocols {
		t.Run(string(proto), func(t *testing.T) {
			sc := startSidecar(t, sidecarEnv(t, env.istiod.GRPCAddr, proto))
			base := sc.next(t, mustHappen)
			good := base.Clusters[outbound("9080", "", details)]
			if d := connectTimeout(t, good); d <= 0 {
				t.Fatalf("details cluster missing or already invalid (connect_timeout %v)", d)
			}

			ef := badConnectTimeout()
			apply(t, ef)
			t.Cleanup(func() {
				if err := env.kube.Client.Delete(context.Background(), ef); err != nil {
					t.Error(err)
				}
				// Without the filter istiod sends the valid cluster again, and it is accepted.
				acks := sc.c.Status().Types[resource.ClusterType].ACKs
				waitUntil(t, "the valid cluster is ACKed again", func() bool {
					return sc.c.Status().Types[resource.ClusterType].ACKs > acks
				})
			})
			waitUntil(t, "the invalid cluster is NACKed", func() bool {
				return sc.c.Status().Types[resource.ClusterType].NACKs > 0
			})
			detail := sc.c.Status().Types[resource.ClusterType].LastNACK
			for _, want := range []string{outbound("9080", "", details), "connect_timeout"} {
				if !strings.Contains(strings.ToLower(detail), strings.ToLower(want)) &&
					!strings.Contains(strings.ToLower(detail), strings.ReplaceAll(want, "_", "")) {
					t.Errorf("NACK detail %q does not name %q", detail, want)
				}
			}

			// istiod got the detail, too (it logs rejected configs with the proxy's id).
			waitUntil(t, "istiod logs the NACK", func() bool {
				log := env.istiod.Proc.Tail(1 << 20)
				return strings.Contains(log, "ACK ERROR "+podName) && strings.Contains(log, outbound("9080", "", details))
			})

			// The rest keeps working: a route edit arrives, and the details cluster in that
			// snapshot is still the last good one.
			apply(t, ratingsVS(70, 30))
			t.Cleanup(func() {
				apply(t, ratingsVS(50, 50))
				sc.waitFor(t, "ratings weights back to 50/50", func(s *resource.State) bool {
					return slices.Equal(defaultWeights(t, s, ratings), []uint32{50, 50})
				})
			})
			snap := sc.waitFor(t, "ratings weights 70/30 despite the NACK", func(s *resource.State) bool {
				return slices.Equal(defaultWeights(t, s, ratings), []uint32{70, 30})
			})
			if d := connectTimeout(t, snap.Clusters[outbound("9080", "", details)]); d <= 0 {
				t.Errorf("details cluster after the NACK has connect_timeout %v (0: missing), want the last good one", d)
			}
		})
	}
}

// connectTimeout is the connect_timeout of c, 0 when c is nil.
func connectTimeout(t *testing.T, c *resource.Cluster) time.Duration {
	t.Helper()
	if c == nil {
		return 0
	}
	m, err := c.Message()
	if err != nil {
		t.Fatalf("cluster %s: %v", c.Name, err)
	}
	return m.GetConnectTimeout().AsDuration()
}
