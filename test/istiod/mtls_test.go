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
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/amesh-dev/amesh/internal/xds/bootstrap"
	"github.com/amesh-dev/amesh/internal/xds/client"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

var updateMTLS = flag.Bool("update-mtls", false, "rewrite the outbound TLS clusters and endpoints kept in internal/translate/upstream/testdata/istiod")

// mtlsGolden is where istiod's clusters and endpoints of testdata/mtls.yaml are kept, for the
// translation's unit tests.
var mtlsGolden = filepath.Join("..", "..", "internal", "translate", "upstream", "testdata", "istiod")

const (
	typeCluster = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	typeCLA     = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// mtlsClusters are the clusters of testdata/mtls.yaml that the golden files keep.
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

// rawXDS is what istiod sends a sidecar over one SotW stream: every cluster and the load
// assignments of the EDS ones, as istiod serialized them (nothing of amesh's decoding).
type rawXDS struct {
	clusters map[string]*clusterv3.Cluster
	cla      map[string]*endpointv3.ClusterLoadAssignment
}

// fetchRaw asks istiod at addr for the clusters and endpoints of node over a fresh stream.
func fetchRaw(ctx context.Context, addr string, node *corev3.Node) (*rawXDS, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	out := &rawXDS{clusters: map[string]*clusterv3.Cluster{}, cla: map[string]*endpointv3.ClusterLoadAssignment{}}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: typeCluster}); err != nil {
		return nil, err
	}
	var eds []string
	for {
		resp, err := st.Recv()
		if err != nil {
			return nil, err
		}
		switch resp.GetTypeUrl() {
		case typeCluster:
			for _, a := range resp.GetResources() {
				c := &clusterv3.Cluster{}
				if err := a.UnmarshalTo(c); err != nil {
					return nil, err
				}
				out.clusters[c.GetName()] = c
				if c.GetType() == clusterv3.Cluster_EDS {
					eds = append(eds, c.GetName())
				}
			}
			slices.Sort(eds)
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeCluster, VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
				return nil, err
			}
			if err := st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: typeCLA, ResourceNames: eds}); err != nil {
				return nil, err
			}
		case typeCLA:
			for _, a := range resp.GetResources() {
				c := &endpointv3.ClusterLoadAssignment{}
				if err := a.UnmarshalTo(c); err != nil {
					return nil, err
				}
				out.cla[c.GetClusterName()] = c
			}
			return out, nil
		}
	}
}

// waitRaw fetches until ok holds for what istiod sends.
func waitRaw(t *testing.T, node *corev3.Node, what string, ok func(*rawXDS) bool) *rawXDS {
	t.Helper()
	var got *rawXDS
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

// fileName is the golden file name of a cluster (as testdata/istiod names them).
func fileName(cluster string) string { return strings.ReplaceAll(cluster, "|", "_") + ".json" }

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

// TestOutboundTLSClusters: the clusters and endpoints istiod sends for testdata/mtls.yaml
// (auto mTLS to pods with and without sidecars, ISTIO_MUTUAL, SIMPLE and MUTUAL
// DestinationRules) are the ones the translation's unit tests read from
// internal/translate/upstream/testdata/istiod (-update-mtls rewrites them).
func TestOutboundTLSClusters(t *testing.T) {
	requireEnv(t)
	objs, err := readObjects("mtls.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := env.kube.Client.ApplyAll(ctx, objs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteAll(t, objs) })
	b, err := bootstrap.FromEnviron(sidecarEnv(t, env.istiod.GRPCAddr, client.SotW))
	if err != nil {
		t.Fatal(err)
	}
	raw := waitRaw(t, b.Node, "istiod's clusters for mtls.yaml", func(x *rawXDS) bool {
		for _, c := range mtlsClusters {
			if x.clusters[c] == nil {
				return false
			}
		}
		cla := x.cla["outbound|8080||mixed.default.svc.cluster.local"]
		return len(cla.GetEndpoints()) > 0 && len(cla.GetEndpoints()[0].GetLbEndpoints()) == 2 && hasSocketMatch(cla)
	})
	for _, name := range mtlsClusters {
		files := map[string]proto.Message{filepath.Join("cds", fileName(name)): raw.clusters[name]}
		if cla := raw.cla[name]; cla != nil {
			files[filepath.Join("eds", fileName(name))] = cla
		}
		for f, m := range files {
			path := filepath.Join(mtlsGolden, f)
			got := marshalIndent(t, m)
			if *updateMTLS {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			want, err := os.ReadFile(path)
			if err != nil || !sameJSON(want, got) {
				t.Errorf("istiod's %s is not %s (%v; run with -update-mtls):\n%s", name, path, err, got)
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
