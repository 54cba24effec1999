package status

import (
	"testing"

	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/metrics"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

func TestFromClient(t *testing.T) {
	st := client.Status{
		State: client.Connected, Protocol: client.SotW, Server: "istiod:15010", Reconnects: 3,
		Missing: []resource.MissingResource{{TypeURL: resource.EndpointType, Name: "x"}},
		Types: map[string]client.TypeStatus{
			resource.ListenerType: {Version: "v1", Nonce: "n1", Responses: 2, ACKs: 2, ResourceVersion: map[string]string{"a": "1", "b": "1"}},
			resource.ClusterType:  {Version: "v2", Nonce: "n2", Responses: 3, ACKs: 2, NACKs: 1, LastNACK: "bad", ResourceVersion: map[string]string{"c": "1"}},
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
	if _, ok := x.Detail.(client.Status); !ok {
		t.Errorf("Detail = %T, want the full client.Status", x.Detail)
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
