package status

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

func TestFromClient(t *testing.T) {
	st := client.Status{
		State: client.Connected, Protocol: client.SotW, Server: "istiod:15010", Reconnects: 3,
		Missing: []resource.MissingResource{{TypeURL: resource.EndpointType, Name: "x"}},
		Types: map[string]client.TypeStatus{
			resource.ListenerType: {Version: "v1", Nonce: "n1", Responses: 2, ACKs: 2, Resources: 2},
			resource.ClusterType:  {Version: "v2", Nonce: "n2", Responses: 3, ACKs: 2, NACKs: 1, LastNACK: "bad", Resources: 1},
		},
	}
	x := FromClient(st)
	if x.State != "connected" || x.Protocol != "sotw" || x.Server != "istiod:15010" || x.Reconnects != 3 || x.Missing != 1 {
		t.Errorf("FromClient = %+v", x)
	}
	// Types are sorted by URL: Cluster before Listener.
	if len(x.Types) != 2 || x.Types[0].TypeURL != resource.ClusterType || x.Types[0].Resources != 1 ||
		x.Types[0].NACKs != 1 || x.Types[0].LastNACK != "bad" || x.Types[1].Resources != 2 || x.Types[1].Nonce != "n1" {
		t.Errorf("FromClient types = %+v", x.Types)
	}
}

func TestFromAgent(t *testing.T) {
	h := metrics.HistogramData{Bounds: []float64{1}, Counts: []uint64{4}, Count: 5, Sum: 9}
	p := FromAgent(agent.Stats{Batches: 1, KeysPut: 2, KeysDeleted: 3, WriteErrors: 4, LastError: "e", Version: 6,
		ObjectsByKind: map[string]int{"routes": 7}, PushToWrite: h})
	if p.Batches != 1 || p.KeysPut != 2 || p.KeysDeleted != 3 || p.WriteErrors != 4 || p.LastError != "e" ||
		p.Version != 6 || p.ObjectsByKind["routes"] != 7 || p.PushToWrite.Count != 5 {
		t.Errorf("FromAgent = %+v", p)
	}
	if src := ForPipeline("v", nil, nil); src.XDS != nil || src.Ready != nil || src.Version != "v" {
		t.Error("ForPipeline with nil parts has non-nil sources")
	}
}

// The standard pipeline's sources read a running client: /metrics counts the
// resources it holds, and /debug/xds serves its complete status with every resource's
// version.
func TestForPipelineServesClient(t *testing.T) {
	srv, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	srv.Set(resource.ClusterType, xdstest.EDSCluster("outbound|9080||a"), xdstest.StaticCluster("BlackHoleCluster"))
	srv.Set(resource.EndpointType, xdstest.Endpoints("outbound|9080||a", "10.0.0.1:9080"))
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""))
	srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", "outbound|9080||a"))
	c, err := client.New(client.Config{Server: srv.Addr(), Node: &corev3.Node{Id: "sidecar~10.0.0.1~a.default~default.svc.cluster.local"}, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	select {
	case <-c.Ready():
	case <-time.After(20 * time.Second):
		t.Fatalf("no snapshot: %+v", c.Status())
	}

	base := startServer(t, ForPipeline("v", c, nil))
	if _, _, body := get(t, base+"/metrics"); !strings.Contains(body, "\namesh_xds_resources{type=\"cds\"} 2\n") {
		t.Errorf("/metrics does not count 2 clusters:\n%s", body)
	}
	_, _, body := get(t, base+"/debug/xds")
	var st client.Status
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("/debug/xds: %v\n%s", err, body)
	}
	cds := st.Types[resource.ClusterType]
	if cds.Resources != 2 || len(cds.ResourceVersion) != 2 || cds.ResourceVersion["BlackHoleCluster"] == "" || cds.ACKs == 0 {
		t.Errorf("/debug/xds clusters = %+v, want both with their versions", cds)
	}
}
