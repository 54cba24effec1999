package dump

import (
	"encoding/json"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/google/go-cmp/cmp"
)

// anyJSON renders m as the JSON of an Any, the way Envoy embeds resources in a dump.
func anyJSON(t *testing.T, m proto.Message) json.RawMessage {
	t.Helper()
	b, err := protojson.MarshalOptions{Resolver: lenientResolver{}}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil {
		t.Fatal(err)
	}
	obj["@type"], _ = json.Marshal("type.googleapis.com/" + string(m.ProtoReflect().Descriptor().FullName()))
	out, _ := json.Marshal(obj)
	return out
}

// A config dump built from the recorded istiod resources loads back to the same
// resources; warming listeners, warming clusters, unrelated sections and static load
// assignments of non-EDS clusters are left out.
func TestLoadConfigDumpRoundTrip(t *testing.T) {
	want, err := LoadDir(istiodTestdata(t, "sotw"))
	if err != nil {
		t.Fatal(err)
	}
	type m = map[string]any
	var dynListeners, dynRoutes, dynClusters, dynEndpoints []any
	for _, l := range want.Listeners {
		dynListeners = append(dynListeners, m{"name": l.GetName(), "active_state": m{"version_info": "1", "listener": anyJSON(t, l)}})
	}
	dynListeners = append(dynListeners, m{"name": "warming", "warming_state": m{"listener": json.RawMessage(`{"@type":"type.googleapis.com/envoy.config.listener.v3.Listener","name":"warming"}`)}})
	for _, rc := range want.RouteConfigs {
		dynRoutes = append(dynRoutes, m{"version_info": "1", "route_config": anyJSON(t, rc)})
	}
	for _, c := range want.Clusters {
		dynClusters = append(dynClusters, m{"version_info": "1", "cluster": anyJSON(t, c)})
	}
	for _, e := range want.Endpoints {
		dynEndpoints = append(dynEndpoints, m{"version_info": "1", "endpoint_config": anyJSON(t, e)})
	}
	doc := m{"configs": []any{
		m{"@type": "type.googleapis.com/envoy.admin.v3.BootstrapConfigDump", "bootstrap": m{"whatever": m{"@type": "type.googleapis.com/x.Unknown"}}},
		m{"@type": listenersDumpType, "dynamic_listeners": dynListeners},
		m{"@type": clustersDumpType, "dynamic_active_clusters": dynClusters,
			"dynamic_warming_clusters": []any{m{"cluster": json.RawMessage(`{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"warming"}`)}}},
		m{"@type": routesDumpType, "dynamic_route_configs": dynRoutes},
		m{"@type": endpointsDumpType, "dynamic_endpoint_configs": dynEndpoints,
			"static_endpoint_configs": []any{m{"endpoint_config": json.RawMessage(`{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","cluster_name":"sds-grpc"}`)}}},
		m{"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump"},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	got, err := LoadConfigDump(strings.NewReader(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Errorf("config dump round trip (-want +got):\n%s", diff)
	}
}

func TestLoadConfigDumpStatic(t *testing.T) {
	const doc = `{"configs":[
	 {"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump",
	  "static_clusters":[{"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"s","type":"EDS"}}]},
	 {"@type":"type.googleapis.com/envoy.admin.v3.ListenersConfigDump",
	  "static_listeners":[{"listener":{"@type":"type.googleapis.com/envoy.config.listener.v3.Listener","name":"l"}}]},
	 {"@type":"type.googleapis.com/envoy.admin.v3.RoutesConfigDump",
	  "static_route_configs":[{"route_config":{"@type":"type.googleapis.com/envoy.config.route.v3.RouteConfiguration","name":"r"}}]},
	 {"@type":"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump",
	  "static_endpoint_configs":[{"endpoint_config":{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment","cluster_name":"s"}}]}
	]}`
	got, err := LoadConfigDump(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Clusters) != 1 || len(got.Listeners) != 1 || len(got.RouteConfigs) != 1 || len(got.Endpoints) != 1 {
		t.Fatalf("got %+v", got)
	}
	if got.Endpoints[0].GetClusterName() != "s" {
		t.Errorf("endpoints for %q, want s", got.Endpoints[0].GetClusterName())
	}
}

func TestLoadConfigDumpErrors(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"not json", `{`, "config dump"},
		{"no configs", `{"foo":1}`, `no "configs" list`},
		{"bad section", `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.ClustersConfigDump","dynamic_active_clusters":[{"cluster":{"@type":"type.googleapis.com/envoy.config.cluster.v3.Cluster","name":"c","nope":true}}]}]}`, "configs[0]"},
		{"empty cla name", `{"configs":[{"@type":"type.googleapis.com/envoy.admin.v3.EndpointsConfigDump","dynamic_endpoint_configs":[{"endpoint_config":{"@type":"type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"}}]}]}`, "cluster_name is empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadConfigDump(strings.NewReader(tc.doc))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}
