package istiod_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/amesh-dev/amesh/test/istiod/harness"
	"github.com/amesh-dev/amesh/test/netns"
)

// This file is a pod on a laptop: a network namespace with Istio's capture rules (from
// `pilot-agent istio-iptables`, the init container's command), istio-agent (an unmodified
// pilot-agent in DISABLE_ENVOY mode, the pod's token and mesh root mounted where it reads them)
// holding the TLS connection to istiod, nginx with libxds.so and the original-destination
// modules running as the proxy UID, and an application on the pod IP; a second namespace is a
// client elsewhere in the cluster.

// proxyUID is the UID the capture rules exempt (istio-proxy's in Istio's images).
const proxyUID = 1337

// podRoot is the pod's view of the file system where pilot-agent looks: it resolves its paths
// (./var/run/secrets/tokens/istio-token, ./var/run/secrets/istio/root-cert.pem,
// ./etc/istio/proxy/XDS) against its working directory, "/" in a container.
type podRoot string

func (r podRoot) path(p string) string { return filepath.Join(string(r), p) }

// newPodRoot makes a directory tree the proxy UID owns and can reach (t.TempDir's parents are
// private to root).
func newPodRoot(t *testing.T, files map[string]string) podRoot {
	t.Helper()
	dir, err := os.MkdirTemp("", "amesh-pod-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !t.Failed() {
			os.RemoveAll(dir)
		} else {
			t.Logf("pod files kept in %s", dir)
		}
	})
	for name, data := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, proxyUID, proxyUID)
	}); err != nil {
		t.Fatal(err)
	}
	return podRoot(dir)
}

// copyAs copies src to dst, owned by the proxy UID (which cannot read root's caches).
func copyAs(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dst, proxyUID, proxyUID); err != nil {
		t.Fatal(err)
	}
}

// podProc is a process of the pod, run as the proxy UID inside its namespace.
type podProc struct {
	name   string
	cmd    *exec.Cmd
	log    string
	exited chan struct{}
}

func startPodProc(t *testing.T, ns *netns.NS, name, dir, logPath string, env []string, bin string, args ...string) *podProc {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: proxyUID, Gid: proxyUID},
		Setpgid:    true, Pdeathsig: syscall.SIGKILL,
	}
	if err := ns.Start(cmd); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &podProc{name: name, cmd: cmd, log: logPath, exited: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.exited) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s (%s), last 4 KiB ---\n%s", name, logPath, b[max(0, len(b)-4096):])
		}
	})
	return p
}

// stop sends sig and waits up to 10 s for the exit, then kills the process group.
func (p *podProc) stop(sig syscall.Signal) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
	}
}

// forward accepts connections on l and splices each to target, dialled from the test's own
// namespace: the pod reaches istiod (on the host's loopback) as it would reach its Service.
func forward(t *testing.T, l net.Listener, target string) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, u)
			mu.Unlock()
			wg.Add(2)
			go func() { defer wg.Done(); _, _ = io.Copy(u, c); _ = u.(*net.TCPConn).CloseWrite() }()
			go func() { defer wg.Done(); _, _ = io.Copy(c, u); _ = c.(*net.TCPConn).CloseWrite() }()
		}
	}()
	t.Cleanup(func() {
		l.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
}

// httpIn is an HTTP client whose connections start inside ns.
func httpIn(ns *netns.NS) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:       ns.Dial,
		DisableKeepAlives: true,
	}}
}

