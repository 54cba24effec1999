package install_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/istiod/harness"
	"github.com/amesh-dev/amesh/test/netns"
	corev1 "k8s.io/api/core/v1"
)

// proxyUID is the sidecar image's USER and the UID Istio's capture rules exempt.
const proxyUID = 1337

// The pod's and the cluster's side of the test's network (documentation ranges, only ever
// inside the test's namespaces), and a service address the application calls: captured, so
// nothing needs to answer there.
const (
	podIP, peerIP   = "192.0.2.10", "192.0.2.1"
	podIP6, peerIP6 = "2001:db8::10", "2001:db8::1"
	serviceIP       = "198.51.100.7"
)

// requireAPISIX returns the APISIX installation, the modules built for its OpenResty and
// pilot-agent (for Istio's capture rules), or skips: APISIX is in no package registry, so CI
// has none.
func requireAPISIX(t *testing.T) (home, modules, agent string) {
	t.Helper()
	home = os.Getenv("AMESH_APISIX_HOME")
	if home == "" {
		t.Skip("AMESH_APISIX_HOME is not set: the tests that need real APISIX skip")
	}
	for _, p := range []string{"bin/apisix", "openresty/bin/openresty", "conf/mime.types", "conf/cert"} {
		if _, err := os.Stat(filepath.Join(home, p)); err != nil {
			t.Fatalf("AMESH_APISIX_HOME=%s is not an APISIX installation: %v", home, err)
		}
	}
	_, modules, err := harness.APISIXOpenResty()
	if errors.Is(err, harness.ErrNoAPISIX) {
		t.Skipf("%v: the original-destination modules cannot be built for APISIX's OpenResty", err)
	} else if err != nil {
		t.Fatal(err)
	}
	if err := netns.Available(); err != nil {
		t.Skip(err)
	}
	if agent, err = harness.FindPilotAgent(); err != nil {
		t.Skip(err)
	}
	return home, modules, agent
}

// imageRoot lays out, under a new directory, every file the sidecar image's final stage
// copies, at its path in the image: the repository's files, libxds.so built from this checkout
// as the image's Go stage builds it, and the modules built for APISIX's OpenResty. It returns
// the directory, readable by the proxy UID.
func imageRoot(t *testing.T, img finalStage, modules string) string {
	t.Helper()
	root := tempDir(t, "amesh-image-")
	for dst, src := range img.copies {
		to := filepath.Join(root, dst)
		switch {
		case src == "/out/libxds.so":
			cmd := exec.Command("go", "build", "-trimpath", "-buildmode=c-shared", "-o", to, "./cmd/libxds")
			cmd.Dir = repoRoot
			cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("building libxds.so: %v\n%s", err, out)
			}
		case strings.HasPrefix(src, "/out/"):
			copyTree(t, filepath.Join(modules, filepath.Base(src)), to)
		case strings.HasPrefix(src, "/"):
			t.Fatalf("COPY %s %s: from a build stage this test does not know", src, dst)
		default:
			copyTree(t, filepath.Join(repoRoot, src), to)
		}
	}
	return root
}

