package install_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// TestServerSideDryRun: every object the chart renders, for each value set, and the pod Istio's
// injection makes from it, are accepted by a real kube-apiserver as they would be stored
// (schema, defaulting, validation), without storing them. Namespaces are created for real
// first, since objects in a namespace that does not exist are rejected even in a dry run.
func TestServerSideDryRun(t *testing.T) {
	k := requireKube(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, ns := range []string{"istio-system", "amesh-system"} {
		if err := k.Apply(ctx, harness.Object{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name   string
		values map[string]any
		want   int // objects rendered
	}{
		{"defaults", nil, 2},
		{"with controller", map[string]any{"controller": map[string]any{"enabled": true}, "sidecar": map[string]any{"drainSeconds": 20}}, 10},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := renderChart(t, chartDir, "amesh", "istio-system", c.values)
			if len(r.objects) != c.want {
				t.Errorf("%d objects rendered, want %d", len(r.objects), c.want)
			}
			for _, o := range r.objects {
				if err := k.DryRunApply(ctx, o); err != nil {
					t.Errorf("%s %s: %v", o["kind"], str(o, "metadata", "name"), err)
				}
			}
			pod := newInjector(t, r).inject(t, samplePod())
			b, err := json.Marshal(pod)
			if err != nil {
				t.Fatal(err)
			}
			var obj harness.Object
			if err := json.Unmarshal(b, &obj); err != nil {
				t.Fatal(err)
			}
			delete(obj, "status")
			if err := k.DryRunApply(ctx, obj); err != nil {
				t.Errorf("injected pod: %v", err)
			}
		})
	}
}
