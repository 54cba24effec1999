package istiod_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updateMTLS = flag.Bool("update-mtls", false, "rewrite testdata/istiod/mtls (the xDS istiod sends for testdata/mtls.yaml)")

// mtlsGolden is where istiod's xDS for testdata/mtls.yaml is kept (as dump.LoadDir reads
// it), for the translation's tests.
var mtlsGolden = filepath.Join("..", "..", "testdata", "istiod", "mtls")

const (
	typeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	typeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	typeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeCLA      = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// mtlsClusters are the clusters of testdata/mtls.yaml.
var mtlsClusters = []string{
	"outbound|8080||secure.default.svc.cluster.local",
	"outbound|8080||mixed.default.svc.cluster.local",
	"outbound|8080||pinned.default.svc.cluster.local",
	"outbound|8080|v1|pinned.default.svc.cluster.local",
	"outbound|8443||simple.example.com",
	"outbound|8443||mutual.example.com",
	"outbound|8443||system.example.com",
	"outbound|8443||insecure.example.com",
	"outbound|8443||credential.example.com",
}

// rawXDS is what istiod sends a sidecar over one SotW stream, as istiod serialized it
// (nothing of amesh's decoding), by type URL and resource name.
type rawXDS map[string]map[string]proto.Message

// fetchRaw asks istiod at addr for everything it sends node over a fresh stream: every
// listener and cluster, the route configurations the listeners name and the load
// assignments of the EDS clusters.
func fetchRaw(ctx context.Context, addr string, node *corev3.Node) (rawXDS, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	out := rawXDS{typeListener: {}, typeRoute: {}, typeCluster: {}, typeCLA: {}}
	for _, typ := range []string{typeCluster, typeListener} {
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typ}); err != nil {
			return nil, err
		}
	}
	pending := map[string]bool{typeCluster: true, typeListener: true, typeCLA: true, typeRoute: true}
	for len(pending) > 0 {
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		typ := resp.GetTypeUrl()
		var names []string
		for _, a := range resp.GetResources() {
			m, err := a.UnmarshalNew()
			if err != nil {
				return nil, err
			}
			var name string
			switch r := m.(type) {
			case *clusterv3.Cluster:
				name = r.GetName()
				if r.GetType() == clusterv3.Cluster_EDS {
					names = append(names, resource.EDSName(r))
				}
			case *listenerv3.Listener:
				name = r.GetName()
				for _, fc := range append(r.GetFilterChains(), r.GetDefaultFilterChain()) {
					for _, f := range fc.GetFilters() {
						if h, err := resource.HCMOf(f); err == nil && h.GetRds() != nil {
							names = append(names, h.GetRds().GetRouteConfigName())
						}
					}
				}
			case *routev3.RouteConfiguration:
				name = r.GetName()
			case *endpointv3.ClusterLoadAssignment:
				name = r.GetClusterName()
			}
			out[typ][name] = m
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typ, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			return nil, err
		}
		delete(pending, typ)
		dep := map[string]string{typeCluster: typeCLA, typeListener: typeRoute}[typ]
		if dep != "" {
			slices.Sort(names)
			names = slices.Compact(names)
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: dep, ResourceNames: names}); err != nil {
				return nil, err
			}
		}
	}
	return out, nil
}

// waitRaw fetches until ok holds for what istiod sends.
func waitRaw(t *testing.T, node *corev3.Node, what string, ok func(rawXDS) bool) rawXDS {
	t.Helper()
	var got rawXDS
	waitUntil(t, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		x, err := fetchRaw(ctx, env.istiod.GRPCAddr, node)
		if err != nil {
			t.Logf("fetch: %v", err)
			return false
		}
		got = x
		return ok(x)
	})
	return got
}

// hasSocketMatch reports whether an endpoint of cla carries Envoy's transport socket match
// metadata {tlsMode: istio}, what istiod gives the endpoints of pods with a sidecar.
func hasSocketMatch(cla *endpointv3.ClusterLoadAssignment) bool {
	for _, l := range cla.GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			if e.GetMetadata().GetFilterMetadata()["envoy.transport_socket_match"].GetFields()["tlsMode"].GetStringValue() == "istio" {
				return true
			}
		}
	}
	return false
}