// copyTree copies a file, or a directory with its files, creating to's parents.
func copyTree(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, p)
		dst := filepath.Join(to, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// tempDir is a directory the proxy UID may read (t.TempDir's parents are private to root),
// removed when the test passes.
func tempDir(t *testing.T, pattern string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("kept %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// inImage rewrites the image's paths in config (those under a directory the image's final
// stage copies into) to the same paths under root.
func inImage(img finalStage, root, config string) string {
	var dirs []string
	for dst, src := range img.copies {
		if fi, err := os.Stat(filepath.Join(repoRoot, src)); err == nil && fi.IsDir() {
			dirs = append(dirs, dst)
		} else {
			dirs = append(dirs, filepath.Dir(dst))
		}
	}
	sort.Slice(dirs, func(i, j int) bool { return len(dirs[i]) > len(dirs[j]) })
	var pairs []string
	for _, d := range slices.Compact(dirs) {
		pairs = append(pairs, d+"/", root+d+"/")
	}
	return strings.NewReplacer(pairs...).Replace(config)
}

// asProxy runs cmd as the image's USER.
func asProxy(cmd *exec.Cmd) *exec.Cmd {
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: proxyUID, Gid: proxyUID}, Setpgid: true, Pdeathsig: syscall.SIGKILL}
	return cmd
}

// apisixHome is a home for APISIX's CLI and nginx, as the image's /usr/local/apisix: the
// installation's code and the conf/ and logs/ of this instance, owned by the proxy UID.
func apisixHome(t *testing.T, home, config string) string {
	t.Helper()
	dir := tempDir(t, "amesh-sidecar-")
	if err := harness.LayOutAPISIX(dir, home); err != nil {
		t.Fatal(err)
	}
	// What the image's entrypoint does with AMESH_APISIX_CONFIG.
	if err := os.WriteFile(filepath.Join(dir, "conf", "config.yaml"), []byte(config+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "conf"), filepath.Join(dir, "logs"), filepath.Join(dir, "conf", "config.yaml"), filepath.Join(dir, "conf", "mime.types"), filepath.Join(dir, "conf", "debug.yaml")} {
		if err := os.Lchown(p, proxyUID, proxyUID); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// outputPipe is a container's stdout and stderr: a pipe the proxy UID owns, as runc hands a
// container's stdio to its user (fixStdioPermissions), so that nginx can open /dev/stderr (the
// sidecar's error_log). What the process writes is copied to out; done is closed when the process and
// its children have closed their ends.
func outputPipe(t *testing.T, cmd *exec.Cmd, out io.Writer) (start func() error, done <-chan struct{}) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Chown(proxyUID, proxyUID); err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(out, r); r.Close(); close(copied) }()
	return func() error { defer w.Close(); return cmd.Start() }, copied
}

// apisixCLI runs APISIX's CLI in dir as the proxy UID.
func apisixCLI(t *testing.T, home, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := asProxy(exec.Command("./bin/apisix", args...))
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + filepath.Join(home, "openresty", "bin") + ":/usr/bin:/bin", "HOME=" + dir}
	var out syncBuffer
	start, done := outputPipe(t, cmd, &out)
	if err := start(); err != nil {
		return "", err
	}
	err := cmd.Wait()
	<-done
	return out.String(), err
}

// podEnv is the apisix container's environment as the kubelet would give it to this pod: the
// template's values, and the downward API's fields for the test's pod.
func podEnv(t *testing.T, c corev1.Container) []string {
	t.Helper()
	fields := map[string]string{
		"metadata.name": "productpage-v1", "metadata.namespace": "default", "status.podIP": podIP,
		"spec.serviceAccountName": "productpage", "spec.nodeName": "node-1",
	}
	var env []string
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var f string
			if ref := e.ValueFrom.FieldRef; ref != nil {
				f = fields[ref.FieldPath]
			}
			if f == "" {
				t.Fatalf("env %s from %+v: not a field this test fills", e.Name, e.ValueFrom)
			}
			v = f
		}
		env = append(env, e.Name+"="+v)
	}
	return env
}

// agentStub answers istio-agent's /healthz/ready on 127.0.0.1:15020 in ns with the status it
// holds.
type agentStub struct{ status atomic.Int32 }

func startAgentStub(t *testing.T, ns *netns.NS) *agentStub {
	t.Helper()
	a := &agentStub{}
	a.status.Store(http.StatusOK)
	serveIn(t, ns, "127.0.0.1:15020", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz/ready" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(int(a.status.Load()))
	}))
	return a
}

// serveIn serves h on addr inside ns until the test ends; it returns the address.
func serveIn(t *testing.T, ns *netns.NS, addr string, h http.Handler) string {
	t.Helper()
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return l.Addr().String()
}

// get sends GET path with Host host to addr from inside ns, on a connection of its own.
func get(ns *netns.NS, addr, host, path string, timeout time.Duration) (int, string, error) {
	return getWith(ns, addr, host, path, timeout, nil)
}

