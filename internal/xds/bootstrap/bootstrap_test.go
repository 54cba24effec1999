package bootstrap

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// podEnv is the environment of an injected sidecar (istiod's injection template).
func podEnv(t *testing.T, extra ...string) []string {
	labels := filepath.Join(t.TempDir(), "labels")
	if err := os.WriteFile(labels, []byte("app=\"productpage\"\nversion=\"v1\"\nsecurity.istio.io/tlsMode=\"istio\"\nquoted=\"a\\\"b\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return append([]string{
		"POD_NAME=productpage-v1-abc",
		"POD_NAMESPACE=default",
		"INSTANCE_IP=10.1.2.3",
		"SERVICE_ACCOUNT=bookinfo-productpage",
		"ISTIO_META_CLUSTER_ID=Kubernetes",
		"ISTIO_META_MESH_ID=cluster.local",
		"ISTIO_META_WORKLOAD_NAME=productpage-v1",
		"ISTIO_META_OWNER=kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1",
		"ISTIO_META_NODE_NAME=node-1",
		`ISTIO_METAJSON_POD_PORTS=[{"containerPort":9080}]`,
		"ISTIO_VERSION=1.31.0",
		`PROXY_CONFIG={"discoveryAddress":"istiod.istio-system.svc:15012"}`,
		"AMESH_LABELS_FILE=" + labels,
	}, extra...)
}

func TestFromEnvironSidecar(t *testing.T) {
	cfg, err := FromEnviron(podEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Server != DefaultServer || cfg.Protocol != ProtocolDelta || cfg.TLS != nil {
		t.Errorf("transport %+v", cfg)
	}
	n := cfg.Node
	if want := "sidecar~10.1.2.3~productpage-v1-abc.default~default.svc.cluster.local"; n.GetId() != want {
		t.Errorf("id %q, want %q", n.GetId(), want)
	}
	if n.GetCluster() != "productpage.default" {
		t.Errorf("cluster %q", n.GetCluster())
	}
	got := n.GetMetadata().AsMap()
	want := map[string]any{
		"NAME":              "productpage-v1-abc",
		"NAMESPACE":         "default",
		"INSTANCE_IPS":      "10.1.2.3",
		"CLUSTER_ID":        "Kubernetes",
		"MESH_ID":           "cluster.local",
		"INTERCEPTION_MODE": "REDIRECT",
		"ISTIO_VERSION":     "1.31.0",
		"SERVICE_ACCOUNT":   "bookinfo-productpage",
		"NODE_NAME":         "node-1",
		"WORKLOAD_NAME":     "productpage-v1",
		"OWNER":             "kubernetes://apis/apps/v1/namespaces/default/deployments/productpage-v1",
		"POD_PORTS":         []any{map[string]any{"containerPort": float64(9080)}},
		"PROXY_CONFIG":      map[string]any{"discoveryAddress": "istiod.istio-system.svc:15012"},
		"LABELS":            map[string]any{"app": "productpage", "version": "v1", "security.istio.io/tlsMode": "istio", "quoted": `a"b`},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("metadata (-want +got):\n%s", d)
	}
}

func TestFromEnvironTLSAndOverrides(t *testing.T) {
	cfg, err := FromEnviron(podEnv(t,
		"AMESH_XDS_ADDRESS=istiod.istio-system.svc:15012",
		"AMESH_XDS_PROTOCOL=SotW",
		"AMESH_XDS_CA_FILE=/var/run/secrets/istio/root-cert.pem",
		"INSTANCE_IP=10.1.2.3,fd00::3",
		"ISTIO_META_INTERCEPTION_MODE=NONE",
		"CLUSTER_DOMAIN=example.org",
		"AMESH_NODE_TYPE=router",
	))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Protocol != ProtocolSotW || cfg.TLS == nil || cfg.TLS.CAFile != "/var/run/secrets/istio/root-cert.pem" || cfg.TLS.TokenFile != DefaultTokenFile {
		t.Errorf("transport %+v tls %+v", cfg, cfg.TLS)
	}
	if want := "router~10.1.2.3~productpage-v1-abc.default~default.svc.example.org"; cfg.Node.GetId() != want {
		t.Errorf("id %q", cfg.Node.GetId())
	}
	m := cfg.Node.GetMetadata().AsMap()
	if m["INSTANCE_IPS"] != "10.1.2.3,fd00::3" || m["INTERCEPTION_MODE"] != "NONE" {
		t.Errorf("metadata %v", m)
	}
}

func TestFromEnvironErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		env  []string
		want string
	}{
		"no pod":        {[]string{"INSTANCE_IP=10.0.0.1"}, "POD_NAME"},
		"bad ip":        {[]string{"POD_NAME=a", "POD_NAMESPACE=b", "INSTANCE_IP=10.0.0"}, "INSTANCE_IP"},
		"bad protocol":  {append(podEnv(t), "AMESH_XDS_PROTOCOL=rest"), "AMESH_XDS_PROTOCOL"},
		"bad address":   {append(podEnv(t), "AMESH_XDS_ADDRESS=istiod"), "AMESH_XDS_ADDRESS"},
		"relative unix": {append(podEnv(t), "AMESH_XDS_ADDRESS=unix://XDS"), "absolute"},
		"tls on unix":   {append(podEnv(t), "AMESH_XDS_TLS=true"), "unix socket"},
		"bad json":      {append(podEnv(t), "ISTIO_METAJSON_X={"), "ISTIO_METAJSON_X"},
		"bad labels":    {append(podEnv(t), "AMESH_LABELS_FILE="+writeFile(t, "app=unquoted\n")), "labels file"},
		"fast pings":    {append(podEnv(t), "AMESH_XDS_KEEPALIVE_INTERVAL=5s"), "AMESH_XDS_KEEPALIVE_INTERVAL"},
		"bad timeout":   {append(podEnv(t), "AMESH_XDS_KEEPALIVE_TIMEOUT=soon"), "AMESH_XDS_KEEPALIVE_TIMEOUT"},
		"bad max bytes": {append(podEnv(t), "AMESH_XDS_MAX_MESSAGE_BYTES=-1"), "AMESH_XDS_MAX_MESSAGE_BYTES"},
		"huge max":      {append(podEnv(t), "AMESH_XDS_MAX_MESSAGE_BYTES=2GiB"), "AMESH_XDS_MAX_MESSAGE_BYTES"},
	} {
		_, err := FromEnviron(tc.env)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %s", name, err, tc.want)
		}
	}
}

