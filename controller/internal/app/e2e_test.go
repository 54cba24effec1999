package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/internal/agent"
	"github.com/amesh-dev/amesh/internal/meshgen"
	"github.com/amesh-dev/amesh/internal/pluginsync"
	"github.com/amesh-dev/amesh/internal/sink/file"
	"github.com/amesh-dev/amesh/internal/translate"
	"github.com/amesh-dev/amesh/internal/xds/resource"
)

// onceSource hands out one snapshot and then blocks, like an xDS client with a mesh
// that does not change.
type onceSource struct{ snap chan *resource.Update }

func (s onceSource) Next(ctx context.Context) (*resource.Update, error) {
	select {
	case snap := <-s.snap:
		return snap, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// sidecar is an amesh agent for one pod: xDS snapshot and the controller's plugins →
// translate → file sink, as the amesh command wires it.
type sidecar struct {
	path   string
	client *pluginsync.Client
}

func startSidecar(t *testing.T, controllerAddr string, pod *corev1.Pod, token string) *sidecar {
	t.Helper()
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client := pluginsync.New(pluginsync.Options{
		Addr: controllerAddr, Namespace: pod.Namespace, Pod: pod.Name, TokenFile: tokenFile,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, Logger: log,
	})
	sink, err := file.New(file.Options{Path: filepath.Join(dir, "apisix.json"), Format: file.JSON, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	src := onceSource{snap: make(chan *resource.Update, 1)}
	src.snap <- meshgen.UpdateOf(meshgen.Generate(meshgen.Options{Services: 2}).Snapshot())
	newTr := func() agent.Translator { return translate.New(translate.Options{}) }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { _ = client.Run(ctx); done <- struct{}{} }()
	go func() {
		_ = agent.Run(ctx, src, newTr, sink, agent.Options{Logger: log, Plugins: client})
		done <- struct{}{}
	}()
	t.Cleanup(func() { cancel(); <-done; <-done })
	return &sidecar{path: sink.Path(), client: client}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// routes reads the sidecar's APISIX file: route id → plugins.
func (s *sidecar) routes(t *testing.T) (map[string]map[string]json.RawMessage, error) {
	b, err := os.ReadFile(s.path)
	if err != nil {
		return nil, err
	}
	var f struct {
		Routes []struct {
			ID      string                     `json:"id"`
			Plugins map[string]json.RawMessage `json:"plugins"`
		} `json:"routes"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	out := map[string]map[string]json.RawMessage{}
	for _, r := range f.Routes {
		out[r.ID] = r.Plugins
	}
	return out, nil
}

// plugin returns, for each route, the plugin's config (or "" where it is absent).
func (s *sidecar) plugin(t *testing.T, name string) (map[string]string, error) {
	rs, err := s.routes(t)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for id, ps := range rs {
		var compact bytes.Buffer
		if conf := ps[name]; conf != nil {
			if err := json.Compact(&compact, conf); err != nil {
				return nil, err
			}
		}
		out[id] = compact.String()
	}
	return out, nil
}

// waitPlugin waits until every route of the sidecar has plugin name with config want
// ("" = absent).
func (s *sidecar) waitPlugin(t *testing.T, name, want string) {
	t.Helper()
	s.waitRoutes(t, name, fmt.Sprintf("%q on every route", want), func(_, conf string) bool { return conf == want })
}

// waitRoutes waits until ok holds for every route's config of plugin name.
func (s *sidecar) waitRoutes(t *testing.T, name, what string, ok func(id, conf string) bool) {
	t.Helper()
	eventually(t, name+" "+what, func() (bool, error) {
		got, err := s.plugin(t, name)
		if err != nil || len(got) == 0 {
			return false, err
		}
		for id, conf := range got {
			if !ok(id, conf) {
				return false, fmt.Errorf("route %s: %s = %q", id, name, conf)
			}
		}
		return true, nil
	})
}

func inboundOnly(id, conf string) bool { return (conf == "{}") == strings.HasPrefix(id, "in-") }

func TestEndToEndSidecarsFollowController(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	ns := namespace(t)
	reviews := pod(t, ns, "reviews-v1", "reviews", map[string]string{"app": "reviews", "version": "v1"})
	ratings := pod(t, ns, "ratings-v1", "ratings", map[string]string{"app": "ratings", "version": "v1"})
	cs := kubernetes.NewForConfigOrDie(restConfig)
	token := func(p *corev1.Pod) string {
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, p.Spec.ServiceAccountName, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{BoundObjectRef: &authnv1.BoundObjectReference{
				Kind: "Pod", APIVersion: "v1", Name: p.Name, UID: p.UID}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}

	// The sidecars start before the controller exists: they serve xDS alone.
	lis := listen(t)
	addr := lis.Addr().String()
	lis.Close()
	sReviews := startSidecar(t, addr, reviews, token(reviews))
	sRatings := startSidecar(t, addr, ratings, token(ratings))
	sReviews.waitPlugin(t, "limit-count", "")
	sRatings.waitPlugin(t, "limit-count", "")

	// A config for app=reviews, then the controller appears: only reviews gets it.
	c := newConfig(ns, "reviews-limit", map[string]string{"app": "reviews"}, limitCount(t, 5))
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	stop := controller(t, mustListen(t, addr), Options{})
	sReviews.waitPlugin(t, "limit-count", `{"count":5,"time_window":60}`)
	eventually(t, "ratings connected", func() (bool, error) { return sRatings.client.Connected(), nil })
	sRatings.waitPlugin(t, "limit-count", "")

	// Live change.
	update(t, c, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{limitCount(t, 7)} })
	sReviews.waitPlugin(t, "limit-count", `{"count":7,"time_window":60}`)

	// A second config, for inbound routes only, is merged beside the first.
	inbound := newConfig(ns, "inbound-cors", map[string]string{"app": "reviews"}, v1alpha1.Plugin{Name: "cors"})
	inbound.Spec.Scope = &v1alpha1.Scope{Direction: v1alpha1.Inbound}
	if err := k8s.Create(ctx, inbound); err != nil {
		t.Fatal(err)
	}
	sReviews.waitRoutes(t, "cors", "on inbound routes only", inboundOnly)
	sReviews.waitPlugin(t, "limit-count", `{"count":7,"time_window":60}`)

	// The controller dies: the sidecar notices and keeps its last config.
	stop()
	eventually(t, "reviews disconnected", func() (bool, error) { return !sReviews.client.Connected(), nil })
	got, err := sReviews.plugin(t, "limit-count")
	if err != nil {
		t.Fatal(err)
	}
	for id, conf := range got {
		if conf != `{"count":7,"time_window":60}` {
			t.Errorf("route %s lost its plugin after the controller stopped: %q", id, conf)
		}
	}

	// Deleted while the controller is away; a new controller removes exactly its
	// plugin: the inbound config's stays.
	if err := k8s.Delete(ctx, c); err != nil {
		t.Fatal(err)
	}
	controller(t, mustListen(t, addr), Options{})
	sReviews.waitPlugin(t, "limit-count", "")
	sReviews.waitRoutes(t, "cors", "still on inbound routes only", inboundOnly)
	sRatings.waitPlugin(t, "limit-count", "")
	sRatings.waitPlugin(t, "cors", "")
}

// mustListen listens on addr again (the port the sidecars were told), retrying briefly
// while the previous listener's socket is released.
func mustListen(t *testing.T, addr string) net.Listener {
	t.Helper()
	var lastErr error
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		lis, err := net.Listen("tcp", addr)
		if err == nil {
			return lis
		}
		lastErr = err
	}
	t.Fatalf("listen %s: %v", addr, lastErr)
	return nil
}