// getWith is get with the request headers h.
func getWith(ns *netns.NS, addr, host, path string, timeout time.Duration, h http.Header) (int, string, error) {
	client := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext:       func(ctx context.Context, network, a string) (net.Conn, error) { return ns.Dial(ctx, network, a) },
	}}
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// waitFor polls cond until it holds, failing the test after d.
func waitFor(t *testing.T, what string, d time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last string
	for {
		ok, state := cond()
		if ok {
			return
		}
		last = state
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; last: %s", d, what, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var (
	envLine    = regexp.MustCompile(`(?m)^env "?([^";\s]+)"?;`)
	dictLine   = regexp.MustCompile(`(?m)^\s*lua_shared_dict (\S+) (\S+);`)
	listenLine = regexp.MustCompile(`(?m)^\s*listen\s+([^\s;]+)`)
	// The HTTP server's listeners behind the stream front.
	socketListen = regexp.MustCompile(`(?m)^\s*listen unix:\S+/1500[16]\.sock proxy_protocol;`)
)

// sidecar is the sidecar's APISIX running as the image runs it, in a pod network namespace
// with Istio's capture rules: the config.yaml Istio's injection gives the apisix container
// (the chart rendered, its template installed into istiod's injector and run), the files the
// image copies at their image paths (the repository's lua/, libxds.so built from this
// checkout, the original-destination modules built for APISIX's OpenResty), nginx as the
// proxy UID. What differs from a pod: amesh's xDS address is xdsAddr (where the test starts a
// control plane) instead of istio-agent's socket, istio-agent's status port is a stub, and
// amesh's status server is on (for the failure log).
type sidecar struct {
	pod, client *netns.NS
	agent       *agentStub
	xdsAddr     string
	cmd         *exec.Cmd
	stderr      *syncBuffer
	exited      chan error
	stopped     bool
}

// startSidecar checks what apisix init renders (checkNginxConf) and that apisix test accepts
// it, then starts nginx (env added to the container's environment); the test's cleanup stops it and, when the test failed, logs amesh's
// debug views and nginx's error log.
func startSidecar(t *testing.T, env ...string) *sidecar {
	t.Helper()
	home, modules, agentBin := requireAPISIX(t)
	openresty := filepath.Join(home, "openresty", "bin", "openresty")

	// The config.yaml and the environment the injected apisix container gets.
	pod := newInjector(t, renderChart(t, chartDir, "amesh", "istio-system", nil)).inject(t, samplePod())
	container := container(t, pod.Spec.Containers, "apisix")
	cfg := apisixConfig(t, container)
	img := sidecarImage(t)
	root := imageRoot(t, img, modules)
	config := inImage(img, root, envOf(container)["AMESH_APISIX_CONFIG"].Value)
	if strings.Count(config, "/usr/local/") != strings.Count(config, root+"/usr/local/") {
		t.Fatalf("the config names paths the image does not copy:\n%s", config)
	}
	// The pod's volume for the HTTP server's unix sockets: a directory of the proxy UID's.
	sockets, _ := at(cfg, "plugin_attr", "amesh-http", "socket_dir").(string)
	if sockets == "" || !strings.Contains(config, sockets+"/") {
		t.Fatalf("the config has no socket directory (plugin_attr.amesh-http.socket_dir %q)", sockets)
	}
	socketDir := tempDir(t, "amesh-sockets-")
	if err := os.Chown(socketDir, proxyUID, proxyUID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(socketDir, 0o700); err != nil {
		t.Fatal(err)
	}
	config = strings.NewReplacer(sockets+"/", socketDir+"/", `"`+sockets+`"`, `"`+socketDir+`"`).Replace(config)
	dir := apisixHome(t, home, config)

	// apisix init: nginx.conf.
	if out, err := apisixCLI(t, home, dir, "init"); err != nil {
		t.Fatalf("apisix init: %v\n%s", err, out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "conf", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	nginxConf := string(b)
	checkNginxConf(t, nginxConf, cfg, root)
	if out, err := apisixCLI(t, home, dir, "test"); err != nil || !strings.Contains(out, "test is successful") {
		t.Fatalf("apisix test: %v\n%s", err, out)
	}
	if t.Failed() {
		t.Logf("nginx.conf:\n%s", nginxConf)
		t.FailNow()
	}

	// The pod: capture rules, the agent's status port, and the control plane's address,
	// where nothing answers until the test starts one (loopback is not captured, and the
	// proxy UID is exempt anyway).
	s := &sidecar{exited: make(chan error, 1), stderr: &syncBuffer{}}
	s.pod, s.client = netns.IstioPod(t, agentBin, []string{podIP + "/24", podIP6 + "/64"}, []string{peerIP + "/24", peerIP6 + "/64"})
	s.agent = startAgentStub(t, s.pod)
	l, err := s.pod.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.xdsAddr = l.Addr().String()
	l.Close()

	// The image's entrypoint: nginx in the foreground with APISIX's home as its prefix.
	s.cmd = asProxy(exec.Command(openresty, "-p", dir, "-g", "daemon off;"))
	s.cmd.Dir = dir
	s.cmd.Env = append(append(podEnv(t, container), "AMESH_XDS_ADDRESS="+s.xdsAddr, "AMESH_STATUS_ADDR="+statusAddr), env...)
	start, copied := outputPipe(t, s.cmd, s.stderr)
	if err := s.pod.Do(start); err != nil {
		t.Fatal(err)
	}
	go func() { err := s.cmd.Wait(); <-copied; s.exited <- err }()
	t.Cleanup(func() {
		if t.Failed() && !s.stopped {
			for _, path := range []string{"/debug/xds", "/debug/report", "/debug/apisix"} {
				_, body, err := get(s.pod, statusAddr, "", path, 5*time.Second)
				t.Logf("amesh's %s (%v), last 4 KiB:\n%s", path, err, tail([]byte(body), 4096))
			}
		}
		if !s.stopped {
			_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
			<-s.exited
		}
		if t.Failed() || os.Getenv("AMESH_TEST_LOGS") != "" {
			t.Logf("nginx's stderr (error_log), last 8 KiB:\n%s", tail([]byte(s.stderr.String()), 8192))
		}
	})
	return s
}

// statusAddr is where amesh's status server listens in the pod, read when a test fails.
const statusAddr = "127.0.0.1:15029"

// serve starts the control plane on the sidecar's xDS address.
func (s *sidecar) serve(t *testing.T) *xdstest.Server {
	t.Helper()
	var xds *xdstest.Server
	if err := s.pod.Do(func() (err error) { xds, err = xdstest.New(xdstest.Options{Addr: s.xdsAddr}); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(xds.Close)
	return xds
}

// ready asks the sidecar's readiness endpoint.
func (s *sidecar) ready(timeout time.Duration) (int, string, error) {
	return get(s.pod, "127.0.0.1:15021", "", "/healthz/ready", timeout)
}

// waitReady waits for amesh's first configuration to be in APISIX.
func (s *sidecar) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, "15021/healthz/ready to answer ready", 60*time.Second, func() (bool, string) {
		code, body, err := s.ready(2 * time.Second)
		return err == nil && code == http.StatusOK && body == "ready\n", fmt.Sprintf("%d %q %v", code, body, err)
	})
}

// errorLogClean fails the test on error log lines that mean the configuration or amesh
// failed.
// Lines with one of expected (what the test provoked) are not looked at.
func (s *sidecar) errorLogClean(t *testing.T, expected ...string) {
	t.Helper()
	var kept []string
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		if !slices.ContainsFunc(expected, func(e string) bool { return strings.Contains(line, e) }) {
			kept = append(kept, line)
		}
	}
	log := strings.Join(kept, "\n")
	for _, bad := range []string{"[emerg]", "[crit]", "amesh: failed", "failed to check the conf", "amesh: stream route", "amesh: protocol detection failed"} {
		if strings.Contains(log, bad) {
			t.Errorf("nginx's error log has %q", bad)
		}
	}
}

// TestSidecarAPISIX runs the sidecar's APISIX as the image does, in real APISIX
// (startSidecar), against a fake control plane in the pod.
//
// apisix init renders an nginx.conf with the modules loaded, the env lines, the dicts, the
// capture listeners and the readiness server, and apisix test (nginx -t) accepts it; nginx
// runs it; 15021 is not ready before amesh's first configuration, ready after it, not ready
// once the agent is not; a request the application sends to a service port is captured to
// 15001, taken by the stream route of the service's listener to APISIX's HTTP server and
// routed by amesh's HTTP routes on $connection_original_dst (another port of the same
// address has no stream route: closed); SIGQUIT stops nginx.
func TestSidecarAPISIX(t *testing.T) {
	s := startSidecar(t)
	p, agent, exited := s.pod, s.agent, s.exited
	ready := s.ready
	backend := serveIn(t, p, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "reviews")
	}))

	// Before amesh's first configuration (the control plane does not answer yet) the workers
	// wait for it (APISIX's xds providers do, in init_worker), so the probe gets no answer.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		select {
		case err := <-exited:
			t.Fatalf("nginx exited at start: %v", err)
		default:
		}
		if code, body, err := ready(500 * time.Millisecond); err == nil {
			t.Fatalf("15021/healthz/ready answered %d %q before amesh had a configuration", code, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c, err := p.Dial(ctx, "tcp", "127.0.0.1:15021"); err != nil {
		t.Fatalf("nginx does not listen on 15021: %v", err)
	} else {
		c.Close()
	}

	// The control plane starts, with the service reviews on port 9080, its endpoint the
	// backend.
	xds := s.serve(t)
	const cluster = "outbound|9080||reviews.default.svc.cluster.local"
	xds.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""))
	xds.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", cluster))
	xds.Set(resource.ClusterType, xdstest.EDSCluster(cluster))
	xds.Set(resource.EndpointType, xdstest.Endpoints(cluster, backend))
	s.waitReady(t)

	// The application calls the service: captured to 15001, where $connection_original_dst is
	// 9080, the port amesh's route requires.
	waitFor(t, "a captured request to reach the service's endpoint", 30*time.Second, func() (bool, string) {
		code, body, err := get(p, net.JoinHostPort(serviceIP, "9080"), "reviews.default.svc.cluster.local:9080", "/", 5*time.Second)
		return err == nil && code == http.StatusOK && body == "reviews", fmt.Sprintf("%d %q %v", code, body, err)
	})
	// Another port of the same address: no listener, and no virtualOutbound listener to
	// pass it through, so no stream route: the connection is closed.
	if ok, got := closedWithoutAnswer(p, net.JoinHostPort(serviceIP, "9081"), true); !ok {
		t.Errorf("a request captured from port 9081, where the mesh has no listener: %s, want the connection closed", got)
	}

	// The agent is not ready: neither is the sidecar, with the reason.
	agent.status.Store(http.StatusServiceUnavailable)
	if code, body, err := ready(5 * time.Second); err != nil || code != http.StatusServiceUnavailable || !strings.Contains(body, "istio-agent answered 503") {
		t.Errorf("15021/healthz/ready with the agent not ready: %d %q %v, want 503 naming the agent", code, body, err)
	}
	agent.status.Store(http.StatusOK)
	if code, _, err := ready(5 * time.Second); err != nil || code != http.StatusOK {
		t.Errorf("15021/healthz/ready with the agent ready again: %d %v, want 200", code, err)
	}

	// The image's stop signal.
	if err := s.cmd.Process.Signal(syscall.SIGQUIT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		s.stopped = true
		if err != nil {
			t.Errorf("nginx exited after SIGQUIT: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("nginx still runs 30 s after SIGQUIT")
	}
	s.errorLogClean(t)
}

// checkNginxConf: the nginx.conf apisix init renders from the sidecar's config.yaml loads the
// modules (main context), passes amesh's variables, declares the dicts at the chart's sizes
// once, takes amesh's Lua first, listens on the capture ports and serves readiness on 15021.
func checkNginxConf(t *testing.T, conf string, cfg map[string]any, root string) {
	t.Helper()
	main, _, ok := strings.Cut(conf, "\nhttp {")
	if !ok {
		t.Fatalf("nginx.conf has no http block")
	}
	for _, m := range []string{"ngx_http_amesh_original_dst_module.so", "ngx_stream_amesh_original_dst_module.so", "ngx_http_amesh_upstream_tls_module.so", "ngx_stream_amesh_upstream_tls_module.so"} {
		if want := "load_module " + root + "/usr/local/openresty/nginx/modules/" + m + ";"; !strings.Contains(main, want) {
			t.Errorf("nginx.conf's main context lacks %q", want)
		}
	}
	var envs []string
	for _, m := range envLine.FindAllStringSubmatch(conf, -1) {
		envs = append(envs, m[1])
	}
	for _, e := range toStrings(at(cfg, "nginx_config", "envs")) {
		if !slices.Contains(envs, e) {
			t.Errorf("nginx.conf has no env %s; it has %v", e, envs)
		}
	}
	// amesh's dicts: once, in the top-level lua {} block, where both the http and the
	// stream workers see them.
	dicts := map[string][]string{}
	for _, m := range dictLine.FindAllStringSubmatch(conf, -1) {
		dicts[m[1]] = append(dicts[m[1]], m[2])
	}
	_, meta, _ := strings.Cut(main, "\nlua {\n")
	meta, _, _ = strings.Cut(meta, "\n}\n")
	for name, size := range map[string]string{"xds-config": "50m", "xds-config-version": "1m"} {
		if got := dicts[name]; !slices.Equal(got, []string{size}) {
			t.Errorf("lua_shared_dict %s declared with sizes %v, want once with %s", name, got, size)
		}
		if !regexp.MustCompile(`(?m)^\s*lua_shared_dict ` + name + ` ` + size + `;`).MatchString(meta) {
			t.Errorf("lua_shared_dict %s is not in the top-level lua {} block:\n%s", name, meta)
		}
	}
	if _, stream, ok := strings.Cut(main, "\nstream {"); !ok || !strings.Contains(stream, "amesh_original_dst_local on;") {
		t.Errorf("nginx.conf's stream block lacks amesh_original_dst_local on")
	}
	if want := "lua_package_path  \"" + root + "/usr/local/amesh/lua/?.lua;"; !strings.Contains(conf, want) {
		t.Errorf("nginx.conf's lua_package_path does not start with amesh's Lua tree (%q)", want)
	}
	// Every TCP listener is one Istio reserves for its proxy; any other port would be taken
	// from the application in the pod's network namespace.
	var listens []string
	for _, m := range listenLine.FindAllStringSubmatch(conf, -1) {
		if !strings.HasPrefix(m[1], "unix:") {
			listens = append(listens, m[1])
		}
	}
	slices.Sort(listens)
	if want := []string{"0.0.0.0:15001", "0.0.0.0:15006", "15021", "[::]:15001", "[::]:15006", "[::]:15021"}; !slices.Equal(listens, want) {
		t.Errorf("nginx.conf listens on %v, want %v", listens, want)
	}
	// The capture ports are stream listeners; HTTP listens behind them on the unix sockets.
	if !regexp.MustCompile(`(?s)\nstream \{.*listen 0\.0\.0\.0:15001[ ;].*\n\}\n.*\nhttp \{`).MatchString(conf) {
		t.Errorf("15001 is not a stream listener")
	}
	if n := len(socketListen.FindAllString(conf, -1)); n != 2 {
		t.Errorf("nginx.conf listens on %d unix sockets with the PROXY protocol, want one per capture port", n)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// syncBuffer is a bytes.Buffer written by one goroutine and read by others.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
