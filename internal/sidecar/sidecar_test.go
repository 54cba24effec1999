package sidecar

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/xds/resource"
	"github.com/amesh-dev/amesh/internal/xdstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const cluster = "outbound|9080||reviews.default.svc.cluster.local"

// startXDS serves one outbound listener on 9080 with a route to cluster.
func startXDS(t *testing.T) *xdstest.Server {
	t.Helper()
	srv, err := xdstest.New(xdstest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	srv.Set(resource.ListenerType, xdstest.Listener("0.0.0.0_9080", 9080, []string{"9080"}, ""))
	srv.Set(resource.RouteConfigType, xdstest.RouteConfig("9080", cluster))
	srv.Set(resource.ClusterType, xdstest.EDSCluster(cluster))
	srv.Set(resource.EndpointType, xdstest.Endpoints(cluster, "10.1.0.1:9080"))
	return srv
}

// loadConfig is the configuration a pod "reviews-1" in "default" would have.
func loadConfig(t *testing.T, env ...string) config.Config {
	t.Helper()
	cfg, err := config.Load(append([]string{
		"POD_NAME=reviews-1", "POD_NAMESPACE=default", "INSTANCE_IP=10.0.0.7",
		"AMESH_LABELS_FILE=" + filepath.Join(t.TempDir(), "no-labels"), "AMESH_CONFIG_FILE=",
		"AMESH_COALESCE_WINDOW=5ms", config.EnvWorkloadCert + "=" + filepath.Join(t.TempDir(), "no-certs"),
	}, env...))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// start builds the sidecar with a JSON file sink and runs it until the test ends.
func start(t *testing.T, cfg config.Config) (*Sidecar, string) {
	t.Helper()
	return startLogged(t, cfg, slog.New(slog.DiscardHandler))
}

// startLogged is start with the sidecar logging to log.
func startLogged(t *testing.T, cfg config.Config, log *slog.Logger) (*Sidecar, string) {
	t.Helper()
	out := filepath.Join(t.TempDir(), "apisix.json")
	sink, err := file.New(file.Options{Path: out, Format: file.JSON, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, sink, Options{Version: "test", Logger: log,
		ControllerMinBackoff: 10 * time.Millisecond, ControllerMaxBackoff: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-s.Agent().ReadyC():
	case err := <-done:
		t.Fatalf("Run returned before the first write: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("no configuration written; xDS status %+v", s.XDS().Status())
	}
	return s, out
}

// routes reads the routes of the standalone file.
func routes(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct{ Routes []map[string]any }
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	return cfg.Routes
}

// pluginConf returns the route's config of plugin name (nil if absent).
func pluginConf(route map[string]any, name string) map[string]any {
	plugins, _ := route["plugins"].(map[string]any)
	conf, _ := plugins[name].(map[string]any)
	return conf
}

// waitFor polls cond until it holds, failing the test after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// waitRoutes waits until the file has routes and every one satisfies ok.
func waitRoutes(t *testing.T, path, what string, ok func(map[string]any) bool) {
	t.Helper()
	var rs []map[string]any
	defer func() {
		if t.Failed() {
			t.Logf("last routes: %v", rs)
		}
	}()
	waitFor(t, "routes "+what, func() bool {
		rs = routes(t, path)
		all := len(rs) > 0
		for _, r := range rs {
			all = all && ok(r)
		}
		return all
	})
}

// limit is a route condition: limit-count with count n, or absent for n == 0.
func limit(n float64) func(map[string]any) bool {
	return func(r map[string]any) bool {
		c := pluginConf(r, "limit-count")
		if n == 0 {
			return c == nil
		}
		return c != nil && c["count"] == n
	}
}

// get serves one status request in-process.
func get(h http.Handler, path string) string {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Body.String()
}

// waitStatus waits until the status view at path contains want.
func waitStatus(t *testing.T, h http.Handler, path, want string) {
	t.Helper()
	waitFor(t, path+" to contain "+want, func() bool { return strings.Contains(get(h, path), want) })
}

// fakeController is an in-process amesh-controller: it streams the sets sent on its
// channel to the sidecar that watches.
type fakeController struct {
	pb.UnimplementedPluginSyncServer
	sets    chan *pb.ConfigSet
	watches chan string // "namespace/pod authorization" of each stream
}

func (f *fakeController) Watch(req *pb.WatchRequest, stream grpc.ServerStreamingServer[pb.ConfigSet]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	f.watches <- fmt.Sprintf("%s/%s %s", req.GetNamespace(), req.GetPod(), strings.Join(md.Get("authorization"), ","))
	for {
		select {
		case s := <-f.sets:
			if err := stream.Send(s); err != nil {
				return err
			}
		case <-stream.Context().Done():
			return nil
		}
	}
}

// limitSet is a config set with one config adding limit-count (count n) to every route.
func limitSet(version uint64, n int) *pb.ConfigSet {
	return &pb.ConfigSet{Version: version, Configs: []*pb.PluginConfig{{
		Namespace: "default", Name: "reviews-limit", Generation: int64(n),
		Plugins: []*pb.Plugin{{Name: "limit-count", ConfigJson: fmt.Appendf(nil, `{"count":%d,"time_window":60}`, n)}},
	}}}
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestControllerAppearsLater runs the sidecar with a controller address where no
// controller listens yet: it serves Istio's config, then applies the controller's
// plugins once it is up, follows changes and an empty set, and keeps the last plugins
// when the controller goes away (while xDS updates still apply).
func TestControllerAppearsLater(t *testing.T) {
	xds := startXDS(t)
	addr := freeAddr(t)
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("sa-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, out := start(t, loadConfig(t, "AMESH_XDS_ADDRESS="+xds.Addr(),
		config.EnvControllerAddress+"="+addr, config.EnvControllerTokenFile+"="+tok))
	h := s.Handler()

	// Istio's config alone while no controller answers.
	waitRoutes(t, out, "without limit-count", limit(0))
	if m := get(h, "/metrics"); !strings.Contains(m, "\namesh_controller_connected 0\n") {
		t.Errorf("metrics before the controller is up lack amesh_controller_connected 0:\n%s", m)
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctl := &fakeController{sets: make(chan *pb.ConfigSet), watches: make(chan string, 10)}
	srv := grpc.NewServer()
	pb.RegisterPluginSyncServer(srv, ctl)
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(lis) }()
	defer func() { srv.Stop(); <-served }()

	select {
	case w := <-ctl.watches:
		if w != "default/reviews-1 Bearer sa-token" {
			t.Errorf("watch = %q, want the pod's identity and token", w)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the sidecar did not connect to the controller")
	}
	ctl.sets <- limitSet(1, 100)
	waitRoutes(t, out, "with limit-count 100", limit(100))
	waitStatus(t, h, "/debug/controller", `"connected": true`)
	if m := get(h, "/metrics"); !strings.Contains(m, "\namesh_controller_connected 1\n") ||
		!strings.Contains(m, "\namesh_controller_plugin_configs 1\n") {
		t.Errorf("metrics while connected:\n%s", m)
	}

	ctl.sets <- limitSet(2, 7)
	waitRoutes(t, out, "with limit-count 7", limit(7))
	if c := get(h, "/debug/controller"); !strings.Contains(c, `"default/reviews-limit@7"`) {
		t.Errorf("/debug/controller does not name the config in force:\n%s", c)
	}

	ctl.sets <- &pb.ConfigSet{Version: 3}
	waitRoutes(t, out, "without limit-count after an empty set", limit(0))

	ctl.sets <- limitSet(4, 5)
	waitRoutes(t, out, "with limit-count 5", limit(5))

	// The controller goes away: the plugins stay, and xDS changes still apply to routes
	// that keep them.
	srv.Stop()
	<-served
	waitStatus(t, h, "/metrics", "\namesh_controller_connected 0\n")
	if err := xds.Update(xdstest.Endpoints(cluster, "10.1.0.1:9080", "10.1.0.2:9080")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the endpoint added after the controller stopped", func() bool {
		b, err := os.ReadFile(out)
		return err == nil && bytes.Contains(b, []byte(`"10.1.0.2"`))
	})
	waitRoutes(t, out, "keeping limit-count 5 without the controller", limit(5))
}

// TestWithoutController checks that amesh works from Istio alone when no controller is
// configured: no plugin input, no controller views.
func TestWithoutController(t *testing.T) {
	xds := startXDS(t)
	s, out := start(t, loadConfig(t, "AMESH_XDS_ADDRESS="+xds.Addr()))
	if s.plugins != nil {
		t.Fatal("a controller client was built without an address")
	}
	waitRoutes(t, out, "present", limit(0))
	h := s.Handler()
	if c := get(h, "/debug/controller"); !strings.Contains(c, `"configured": false`) {
		t.Errorf("/debug/controller = %s", c)
	}
	if m := get(h, "/metrics"); strings.Contains(m, "amesh_controller_") || !strings.Contains(m, "\namesh_ready 1\n") {
		t.Errorf("metrics:\n%s", m)
	}
}