func get(c *http.Client, url string) (int, string, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestPodWithIstioAgent runs the sidecar the way the injection template lays it out and checks
// what a user depends on: amesh gets its configuration from istiod only through istio-agent's
// XDS socket (it has no TLS settings and no token of its own), the agent obtains the workload
// certificate with the pod's token and writes it where OUTPUT_CERTS says, the readiness probe on
// 15021 reflects amesh's first configuration and the agent, and captured connections carry
// their original destination into nginx: outbound to a Service's ClusterIP, inbound to the pod's
// port, delivered to the application without being captured again.
func TestPodWithIstioAgent(t *testing.T) {
	requireEnv(t)
	if err := netns.Available(); err != nil {
		skipOrFail(t, err)
	}
	agentBin, err := harness.FindPilotAgent()
	if err != nil {
		skipOrFail(t, err)
	}
	module := requireIstiodNginx(t)

	// The pod and the cluster around it.
	pod, client := netns.New(t, "pod"), netns.New(t, "peer")
	netns.Link(t, pod, []string{podIP + "/24"}, client, []string{"192.0.2.1/24"})
	pod.MustRun(t, "ip", "route", "add", "default", "via", "192.0.2.1")
	reviewsIP := clusterIP(t, "reviews")
	client.MustRun(t, "ip", "addr", "add", reviewsIP+"/32", "dev", "lo")
	pod.MustRun(t, agentBin, "istio-iptables", "-p", "15001", "-z", "15006", "-u", fmt.Sprint(proxyUID),
		"-m", "REDIRECT", "-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020",
		"--log_output_level=default:warn")

	// istiod as the pod sees it: istiod.istio-system.svc:15012, here 127.0.0.1:15012 in the pod
	// (loopback is never captured) spliced to the control plane on the host.
	l, err := pod.Listen("tcp", "127.0.0.1:15012")
	if err != nil {
		t.Fatal(err)
	}
	forward(t, l, env.istiod.SecureGRPCAddr)

	// What the pod mounts: the projected token (audience istio-ca) and the mesh root.
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	token, err := env.kube.Client.TokenRequest(ctx, namespace, "productpage", "istio-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	root := rootCert(t)
	fs := newPodRoot(t, map[string]string{
		"var/run/secrets/tokens/istio-token":  token,
		"var/run/secrets/istio/root-cert.pem": root,
		"etc/istio/pod/labels":                "app=\"productpage\"\nversion=\"v1\"\n",
		"etc/istio/proxy/.keep":               "",
		"var/lib/istio/data/.keep":            "",
		"nginx/lua/.keep":                     "",
	})

	// nginx first: until istio-agent runs, amesh has nowhere to connect and the pod is not ready.
	prefix := fs.path("nginx")
	lib := filepath.Join(prefix, "libxds.so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", lib, "github.com/amesh-dev/amesh/cmd/libxds")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building libxds.so: %v\n%s", err, out)
	}
	if err := os.Chown(lib, proxyUID, proxyUID); err != nil {
		t.Fatal(err)
	}
	copyAs(t, filepath.Join("..", "nginx", "harness.lua"), filepath.Join(prefix, "lua", "harness.lua"))
	copyAs(t, filepath.Join("..", "..", "lua", "amesh", "ready.lua"), filepath.Join(prefix, "lua", "amesh", "ready.lua"))
	for _, m := range []string{"ngx_http_amesh_original_dst_module.so", "ngx_stream_amesh_original_dst_module.so"} {
		copyAs(t, filepath.Join(module, m), filepath.Join(prefix, m))
	}
	const adminPort = 15099
	tmpl := template.Must(template.ParseFiles(filepath.Join("testdata", "pod-nginx.conf.tmpl")))
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, map[string]any{"Prefix": prefix, "Env": libxdsEnv, "Lib": lib, "AdminPort": adminPort}); err != nil {
		t.Fatal(err)
	}
	copyAs(t, writeTemp(t, conf.String()), filepath.Join(prefix, "nginx.conf"))
	// amesh's environment in the sidecar: the defaults (unix:///etc/istio/proxy/XDS, no TLS, no
	// token), with the paths moved under the pod's root.
	ameshEnv := []string{
		"AMESH_XDS_ADDRESS=unix://" + fs.path("etc/istio/proxy/XDS"), "AMESH_XDS_PROTOCOL=delta",
		"AMESH_LABELS_FILE=" + fs.path("etc/istio/pod/labels"),
		"POD_NAME=" + podName, "POD_NAMESPACE=" + namespace, "INSTANCE_IP=" + podIP,
		"SERVICE_ACCOUNT=productpage", "ISTIO_VERSION=1.31.0", "CLUSTER_ID=Kubernetes",
		"AMESH_LOG_FILE=" + filepath.Join(prefix, "amesh.log"), "AMESH_LOG_LEVEL=info", "AMESH_CONFIG_FILE=",
		"AMESH_WORKLOAD_CERT_DIR=" + fs.path("var/lib/istio/data"),
	}
	nginx := startPodProc(t, pod, "nginx", prefix, filepath.Join(prefix, "stderr.log"),
		append([]string{"PATH=" + os.Getenv("PATH")}, ameshEnv...), "/usr/sbin/nginx", "-p", prefix, "-c", filepath.Join(prefix, "nginx.conf"))
	t.Cleanup(func() {
		if t.Failed() {
			for _, f := range []string{"error.log", "amesh.log"} {
				b, _ := os.ReadFile(filepath.Join(prefix, f))
				t.Logf("--- nginx %s, last 4 KiB ---\n%s", f, b[max(0, len(b)-4096):])
			}
		}
	})
	kubelet := httpIn(client) // probes the pod IP from outside, as the kubelet does
	ready := "http://" + podIP + ":15021/healthz/ready"
	var code int
	var body string
	waitUntil(t, "nginx answers the readiness probe", func() bool {
		select {
		case <-nginx.exited:
			t.Fatal("nginx exited")
		default:
		}
		code, body, err = get(kubelet, ready)
		return err == nil
	})
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "amesh has not written a configuration") {
		t.Errorf("readiness before any configuration: %d %q, want 503 naming amesh", code, body)
	}

	// istio-agent, as the injected istio-proxy container runs it with DISABLE_ENVOY.
	agentEnv := []string{
		"PATH=" + os.Getenv("PATH"),
		"POD_NAME=" + podName, "POD_NAMESPACE=" + namespace, "INSTANCE_IP=" + podIP,
		"SERVICE_ACCOUNT=productpage", "ISTIO_META_CLUSTER_ID=Kubernetes", "TRUST_DOMAIN=cluster.local",
		"PROXY_CONFIG={\"discoveryAddress\":\"127.0.0.1:15012\",\"statusPort\":15020}",
		"ISTIOD_SAN=" + env.istiod.ServerName,
		"DISABLE_ENVOY=true", "ISTIO_META_DNS_CAPTURE=false",
		"OUTPUT_CERTS=" + fs.path("var/lib/istio/data"),
		// Certificates that rotate within the test: the agent asks istiod's CA for this
		// lifetime (istiod caps it at MAX_WORKLOAD_CERT_TTL and sets no minimum) and
		// renews once this share of it is left, i.e. every 6 s.
		"SECRET_TTL=30s", "SECRET_GRACE_PERIOD_RATIO=0.8",
	}
	copyAs(t, agentBin, fs.path("usr/local/bin/pilot-agent"))
	agent := startPodProc(t, pod, "pilot-agent", string(fs), fs.path("pilot-agent.log"), agentEnv,
		fs.path("usr/local/bin/pilot-agent"), "proxy", "sidecar", "--domain", namespace+".svc.cluster.local", "--log_output_level=default:info")

	// The agent obtains the workload certificate with the pod's token and writes it out.
	certs := fs.path("var/lib/istio/data")
	waitUntil(t, "istio-agent writes the workload certificate to OUTPUT_CERTS", func() bool {
		select {
		case <-agent.exited:
			t.Fatal("pilot-agent exited")
		default:
		}
		for _, f := range []string{"key.pem", "cert-chain.pem", "root-cert.pem"} {
			if st, err := os.Stat(filepath.Join(certs, f)); err != nil || st.Size() == 0 {
				return false
			}
		}
		return true
	})
	checkWorkloadCert(t, certs, root)

	// amesh connects through the agent's socket and writes istiod's configuration.
	var d nginxDump
	waitUntil(t, "amesh's configuration from istiod, through istio-agent, in nginx's dict", func() bool {
		var err error
		d, err = podDump(pod, adminPort)
		return err == nil && d.Version != nil && len(routesFor(t, bytesMap(d.Keys), reviews)) >= 6
	})
	if b, _ := os.ReadFile(agent.log); !bytes.Contains(b, []byte("connected to delta upstream XDS server")) {
		t.Errorf("istio-agent's log does not show it proxying amesh's Delta stream to istiod")
	}
	waitUntil(t, "the readiness probe passes", func() bool {
		code, body, err = get(kubelet, ready)
		return err == nil && code == http.StatusOK
	})

	// The workload identity: amesh puts the certificate the agent wrote, exactly, into
	// the dict as APISIX's ssl objects; the agent's rotation reaches the dict without
	// any restart and changes those objects only.
	spiffe := "spiffe://cluster.local/ns/" + namespace + "/sa/productpage"
	d, files := waitDictCarriesAgentCerts(t, pod, adminPort, certs, "the agent's certificate in the dict's ssl objects",
		func(agentCerts) bool { return true })
	serial := leafSerial(t, files.chain, root, spiffe)
	agentKeys := [][]byte{files.key}
	rotated, next := waitDictCarriesAgentCerts(t, pod, adminPort, certs, "the agent's rotated certificate in the dict",
		func(c agentCerts) bool { return !bytes.Equal(c.chain, files.chain) })
	if s := leafSerial(t, next.chain, root, spiffe); s == serial || bytes.Equal(next.key, files.key) {
		t.Errorf("the rotation kept serial %s or the key", serial)
	}
	agentKeys = append(agentKeys, next.key)
	if diff := cmp.Diff(nonSSL(d.Keys), nonSSL(rotated.Keys)); diff != "" {
		t.Errorf("the rotation changed more than the ssl objects (-before +after):\n%s", diff)
	}
	if rotated.LoaderPID != d.LoaderPID || rotated.Loads != d.Loads || *rotated.Version == *d.Version {
		t.Errorf("rotation: loader %d (%d loads), version %s; before: loader %d (%d loads), version %s; want a new version from the same library instance",
			rotated.LoaderPID, rotated.Loads, *rotated.Version, d.LoaderPID, d.Loads, *d.Version)
	}
	d = rotated

	// Outbound: the application calls reviews' ClusterIP; the connection is captured to 15001
	// and nginx knows where it was going.
	app := httpIn(pod)
	code, body, err = get(app, "http://"+net.JoinHostPort(reviewsIP, "9080")+"/")
	if want := net.JoinHostPort(reviewsIP, "9080") + " 9080 15001\n"; err != nil || code != 200 || body != want {
		t.Errorf("outbound to reviews: %d %q %v, want 200 %q", code, body, err, want)
	}

	// Inbound: a client calls the pod's port 9080; the connection is captured to 15006, nginx
	// sees the original destination and delivers to the application on the pod IP.
	appL, err := pod.Listen("tcp", net.JoinHostPort(podIP, "9080"))
	if err != nil {
		t.Fatal(err)
	}
	slowStarted := make(chan struct{}, 1)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			slowStarted <- struct{}{}
			time.Sleep(time.Second)
		}
		_ = json.NewEncoder(w).Encode(map[string]string{
			"from": r.RemoteAddr, "dst": r.Header.Get("X-Amesh-Original-Dst"),
			"port": r.Header.Get("X-Amesh-Original-Port"), "server_port": r.Header.Get("X-Amesh-Server-Port"),
		})
	})}
	go func() { _ = srv.Serve(appL) }()
	t.Cleanup(func() { srv.Close() })
	code, body, err = get(kubelet, "http://"+net.JoinHostPort(podIP, "9080")+"/")
	var seen map[string]string
	if err != nil || code != 200 || json.Unmarshal([]byte(body), &seen) != nil {
		t.Fatalf("inbound to the pod's 9080: %d %q %v", code, body, err)
	}
	host, _, _ := net.SplitHostPort(seen["from"])
	if host != "127.0.0.6" || seen["dst"] != net.JoinHostPort(podIP, "9080") || seen["port"] != "9080" || seen["server_port"] != "15006" {
		t.Errorf("the application saw %v; want a connection from 127.0.0.6 carrying original destination %s:9080 captured on 15006", seen, podIP)
	}

	// Readiness follows the agent: without it the pod stops being ready, while amesh keeps the
	// configuration it has, and the last certificate the agent wrote stays in force.
	before := d
	agent.stop(syscall.SIGTERM)
	waitUntil(t, "readiness fails once istio-agent is gone", func() bool {
		code, body, err = get(kubelet, ready)
		return err == nil && code == http.StatusServiceUnavailable && strings.Contains(body, "istio-agent")
	})
	d, last := waitDictCarriesAgentCerts(t, pod, adminPort, certs, "the agent's last certificate in the dict once it is gone",
		func(agentCerts) bool { return true })
	agentKeys = append(agentKeys, last.key)
	if diff := cmp.Diff(nonSSL(before.Keys), nonSSL(d.Keys)); diff != "" || len(routesFor(t, bytesMap(d.Keys), reviews)) < 6 {
		t.Errorf("amesh's configuration changed when the agent stopped (-before +after):\n%s", diff)
	}

	// Drain: the image's stop signal, SIGQUIT, lets a request in flight finish; nginx then
	// exits and takes no new connections.
	type result struct {
		code int
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		code, _, err := get(kubelet, "http://"+net.JoinHostPort(podIP, "9080")+"/slow")
		slow <- result{code, err}
	}()
	select {
	case <-slowStarted:
	case <-time.After(mustHappen):
		t.Fatal("the slow request did not reach the application")
	}
	if err := nginx.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	if r := <-slow; r.err != nil || r.code != 200 {
		t.Errorf("request in flight during the graceful stop: %d %v, want 200", r.code, r.err)
	}
	select {
	case <-nginx.exited:
	case <-time.After(mustHappen):
		t.Fatal("nginx did not exit after SIGQUIT")
	}
	if _, _, err := get(kubelet, ready); err == nil {
		t.Errorf("nginx still answers after its graceful stop")
	}
	noKeyMaterial(t, agentKeys, filepath.Join(prefix, "amesh.log"), filepath.Join(prefix, "error.log"), filepath.Join(prefix, "stderr.log"))
}

