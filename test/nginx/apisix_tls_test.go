package nginx

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rawv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/meshpeer"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/translate"
	xdsdump "github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// istioMTLSCluster is an EDS cluster as istiod makes it for auto mTLS: Istio mTLS for the
// endpoints of pods with a sidecar (tlsMode-istio), plaintext for the others, the SNI
// derived from its name, the workload certificate and mesh roots from istio-agent's SDS,
// the server's identity one of sans.
func istioMTLSCluster(name string, sans ...string) *clusterv3.Cluster {
	c := xdstest.EDSCluster(name)
	var m []*matcherv3.StringMatcher
	for _, s := range sans {
		m = append(m, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: s}})
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: resource.ClusterSNI(name),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsParams:                      &tlsv3.TlsParameters{TlsMinimumProtocolVersion: tlsv3.TlsParameters_TLSv1_2, TlsMaximumProtocolVersion: tlsv3.TlsParameters_TLSv1_3},
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
				//lint:ignore SA1019 deprecated, but istiod still sets it
				DefaultValidationContext:         &tlsv3.CertificateValidationContext{MatchSubjectAltNames: m},
				ValidationContextSdsSecretConfig: &tlsv3.SdsSecretConfig{Name: "ROOTCA"},
			}},
			AlpnProtocols: []string{"istio-peer-exchange", "istio"},
		},
	}
	tlsAny, _ := anypb.New(ctx)
	rawAny, _ := anypb.New(&rawv3.RawBuffer{})
	match, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
	c.TransportSocketMatches = []*clusterv3.Cluster_TransportSocketMatch{
		{Name: "tlsMode-istio", Match: match, TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.tls",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsAny}}},
		{Name: "tlsMode-disabled", Match: &structpb.Struct{}, TransportSocket: &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
			ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: rawAny}}},
	}
	return c
}

// inlineCACluster is istioMTLSCluster with its roots inline (trusted_ca in the cluster's
// own validation context, as a DestinationRule's CA or a credentialName's CA secret gives
// them), which amesh-upstream-tls gets as ca.pem.
func inlineCACluster(t *testing.T, name string, rootPEM []byte, sans ...string) *clusterv3.Cluster {
	t.Helper()
	c := istioMTLSCluster(name, sans...)
	ts := c.GetTransportSocketMatches()[0].GetTransportSocket()
	ctx := &tlsv3.UpstreamTlsContext{}
	if err := ts.GetTypedConfig().UnmarshalTo(ctx); err != nil {
		t.Fatal(err)
	}
	//lint:ignore SA1019 deprecated, but istiod still sets it
	m := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext().GetMatchSubjectAltNames()
	ctx.CommonTlsContext.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: rootPEM}},
		//lint:ignore SA1019 deprecated, but istiod still sets it
		MatchSubjectAltNames: m,
	}}
	a, err := anypb.New(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ts.ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
	return c
}

// meshEndpoints is a load assignment whose endpoints with sidecar[i] carry istiod's
// {tlsMode: istio}.
func meshEndpoints(name string, addrs []string, sidecar []bool) *endpointv3.ClusterLoadAssignment {
	cla := xdstest.Endpoints(name, addrs...)
	for i, e := range cla.GetEndpoints()[0].GetLbEndpoints() {
		if sidecar[i] {
			match, _ := structpb.NewStruct(map[string]any{"tlsMode": "istio"})
			e.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{resource.SocketMatchKey: match}}
		}
	}
	return cla
}

// istioOutbound is istiod's outbound HTTP listener on port: Istio's ALPN filter in front
// of the router.
func istioOutbound(t *testing.T, port int, rds string) *listenerv3.Listener {
	t.Helper()
	mt, err := protoregistry.GlobalTypes.FindMessageByName(resource.IstioALPNType)
	if err != nil {
		t.Fatal(err)
	}
	alpn := mt.New().Interface()
	if err := protojson.Unmarshal([]byte(`{"alpnOverride": [{"alpnOverride": ["istio-http/1.0", "istio", "http/1.0"]},
		{"upstreamProtocol": "HTTP11", "alpnOverride": ["istio-http/1.1", "istio", "http/1.1"]},
		{"upstreamProtocol": "HTTP2", "alpnOverride": ["istio-h2", "istio", "h2"]}]}`), alpn); err != nil {
		t.Fatal(err)
	}
	return xdstest.ListenerWithFilters(fmt.Sprintf("0.0.0.0_%d", port), uint32(port), xdstest.HCMWithFilters(rds, xdstest.HTTPFilter("istio.alpn", alpn)))
}

