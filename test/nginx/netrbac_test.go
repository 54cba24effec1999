package nginx

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/meshpeer"
	"github.com/amesh-dev/amesh/internal/translate"
)

// netRBACConf is stock nginx terminating mTLS as the sidecar's stream server does,
// answering each request with netrbaccheck.lua's decision for its connection.
const netRBACConf = stockLuaNginx + `
    server {
        listen 127.0.0.1:{{.Plain}};
        listen 127.0.0.1:{{.TLS}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_client_certificate {{.CA}};
        ssl_verify_client on;
        location / {
            content_by_lua_block { require("netrbaccheck").run("{{.Conf}}") }
        }
    }
}
`

// istiodNetworkRBAC translates istiod's virtualInbound under STRICT with
// AuthorizationPolicies on the TCP port (testdata/istiod/peerauth/strict-tcp-authz)
// and returns the amesh-network-rbac config of the route of terminated mTLS to that
// port, validated against the plugin's schema.
func istiodNetworkRBAC(t *testing.T) json.RawMessage {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "istiod", "peerauth", "strict-tcp-authz", "virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{}
	if err := protojson.Unmarshal(b, l); err != nil {
		t.Fatal(err)
	}
	inbound := &clusterv3.Cluster{Name: "inbound|19306||", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		ConnectTimeout: durationpb.New(10 * time.Second), LbPolicy: clusterv3.Cluster_CLUSTER_PROVIDED,
		UpstreamBindConfig: &corev3.BindConfig{SourceAddress: &corev3.SocketAddress{Address: "127.0.0.6",
			PortSpecifier: &corev3.SocketAddress_PortValue{}}}}
	objs := expectedWith(t, resourcesOf(l, inbound), translate.Options{})
	const key = "/stream_routes/15006-19306-mtls"
	var r struct {
		Plugins map[string]json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal([]byte(objs[key]), &r); err != nil {
		t.Fatalf("no stream route %s: %v", key, err)
	}
	if err := schema.Validate(key, []byte(objs[key])); err != nil {
		t.Fatalf("%s does not validate: %v", key, err)
	}
	c := r.Plugins["amesh-network-rbac"]
	if c == nil {
		t.Fatalf("%s has no amesh-network-rbac: %s", key, objs[key])
	}
	return c
}

// Istio's AuthorizationPolicy on a TCP port, as amesh.rbac decides it per connection:
// the ALLOWed principals get through unless a DENY names them or their source address;
// another principal, another port and a plaintext connection (no principal) are denied.
func TestNetworkRBACDecisions(t *testing.T) {
	requireNginx(t)
	mods := nginxModules(t)
	conf := istiodNetworkRBAC(t)
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.Workload(ca.SPIFFE("default", "productpage"))
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cert.pem": server.CertPEM, "key.pem": server.KeyPEM, "ca.pem": ca.PEM, "conf.json": conf} {
		if err := os.WriteFile(filepath.Join(prefix, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain, tlsPort := freePort(t), freePort(t)
	startStockNginx(t, prefix, netRBACConf, map[string]any{
		"Module": filepath.Join(mods, "ngx_http_amesh_original_dst_module.so"),
		"Plain":  plain, "TLS": tlsPort, "Conf": filepath.Join(prefix, "conf.json"),
		"Cert": filepath.Join(prefix, "cert.pem"), "Key": filepath.Join(prefix, "key.pem"), "CA": filepath.Join(prefix, "ca.pem"),
	}, plain)
	n := &peerNginx{t: t, plain: plain, tls: tlsPort}
	leaf := func(sa string) *meshpeer.Leaf {
		l, err := ca.Workload(ca.SPIFFE("default", sa))
		if err != nil {
			t.Fatal(err)
		}
		return l
	}
	reviews, ratings, sleep := leaf("reviews"), leaf("ratings"), leaf("sleep")
	const (
		allowed = "allowed"
		// istiod names both filters envoy.filters.network.rbac; a DENY names its policy.
		denyP  = "denied envoy.filters.network.rbac ns[default]-policy[tcp-deny]-rule[0]"
		denyIP = "denied envoy.filters.network.rbac ns[default]-policy[tcp-deny]-rule[1]"
		notOK  = "denied envoy.filters.network.rbac"
	)
	for _, c := range []struct {
		name   string
		peer   *meshpeer.Leaf
		remote string
		port   int
		want   string
	}{
		{"an allowed principal", reviews, "192.0.2.1", 19306, allowed},
		{"an allowed principal over IPv6", reviews, "2001:db8::1", 19306, allowed},
		{"an allowed principal that a DENY names", ratings, "192.0.2.1", 19306, denyP},
		{"an allowed principal from a denied address", reviews, "192.0.2.2", 19306, denyIP},
		{"an allowed principal from the denied address's neighbour", reviews, "192.0.2.3", 19306, allowed},
		{"a principal no rule allows", sleep, "192.0.2.1", 19306, notOK},
		{"an allowed principal to another port", reviews, "192.0.2.1", 19307, notOK},
		{"plaintext", nil, "192.0.2.1", 19306, notOK},
	} {
		cl, base := n.client(c.peer)
		code, body := get(t, cl, base, "/", "", [2]string{"X-Remote", c.remote}, [2]string{"X-Port", fmt.Sprint(c.port)})
		if code != 200 || strings.TrimSpace(body) != c.want {
			t.Errorf("%s: %d %q; want %q", c.name, code, body, c.want)
		}
	}
}