// checkWorkloadCert: the certificate istio-agent wrote is the workload's SPIFFE identity,
// signed by the mesh root, with its key.
func checkWorkloadCert(t *testing.T, dir, root string) {
	t.Helper()
	read := func(f string) []byte {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if got := string(read("root-cert.pem")); strings.TrimSpace(got) != strings.TrimSpace(root) {
		t.Errorf("root-cert.pem is not the mesh root of ConfigMap istio-ca-root-cert")
	}
	block, _ := pem.Decode(read("cert-chain.pem"))
	if block == nil {
		t.Fatal("cert-chain.pem holds no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	want := "spiffe://cluster.local/ns/" + namespace + "/sa/productpage"
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("workload certificate URIs %v, want [%s]", leaf.URIs, want)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM([]byte(root))
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("workload certificate does not chain to the mesh root: %v", err)
	}
	if b, _ := pem.Decode(read("key.pem")); b == nil || !strings.Contains(b.Type, "PRIVATE KEY") {
		t.Errorf("key.pem holds no private key")
	}
}

func podDump(pod *netns.NS, port int) (nginxDump, error) {
	var d nginxDump
	code, body, err := get(httpIn(pod), fmt.Sprintf("http://127.0.0.1:%d/dump", port))
	if err != nil {
		return d, err
	}
	if code != 200 {
		return d, fmt.Errorf("dump: HTTP %d", code)
	}
	return d, json.Unmarshal([]byte(body), &d)
}

func writeTemp(t *testing.T, data string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	writeFile(t, p, data)
	return p
}
