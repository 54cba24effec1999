package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// meshConfig is istiod's MeshConfig for the tests: the defaults of an Istio install
// (auto mTLS, ALLOW_ANY) with the trust domain cluster.local.
const meshConfig = `trustDomain: cluster.local
rootNamespace: istio-system
enableAutoMtls: true
accessLogFile: /dev/stdout
outboundTrafficPolicy:
  mode: ALLOW_ANY
defaultConfig:
  discoveryAddress: istiod.istio-system.svc:15012
`

// IstiodOptions configure an istiod.
type IstiodOptions struct {
	// Env is added to istiod's environment, e.g. PILOT_DEBOUNCE_AFTER=10ms.
	Env []string
}

// Istiod is an unmodified pilot-discovery in Kubernetes mode against a KubeCluster, with its
// self-signed CA (istio-ca-secret) and the TLS xDS port enabled.
type Istiod struct {
	// GRPCAddr is plaintext xDS (15010 in a real install).
	GRPCAddr string
	// SecureGRPCAddr is TLS xDS (15012): serving certificate for istiod.istio-system.svc from
	// istiod's own CA; clients authenticate with a service-account token.
	SecureGRPCAddr string
	// HTTPAddr serves /debug/* (8080 in a real install).
	HTTPAddr string
	// ServerName is the name on istiod's serving certificate.
	ServerName string

	Proc *Process
	bin  string
	args []string
	env  []string
	dir  string
}

// StartIstiod starts istiod against c and waits until its xDS port accepts connections, which
// istiod opens only after its informers have synced and the first push context is built.
func StartIstiod(ctx context.Context, bins Binaries, c *KubeCluster, opts IstiodOptions) (*Istiod, error) {
	dir := filepath.Join(c.Dir, "istiod")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	mesh := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(mesh, []byte(meshConfig), 0o644); err != nil {
		return nil, err
	}
	networks := filepath.Join(dir, "meshNetworks.yaml")
	if err := os.WriteFile(networks, []byte("networks: {}\n"), 0o644); err != nil {
		return nil, err
	}
	ports, err := freePorts(6)
	if err != nil {
		return nil, err
	}
	addr := func(i int) string { return "127.0.0.1:" + strconv.Itoa(ports[i]) }
	d := &Istiod{
		GRPCAddr: addr(0), SecureGRPCAddr: addr(1), HTTPAddr: addr(2),
		ServerName: "istiod.istio-system.svc",
		bin:        bins.Istiod, dir: dir,
	}
	d.args = []string{"discovery",
		"--kubeconfig=" + c.Kubeconfig,
		"--meshConfig=" + mesh, "--networksConfig=" + networks,
		"--grpcAddr=" + d.GRPCAddr, "--secureGRPCAddr=" + d.SecureGRPCAddr,
		"--httpAddr=" + d.HTTPAddr, "--httpsAddr=" + addr(3),
		"--monitoringAddr=" + addr(4),
		"--ctrlz_address=127.0.0.1", "--ctrlz_port=" + strconv.Itoa(ports[5]),
		"--clusterID=Kubernetes", "--domain=cluster.local",
		"--shutdownDuration=1s",
	}
	d.env = append([]string{
		"POD_NAMESPACE=istio-system", "POD_NAME=istiod-e2e", "REVISION=default",
		// The defaults, spelled out: istiod's own CA signs its serving certificate.
		"ENABLE_CA_SERVER=true", "PILOT_CERT_PROVIDER=istiod",
		// Istio's default; istiod checks tokens with TokenReview.
		"JWT_POLICY=third-party-jwt",
	}, opts.Env...)
	if err := d.start(ctx); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Istiod) start(ctx context.Context) error {
	p, err := start(d.dir, "istiod", d.bin, d.args, d.env)
	if err != nil {
		return err
	}
	d.Proc = p
	if err := p.waitUntil(120*time.Second, "xDS port", func() error {
		if err := ctx.Err(); err != nil {
			return err
		}
		return tcpReady(d.GRPCAddr)
	}); err != nil {
		p.Kill()
		return err
	}
	return nil
}

// SetOutboundTrafficPolicy rewrites istiod's mesh configuration with outboundTrafficPolicy
// mode (ALLOW_ANY, REGISTRY_ONLY); istiod watches the file and pushes what changes.
func (d *Istiod) SetOutboundTrafficPolicy(mode string) error {
	return d.writeMesh(strings.Replace(meshConfig, "mode: ALLOW_ANY", "mode: "+mode, 1))
}

// SetMeshExtra rewrites istiod's mesh configuration as the tests' defaults followed by
// extra (top-level MeshConfig fields in YAML, e.g. extensionProviders); "" restores the
// defaults.
func (d *Istiod) SetMeshExtra(extra string) error {
	return d.writeMesh(meshConfig + extra)
}

func (d *Istiod) writeMesh(mesh string) error {
	// Replaced whole, so that istiod never reads half a file.
	tmp := filepath.Join(d.dir, "mesh.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(mesh), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(d.dir, "mesh.yaml"))
}

// Stop stops istiod gracefully.
func (d *Istiod) Stop() { d.Proc.Stop(10 * time.Second) }

// Kill kills istiod with SIGKILL: no goodbye to its clients.
func (d *Istiod) Kill() { d.Proc.Kill() }

// Restart starts istiod again on the same ports (after Stop or Kill).
func (d *Istiod) Restart(ctx context.Context) error {
	select {
	case <-d.Proc.Exited():
	default:
		return fmt.Errorf("istiod is still running")
	}
	return d.start(ctx)
}

// Debug fetches istiod's /debug/<what> (e.g. "syncz", "configz") as raw JSON.
func (d *Istiod) Debug(ctx context.Context, what string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.HTTPAddr+"/debug/"+what, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("istiod /debug/%s: HTTP %d: %s", what, resp.StatusCode, b)
	}
	return b, nil
}