func writeFile(t *testing.T, s string) string {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// FromEnv reads the process environment through getenv.
func TestFromEnvUsesGetenv(t *testing.T) {
	t.Setenv("ISTIO_META_MESH_ID", "from-environ")
	env := map[string]string{"POD_NAME": "p", "POD_NAMESPACE": "ns", "INSTANCE_IP": "10.0.0.1", "ISTIO_META_MESH_ID": "from-getenv", "AMESH_LABELS_FILE": "/nonexistent"}
	cfg, err := FromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Node.GetMetadata().AsMap()["MESH_ID"]; got != "from-getenv" {
		t.Errorf("MESH_ID %v", got)
	}
}

// Every problem is reported at once, so that a user fixes the environment in one go.
func TestFromEnvironReportsAllProblems(t *testing.T) {
	_, err := FromEnviron([]string{"AMESH_XDS_PROTOCOL=rest", "AMESH_XDS_KEEPALIVE_INTERVAL=1s", "INSTANCE_IP=10.0.0", "AMESH_LABELS_FILE=/nonexistent"})
	if err == nil {
		t.Fatal("no error")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{"POD_NAME and POD_NAMESPACE must be set", "AMESH_XDS_PROTOCOL", "AMESH_XDS_KEEPALIVE_INTERVAL", "INSTANCE_IP"} {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, want) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d lines mention %q, want 1:\n%s", n, want, err)
		}
	}
	if len(lines) != 4 {
		t.Errorf("%d lines, want 4 (one per problem):\n%s", len(lines), err)
	}
}

func TestTransportSettings(t *testing.T) {
	cfg, err := FromEnviron(podEnv(t))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.KeepaliveInterval != 30*time.Second || cfg.KeepaliveTimeout != 10*time.Second || cfg.MaxMessageBytes != 128<<20 {
		t.Errorf("defaults: keepalive %v/%v, max message %d", cfg.KeepaliveInterval, cfg.KeepaliveTimeout, cfg.MaxMessageBytes)
	}
	for v, want := range map[string]int{"1048576": 1 << 20, "64MiB": 64 << 20, "512KiB": 512 << 10, "1GiB": 1 << 30} {
		cfg, err := FromEnviron(podEnv(t, "AMESH_XDS_KEEPALIVE_INTERVAL=45s", "AMESH_XDS_KEEPALIVE_TIMEOUT=3s", "AMESH_XDS_MAX_MESSAGE_BYTES="+v))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.KeepaliveInterval != 45*time.Second || cfg.KeepaliveTimeout != 3*time.Second || cfg.MaxMessageBytes != want {
			t.Errorf("%s: keepalive %v/%v, max message %d, want 45s/3s/%d", v, cfg.KeepaliveInterval, cfg.KeepaliveTimeout, cfg.MaxMessageBytes, want)
		}
	}
}

// Without INSTANCE_IP the node id carries the host's first address that others can
// reach it on, as internal/config/README.md says.
func TestInstanceIPDefault(t *testing.T) {
	env := []string{"POD_NAME=p", "POD_NAMESPACE=ns", "AMESH_LABELS_FILE=/nonexistent"}

	cfg, err := fromEnviron(env, func() ([]net.Addr, error) {
		return []net.Addr{cidr(t, "127.0.0.1/8"), cidr(t, "::1/128"), cidr(t, "fe80::1/64"), cidr(t, "10.2.3.4/24"), cidr(t, "192.168.1.9/24")}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := "sidecar~10.2.3.4~p.ns~ns.svc.cluster.local"; cfg.Node.GetId() != want {
		t.Errorf("id %q, want %q", cfg.Node.GetId(), want)
	}
	if got := cfg.Node.GetMetadata().AsMap()["INSTANCE_IPS"]; got != "10.2.3.4" {
		t.Errorf("INSTANCE_IPS %v", got)
	}

	onlyLocal := func() ([]net.Addr, error) { return []net.Addr{cidr(t, "127.0.0.1/8"), cidr(t, "fe80::1/64")}, nil }
	if _, err := fromEnviron(env, onlyLocal); err == nil || !strings.Contains(err.Error(), "INSTANCE_IP is not set") {
		t.Errorf("only loopback and link-local addresses: error %v, want one saying INSTANCE_IP is not set", err)
	}
}

func cidr(t *testing.T, s string) *net.IPNet {
	ip, n, err := net.ParseCIDR(s)
	if err != nil {
		t.Fatal(err)
	}
	n.IP = ip
	return n
}
