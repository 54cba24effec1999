package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// istiodRun measures cfg's pipelines against a real istiod (Kubernetes mode, harness of
// test/istiod) serving n Services, each with an EndpointSlice of 10 endpoints and a
// VirtualService of 3 routes. There are no pods or DestinationRules (10 pods per service
// would make the API server the bottleneck), so each service has one cluster.
//
// Update latency here starts at the API write of the EndpointSlice, so it includes the API
// server, istiod's informers and its push debounce; compare amesh with the floor (the
// difference is amesh's own share).
func istiodRun(n int, cfg runConfig) ([]row, error) {
	bins, err := harness.FindBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "amesh-bench-istiod-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	kube, err := harness.StartKube(ctx, bins, dir)
	if err != nil {
		return nil, err
	}
	defer kube.Stop()
	if err := kube.InstallIstioCRDs(ctx); err != nil {
		return nil, err
	}
	t0 := time.Now()
	slices := make([]harness.Object, n)
	for i := range n {
		svc, slice, vs := benchService(i)
		slices[i] = slice
		if err := kube.Client.ApplyAll(ctx, []harness.Object{svc, slice, vs}); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(os.Stderr, "bench: %d services created through the API server in %v\n", n, time.Since(t0).Round(time.Millisecond))
	d, err := harness.StartIstiod(ctx, bins, kube, harness.IstiodOptions{})
	if err != nil {
		return nil, err
	}
	defer d.Stop()

	var ctlSet []byte
	if cfg.plugins > 0 {
		svcs := make([]meshService, n)
		for i := range svcs {
			svcs[i] = benchServiceName(i)
		}
		if ctlSet, err = pluginSet(svcs, cfg.plugins); err != nil {
			return nil, err
		}
	}
	var rows []row
	changes := 0
	for _, mode := range cfg.pipelines() {
		r, err := measure(n, "istiod", mode, d.GRPCAddr, cfg, ctlSet,
			func(i int) (func() error, error) {
				changes++
				s := slices[(i*7919)%n]
				eps := s["endpoints"].([]any)
				eps[changes%len(eps)] = endpoint(fmt.Sprintf("172.16.%d.%d", (changes>>8)&0xff, changes&0xff))
				return func() error { return kube.Client.Apply(ctx, s) }, nil
			},
			func() error {
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.HTTPAddr+"/debug/adsz?push=true", nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					return err
				}
				resp.Body.Close()
				return nil
			})
		if err != nil {
			return nil, fmt.Errorf("istiod, %d services, %s: %w", n, mode, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

// benchServiceName names benchService(i).
func benchServiceName(i int) meshService {
	name := fmt.Sprintf("svc-%05d", i)
	return meshService{namespace: "default", name: name, host: name + ".default.svc.cluster.local"}
}

func benchService(i int) (svc, slice, vs harness.Object) {
	s := benchServiceName(i)
	name, host := s.name, s.host
	meta := func(n string, labels map[string]any) map[string]any {
		m := map[string]any{"name": n, "namespace": s.namespace}
		if labels != nil {
			m["labels"] = labels
		}
		return m
	}
	svc = harness.Object{"apiVersion": "v1", "kind": "Service", "metadata": meta(name, nil),
		"spec": map[string]any{"selector": map[string]any{"app": name},
			"ports": []any{map[string]any{"name": "http", "port": 9080, "protocol": "TCP"}}}}
	var eps []any
	for k := range 10 {
		eps = append(eps, endpoint(fmt.Sprintf("10.%d.%d.%d", i>>8&0xff, i&0xff, k+1)))
	}
	slice = harness.Object{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
		"metadata":    meta(name+"-1", map[string]any{"kubernetes.io/service-name": name}),
		"addressType": "IPv4",
		"ports":       []any{map[string]any{"name": "http", "port": 9080, "protocol": "TCP"}},
		"endpoints":   eps}
	dest := []any{map[string]any{"destination": map[string]any{"host": host}}}
	vs = harness.Object{"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": meta(name, nil),
		"spec": map[string]any{"hosts": []any{host}, "http": []any{
			map[string]any{"name": "api", "match": []any{map[string]any{"uri": map[string]any{"prefix": "/api"}}}, "route": dest, "timeout": "2s"},
			map[string]any{"name": "canary", "match": []any{map[string]any{"headers": map[string]any{"x-canary": map[string]any{"exact": "1"}}}}, "route": dest},
			map[string]any{"name": "default", "route": dest},
		}}}
	return svc, slice, vs
}

func endpoint(ip string) map[string]any {
	return map[string]any{"addresses": []any{ip}, "conditions": map[string]any{"ready": true}}
}
