package harness

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// KubeCluster is etcd plus a kube-apiserver on loopback, with no controllers, scheduler or
// kubelet: tests create Services, EndpointSlices and Pods (and set pod status) themselves.
type KubeCluster struct {
	Dir        string // state and logs
	Kubeconfig string // for istiod
	Client     *Kube
	Etcd       *Process
	APIServer  *Process
}

const adminToken = "amesh-e2e-admin-token"

// StartKube starts etcd and kube-apiserver with their state in dir and waits until the API
// server is ready (typically 4-8 s). Stop it with Stop.
func StartKube(ctx context.Context, bins Binaries, dir string) (*KubeCluster, error) {
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	c := &KubeCluster{Dir: dir}
	if err := os.MkdirAll(filepath.Join(dir, "certs"), 0o755); err != nil {
		return nil, err
	}
	saKey, saPub := filepath.Join(dir, "sa.key"), filepath.Join(dir, "sa.pub")
	if err := writeRSAKeyPair(saKey, saPub); err != nil {
		return nil, err
	}
	tokens := filepath.Join(dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(adminToken+",admin,admin,system:masters\n"), 0o600); err != nil {
		return nil, err
	}

	clientURL := "http://127.0.0.1:" + strconv.Itoa(etcdClient)
	peerURL := "http://127.0.0.1:" + strconv.Itoa(etcdPeer)
	c.Etcd, err = start(dir, "etcd", bins.Etcd, []string{
		"--name", "amesh-e2e", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", clientURL, "--advertise-client-urls", clientURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "amesh-e2e=" + peerURL,
		// Tests churn little data; keep etcd's disk and memory use small.
		"--quota-backend-bytes", strconv.Itoa(2 << 30), "--snapshot-count", "5000",
	}, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Etcd.waitUntil(30*time.Second, "client port", func() error {
		return tcpReady("127.0.0.1:" + strconv.Itoa(etcdClient))
	}); err != nil {
		c.Stop()
		return nil, err
	}

	c.APIServer, err = start(dir, "kube-apiserver", bins.KubeAPIServer, []string{
		"--etcd-servers=" + clientURL,
		"--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(apiPort),
		// The default reconciler refuses a loopback advertise address.
		"--endpoint-reconciler-type=none",
		"--cert-dir=" + filepath.Join(dir, "certs"),
		"--token-auth-file=" + tokens, "--authorization-mode=AlwaysAllow",
		// Service-account tokens (TokenRequest) for the TLS path: istiod verifies them with
		// TokenReview against this server.
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + saPub, "--service-account-signing-key-file=" + saKey,
		"--api-audiences=https://kubernetes.default.svc.cluster.local,istio-ca",
		"--service-cluster-ip-range=10.96.0.0/16",
		// No controller-manager creates the service accounts' tokens or default SAs.
		"--disable-admission-plugins=ServiceAccount",
	}, nil)
	if err != nil {
		c.Stop()
		return nil, err
	}
	server := "https://127.0.0.1:" + strconv.Itoa(apiPort)
	if err := c.APIServer.waitUntil(90*time.Second, "/readyz", func() error {
		if c.Client == nil {
			// The serving certificate appears in cert-dir only once the server is starting.
			k, err := newKube(server, adminToken, filepath.Join(dir, "certs", "apiserver.crt"))
			if err != nil {
				return err
			}
			c.Client = k
		}
		return c.Client.Do(ctx, http.MethodGet, "/readyz", "", nil, nil)
	}); err != nil {
		c.Stop()
		return nil, err
	}

	c.Kubeconfig = filepath.Join(dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: e2e, cluster: {server: %q, certificate-authority: %q, tls-server-name: %s}}]
users: [{name: admin, user: {token: %q}}]
contexts: [{name: e2e, context: {cluster: e2e, user: admin}}]
current-context: e2e
`, server, c.Client.CAFile, apiServerName, adminToken)
	if err := os.WriteFile(c.Kubeconfig, []byte(kc), 0o600); err != nil {
		c.Stop()
		return nil, err
	}
	if err := c.Client.Apply(ctx, Object{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": "istio-system"}}); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

// Stop stops the API server, then etcd.
func (c *KubeCluster) Stop() {
	if c.APIServer != nil {
		c.APIServer.Stop(10 * time.Second)
	}
	if c.Etcd != nil {
		c.Etcd.Stop(5 * time.Second)
	}
}

// InstallIstioCRDs applies Istio's CRDs from the istio module and waits until every one is
// Established, so istiod's informers can start.
func (c *KubeCluster) InstallIstioCRDs(ctx context.Context) error {
	f, err := CRDFile()
	if err != nil {
		return err
	}
	data, err := os.ReadFile(f)
	if err != nil {
		return err
	}
	crds, err := ParseYAML(data)
	if err != nil {
		return fmt.Errorf("%s: %w", f, err)
	}
	if err := c.Client.ApplyAll(ctx, crds); err != nil {
		return err
	}
	deadline := time.Now().Add(60 * time.Second)
	for _, crd := range crds {
		p, _ := Path(crd)
		for {
			o, err := c.Client.Get(ctx, p)
			if err == nil && conditionTrue(o, "Established") {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("CRD %s not established: %v", p, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

func conditionTrue(o Object, typ string) bool {
	st, _ := o["status"].(map[string]any)
	conds, _ := st["conditions"].([]any)
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == typ && m["status"] == "True" {
			return true
		}
	}
	return false
}

func writeRSAKeyPair(keyPath, pubPath string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(pubPath, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}