// fileName is the golden file name of a resource (as testdata/istiod names them).
func fileName(name string) string {
	return strings.NewReplacer("|", "_", "/", "_", ":", "_").Replace(name) + ".json"
}

func marshalIndent(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := protojson.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	pretty.WriteByte('\n')
	return pretty.Bytes()
}

// TestOutboundTLSClusters: the xDS istiod sends the productpage sidecar for
// testdata/mtls.yaml on top of the scenario (auto mTLS to pods with and without
// sidecars, ISTIO_MUTUAL, SIMPLE and MUTUAL DestinationRules) is what the translation's
// tests read from testdata/istiod/mtls (-update-mtls rewrites it).
func TestOutboundTLSClusters(t *testing.T) {
	requireEnv(t)
	objs, err := readObjects("mtls.yaml")
	if err != nil {
		t.Fatal(err)
	}
	apply(t, objs...)
	b, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		deleteAll(t, objs)
		// The tests after this one start from istiod's configuration without it.
		waitRaw(t, b.Node, "productpage's xDS without mtls.yaml", func(x rawXDS) bool {
			for _, c := range mtlsClusters {
				if x[typeCluster][c] != nil {
					return false
				}
			}
			return true
		})
	})
	raw := waitRaw(t, b.Node, "istiod's clusters for mtls.yaml", func(x rawXDS) bool {
		for _, c := range mtlsClusters {
			if x[typeCluster][c] == nil {
				return false
			}
		}
		cla, _ := x[typeCLA]["outbound|8080||mixed.default.svc.cluster.local"].(*endpointv3.ClusterLoadAssignment)
		return len(cla.GetEndpoints()) > 0 && len(cla.GetEndpoints()[0].GetLbEndpoints()) == 2 && hasSocketMatch(cla) &&
			x[typeRoute]["8080"] != nil && x[typeRoute]["8443"] != nil
	})
	if *updateMTLS {
		writeDump(t, mtlsGolden, raw)
		return
	}
	// What the Kubernetes objects give every run alike (the rest names service
	// addresses, which the API server picks anew).
	same := map[string][]string{typeCluster: mtlsClusters, typeCLA: mtlsClusters, typeListener: {"0.0.0.0_8080", "0.0.0.0_8443"}}
	for typ, names := range same {
		for _, name := range names {
			path := filepath.Join(mtlsGolden, dumpDirs[typ], fileName(name))
			m := raw[typ][name]
			if m == nil {
				t.Errorf("istiod sends no %s %s", dumpDirs[typ], name)
				continue
			}
			got := marshalIndent(t, m)
			golden, err := os.ReadFile(path)
			if err != nil || !sameJSON(golden, got) {
				t.Errorf("istiod's %s is not %s (%v; run with -update-mtls):\n%s", name, path, err, got)
			}
		}
	}
}

// dumpDirs are the directories of a dump (dump.LoadDir) by resource type.
var dumpDirs = map[string]string{typeListener: "lds", typeRoute: "rds", typeCluster: "cds", typeCLA: "eds"}

// writeDump replaces the dump in dir with what istiod sent (raw), one protojson file per
// resource.
func writeDump(t *testing.T, dir string, raw rawXDS) {
	t.Helper()
	for typ, sub := range dumpDirs {
		if err := os.RemoveAll(filepath.Join(dir, sub)); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
		for name, m := range raw[typ] {
			if err := os.WriteFile(filepath.Join(dir, sub, fileName(name)), marshalIndent(t, m), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// deleteAll deletes objs in reverse order and reports what fails.
func deleteAll(t *testing.T, objs []harness.Object) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := len(objs) - 1; i >= 0; i-- {
		if err := env.kube.Client.Delete(ctx, objs[i]); err != nil {
			t.Error(fmt.Errorf("cleanup: %w", err))
		}
	}
}
