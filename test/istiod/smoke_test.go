package istiod_test

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestIstiodSeesScenario checks the control plane itself: istiod has read the Services, Pods and
// EndpointSlices from the API server and the Istio config from the CRDs.
func TestIstiodSeesScenario(t *testing.T) {
	requireEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for what, want := range map[string][]string{
		"registryz": {"reviews.default.svc.cluster.local", "mysqldb.default.svc.cluster.local", "productpage.default.svc.cluster.local", "details.default.svc.cluster.local"},
		"configz":   {"VirtualService", "DestinationRule", "jason-v2-fault"},
		"endpointz": {"192.0.2.21", "192.0.2.41", "127.0.0.51"},
	} {
		b, err := env.istiod.Debug(ctx, what)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range want {
			if !strings.Contains(string(b), w) {
				t.Errorf("istiod /debug/%s does not mention %q", what, w)
			}
		}
	}
}
