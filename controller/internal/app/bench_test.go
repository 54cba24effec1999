package app

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/internal/pluginsync"
)

// BenchmarkConfigPropagation measures how long a spec change takes from the API write
// to the sidecar's pluginsync client publishing the new set (informer → notifier →
// stream → client), with a real API server.
func BenchmarkConfigPropagation(b *testing.B) {
	if restConfig == nil {
		b.Skip(envErr)
	}
	ctx := context.Background()
	ns := namespace(b)
	p := pod(b, ns, "bench", "bench", nil).Name
	lis := listen(b)
	ctx2, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx2, restConfig, Options{Listener: lis, InsecureSkipAuth: true, HealthAddr: "0", Log: logr.Discard()})
	}()
	defer func() { cancel(); <-done }()

	c := &v1alpha1.AmeshPluginConfig{}
	c.Namespace, c.Name = ns, "bench"
	c.Spec.Plugins = []v1alpha1.Plugin{limitCount(b, 1)}
	if err := k8s.Create(ctx, c); err != nil {
		b.Fatal(err)
	}
	sidecar := pluginsync.New(pluginsync.Options{Addr: lis.Addr().String(), Namespace: ns, Pod: p,
		Logger: slog.New(slog.DiscardHandler)})
	go sidecar.Run(ctx2) //nolint:errcheck // returns nil when ctx2 is cancelled
	waitGeneration := func(gen int64) {
		deadline := time.After(30 * time.Second)
		for {
			set, changed := sidecar.Current()
			if len(set.Configs) == 1 && set.Configs[0].Generation >= gen {
				return
			}
			select {
			case <-changed:
			case <-deadline:
				b.Fatalf("generation %d not received", gen)
			}
		}
	}
	waitGeneration(1)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		update(b, c, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{limitCount(b, i+2)} })
		waitGeneration(c.Generation)
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/change")
}