// apisixStandaloneConf is APISIX reading amesh's translation from conf/apisix.yaml, with
// ngx_http_amesh_upstream_tls_module and the settings amesh-upstream-tls needs.
const apisixStandaloneConf = `deployment:
  role: data_plane
  role_data_plane:
    config_provider: yaml
apisix:
  extra_lua_path: "{{.LuaPath}}"
  node_listen:
    - ip: 127.0.0.1
      port: {{.Port}}
  enable_admin: false
  ssl:
    enable: false
plugins:
{{- range .Plugins}}
  - {{.}}
{{- end}}
plugin_attr:
  prometheus:
    export_addr:
      ip: 127.0.0.1
      port: {{.PromPort}}
nginx_config:
  user: root
  worker_processes: 1
  worker_rlimit_nofile: 16384
  error_log_level: info
  main_configuration_snippet: |
    load_module {{.Module}};
  http_server_configuration_snippet: |
    proxy_ssl_server_name on;
    proxy_ssl_name $amesh_upstream_ssl_name;
  http:
    proxy_ssl_server_name: false
`

// startStandaloneAPISIX runs APISIX (with APISIX's own OpenResty and the modules built for
// it) serving objects from its standalone file.
func startStandaloneAPISIX(t *testing.T, port int, objects map[string][]byte) (dir string) {
	t.Helper()
	home := requireAPISIX(t)
	_, mods, err := harness.APISIXOpenResty()
	if errors.Is(err, harness.ErrNoAPISIX) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	dir, err = os.MkdirTemp("", "amesh-apisix-tls-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := harness.LayOutAPISIX(dir, home); err != nil {
		t.Fatal(err)
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	var conf bytes.Buffer
	err = template.Must(template.New("config").Parse(apisixStandaloneConf)).Execute(&conf, map[string]any{
		"LuaPath": filepath.Join(here, "..", "..", "lua", "?.lua"), "Port": port, "PromPort": freePort(t),
		"Plugins": apisixPlugins(t, home, here), "Module": filepath.Join(mods, "ngx_http_amesh_upstream_tls_module.so"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "config.yaml"), conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	yaml, err := file.Render(objects, file.YAML)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "apisix.yaml"), yaml, 0o644); err != nil {
		t.Fatal(err)
	}
	_, exited := launchAPISIX(t, home, dir, nil)
	waitFor(t, "APISIX to serve its routes", func() bool {
		select {
		case <-exited:
			t.Fatal("APISIX exited")
		default:
		}
		resp, err := apisixClient.Get(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusNotFound
	})
	return dir
}

// TestAPISIXUpstreamTLS: real APISIX with amesh's plugin and module, serving amesh's
// translation of auto-mTLS clusters (standalone file, with the workload certificate as an
// /ssls object of type client), reaches Istio peers as Envoy does: mTLS with the
// workload certificate, the cluster's SNI and Istio's HTTP ALPN, the peer's SPIFFE
// identity verified (another identity: 502), plaintext to the endpoints without a
// sidecar of the same cluster; keep-alive connections are reused within a cluster but
// never by a cluster whose TLS settings differ; the private key stays out of the log.
func TestAPISIXUpstreamTLS(t *testing.T) {
	requireAPISIX(t)
	m := newMeshTLS(t)
	secureID := m.ca.SPIFFE("default", "secure")
	secure := m.peer(t, nil, secureID)
	plain := m.peer(t, nil, m.ca.SPIFFE("default", "plain"))
	port := freePort(t)
	const (
		svc      = "outbound|%d||secure.default.svc.cluster.local"
		mixedSvc = "outbound|%d||mixed.default.svc.cluster.local"
		wrongSvc = "outbound|%d||wrong.default.svc.cluster.local"
		pemSvc   = "outbound|%d||pem.default.svc.cluster.local"
		otherSvc = "outbound|%d||otherca.default.svc.cluster.local"
	)
	secureC, mixedC, wrongC := fmt.Sprintf(svc, port), fmt.Sprintf(mixedSvc, port), fmt.Sprintf(wrongSvc, port)
	pemC, otherC := fmt.Sprintf(pemSvc, port), fmt.Sprintf(otherSvc, port)
	otherCA, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	res := &xdsdump.Resources{
		Listeners: []*listenerv3.Listener{istioOutbound(t, port, fmt.Sprint(port))},
		RouteConfigs: []*routev3.RouteConfiguration{routeConfig(fmt.Sprint(port),
			vhost("secure.default.svc.cluster.local",
				// The same peer through a cluster that expects another identity.
				toCluster("wrong", prefixMatch("/wrong/"), wrongC, nil),
				toCluster("all", prefixMatch("/"), secureC, nil)),
			vhost("mixed.default.svc.cluster.local", toCluster("all", prefixMatch("/"), mixedC, nil)),
			// The roots inline: the mesh's, and another CA's that the peer does not chain to.
			vhost("pem.default.svc.cluster.local", toCluster("all", prefixMatch("/"), pemC, nil)),
			vhost("otherca.default.svc.cluster.local", toCluster("all", prefixMatch("/"), otherC, nil)))},
		Clusters: []*clusterv3.Cluster{
			istioMTLSCluster(secureC, secureID),
			istioMTLSCluster(mixedC, m.ca.SPIFFE("default", "secure")),
			istioMTLSCluster(wrongC, m.ca.SPIFFE("default", "other")),
			inlineCACluster(t, pemC, m.ca.PEM, secureID),
			inlineCACluster(t, otherC, otherCA.PEM, secureID),
		},
		Endpoints: []*endpointv3.ClusterLoadAssignment{
			meshEndpoints(secureC, []string{secure.Addr}, []bool{true}),
			meshEndpoints(mixedC, []string{secure.Addr, plain.Addr}, []bool{true, false}),
			meshEndpoints(wrongC, []string{secure.Addr}, []bool{true}),
			meshEndpoints(pemC, []string{secure.Addr}, []bool{true}),
			meshEndpoints(otherC, []string{secure.Addr}, []bool{true}),
		},
	}
	tr := translate.New(translate.Options{OriginalDstVar: "server_port", WorkloadCertID: "workload", MeshRootFile: m.rootFile})
	objects := tr.Translate(res.Snapshot()).Changes.Put
	wl, err := os.ReadFile(m.certFile)
	if err != nil {
		t.Fatal(err)
	}
	ssl, _ := json.Marshal(map[string]any{"id": "workload", "type": "client", "cert": string(wl), "key": string(m.workloadKeys)})
	objects["/ssls/workload"] = ssl
	for k, v := range objects {
		if err := schema.Validate(k, v); err != nil {
			t.Fatalf("%s: %v\n%s", k, err, v)
		}
	}
	dir := startStandaloneAPISIX(t, port, objects)

	get := func(host, path string) (int, meshpeer.Seen) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", port, path), nil)
		req.Host = host
		resp, err := apisixClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var s meshpeer.Seen
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(b, &s); err != nil {
				t.Fatalf("%s%s: %v: %s", host, path, err, b)
			}
		}
		return resp.StatusCode, s
	}

	code, first := get("secure.default.svc.cluster.local", "/a")
	want := meshpeer.Seen{Chain: meshpeer.ChainMTLSHTTP, ALPNOffered: []string{"istio-http/1.1", "istio", "http/1.1"}, ALPN: "http/1.1",
		SNI: resource.ClusterSNI(secureC), ClientID: m.clientID, Host: "secure.default.svc.cluster.local", Path: "/a", Conn: first.Conn}
	if code != http.StatusOK || fmt.Sprint(first) != fmt.Sprint(want) {
		t.Fatalf("secure: %d, the peer saw\n %+v\nwant\n %+v", code, first, want)
	}
	// Keep-alive: the next request of the cluster takes the same connection.
	if code, s := get("secure.default.svc.cluster.local", "/b"); code != http.StatusOK || s.Conn != first.Conn {
		t.Errorf("second request: %d on connection %d, want the first's (%d)", code, s.Conn, first.Conn)
	}
	// The same peer and Host through a cluster expecting another identity: its own
	// connection, whose verification fails; never the pooled one.
	if code, _ := get("secure.default.svc.cluster.local", "/wrong/x"); code != http.StatusBadGateway {
		t.Errorf("a cluster expecting another identity: %d, want 502", code)
	}

	// Inline roots (amesh-upstream-tls's ca.pem): the mesh's verify the peer, another CA's
	// do not.
	if code, s := get("pem.default.svc.cluster.local", "/p"); code != http.StatusOK || s.Chain != meshpeer.ChainMTLSHTTP || s.ClientID != m.clientID {
		t.Errorf("a cluster with the mesh's roots inline: %d %+v; want the peer's answer over mTLS", code, s)
	}
	if code, _ := get("otherca.default.svc.cluster.local", "/p"); code != http.StatusBadGateway {
		t.Errorf("a cluster with another CA's roots inline: %d, want 502", code)
	}

	chains := map[string]int{}
	for range 20 {
		code, s := get("mixed.default.svc.cluster.local", "/m")
		if code != http.StatusOK {
			t.Fatalf("mixed: %d", code)
		}
		chains[s.Chain+" "+s.ClientID]++
	}
	if chains[meshpeer.ChainMTLSHTTP+" "+m.clientID] == 0 || chains[meshpeer.ChainPlaintext+" "] == 0 || len(chains) != 2 {
		t.Errorf("mixed cluster: %v, want mTLS to the pod with a sidecar and plaintext to the other", chains)
	}
	if plain.Handshakes.Load() != 0 {
		t.Error("the endpoint without a sidecar was sent TLS")
	}

	log, _ := os.ReadFile(filepath.Join(dir, "logs", "error.log"))
	for _, line := range bytes.Split(m.workloadKeys, []byte("\n")) {
		if len(line) > 20 && bytes.Contains(log, line) {
			t.Fatalf("the error log holds a line of the private key: %s", line)
		}
	}
	if !strings.Contains(string(log), "none of the expected subject alt names") {
		t.Error("the error log does not say why /wrong/ failed")
	}
}
