package app

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	pb "github.com/amesh-dev/amesh/api/pluginsync/v1"
	"github.com/amesh-dev/amesh/controller/api/v1alpha1"
	"github.com/amesh-dev/amesh/controller/internal/validate"
)

func rawJSON(t testing.TB, v any) *apiextensionsv1.JSON {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return &apiextensionsv1.JSON{Raw: b}
}

func limitCount(t testing.TB, count int) v1alpha1.Plugin {
	return v1alpha1.Plugin{Name: "limit-count", Config: rawJSON(t, map[string]any{"count": count, "time_window": 60})}
}

func newConfig(ns, name string, sel map[string]string, plugins ...v1alpha1.Plugin) *v1alpha1.AmeshPluginConfig {
	c := &v1alpha1.AmeshPluginConfig{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha1.AmeshPluginConfigSpec{Plugins: plugins},
	}
	if sel != nil {
		c.Spec.Selector = &metav1.LabelSelector{MatchLabels: sel}
	}
	return c
}

func TestCRDSchema(t *testing.T) {
	needEnv(t)
	ctx := context.Background()
	ns := namespace(t)
	good := newConfig(ns, "good", nil, limitCount(t, 5))
	if err := k8s.Create(ctx, good); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	var got v1alpha1.AmeshPluginConfig
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(good), &got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Priority != 0 || string(got.Spec.Plugins[0].Config.Raw) != `{"count":5,"time_window":60}` {
		t.Errorf("stored spec %+v (config %s)", got.Spec, got.Spec.Plugins[0].Config.Raw)
	}

	bad := map[string]func(c *v1alpha1.AmeshPluginConfig){
		"empty plugin name":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins[0].Name = "" },
		"bad plugin name":     func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins[0].Name = "Limit Count" },
		"config not object":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins[0].Config = rawJSON(t, "count=5") },
		"config array":        func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins[0].Config = rawJSON(t, []int{1}) },
		"no plugins":          func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = nil },
		"duplicate plugin":    func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = append(c.Spec.Plugins, c.Spec.Plugins[0]) },
		"priority too high":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Priority = 5000 },
		"port out of range":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Scope = &v1alpha1.Scope{Ports: []int32{70000}} },
		"path not absolute":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Scope = &v1alpha1.Scope{Paths: []string{"api"}} },
		"empty host in scope": func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Scope = &v1alpha1.Scope{Hosts: []string{""}} },
		"unknown direction":   func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Scope = &v1alpha1.Scope{Direction: "Sideways"} },
	}
	for name, mutate := range bad {
		t.Run(name, func(t *testing.T) {
			c := newConfig(ns, "bad", nil, limitCount(t, 5))
			mutate(c)
			err := k8s.Create(ctx, c)
			if !apierrors.IsInvalid(err) {
				t.Errorf("got %v, want Invalid", err)
				_ = k8s.Delete(ctx, c)
			}
		})
	}
}

// TestSamples checks that the shipped examples pass both the CRD schema and APISIX's.
func TestSamples(t *testing.T) {
	needEnv(t)
	files, err := filepath.Glob(filepath.Join("..", "..", "..", "config", "samples", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	ns := namespace(t)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var c v1alpha1.AmeshPluginConfig
		if err := yaml.UnmarshalStrict(b, &c); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		c.Namespace = ns
		if err := k8s.Create(context.Background(), &c); err != nil {
			t.Errorf("%s rejected by the CRD: %v", f, err)
		}
		if err := validate.Spec(&c.Spec); err != nil {
			t.Errorf("%s rejected by APISIX's schema: %v", f, err)
		}
	}
}

func condition(c *v1alpha1.AmeshPluginConfig, typ string) *metav1.Condition {
	return meta.FindStatusCondition(c.Status.Conditions, typ)
}

// waitStatus waits until the config's status describes its current generation and ok holds.
func waitStatus(t *testing.T, c *v1alpha1.AmeshPluginConfig, what string, ok func(*v1alpha1.AmeshPluginConfig) bool) *v1alpha1.AmeshPluginConfig {
	t.Helper()
	var got v1alpha1.AmeshPluginConfig
	eventually(t, what, func() (bool, error) {
		if err := k8s.Get(context.Background(), client.ObjectKeyFromObject(c), &got); err != nil {
			return false, err
		}
		return got.Status.ObservedGeneration == got.Generation && ok(&got), nil
	})
	return &got
}

func TestStatusConditions(t *testing.T) {
	controller(t, listen(t), Options{InsecureSkipAuth: true})
	ctx := context.Background()
	ns := namespace(t)
	pod(t, ns, "web-1", "web", map[string]string{"app": "web"})
	pod(t, ns, "web-2", "web", map[string]string{"app": "web"})
	pod(t, ns, "db-1", "db", map[string]string{"app": "db"})

	c := newConfig(ns, "limits", map[string]string{"app": "web"}, limitCount(t, 5))
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	got := waitStatus(t, c, "accepted, 2 pods", func(c *v1alpha1.AmeshPluginConfig) bool {
		a, r := condition(c, v1alpha1.ConditionAccepted), condition(c, v1alpha1.ConditionReady)
		return a != nil && a.Status == metav1.ConditionTrue && r != nil && r.Status == metav1.ConditionTrue &&
			c.Status.MatchedPods == 2
	})
	if a := condition(got, v1alpha1.ConditionAccepted); a.Reason != v1alpha1.ReasonAccepted || a.ObservedGeneration != got.Generation {
		t.Errorf("Accepted %+v", a)
	}

	// A config APISIX's schema rejects (limit-count needs count > 0) is reported, not served.
	update(t, got, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{limitCount(t, 0)} })
	got = waitStatus(t, got, "InvalidPluginConfig", func(c *v1alpha1.AmeshPluginConfig) bool {
		a := condition(c, v1alpha1.ConditionAccepted)
		return a.Status == metav1.ConditionFalse && a.Reason == v1alpha1.ReasonInvalidConfig
	})
	if r := condition(got, v1alpha1.ConditionReady); r.Status != metav1.ConditionFalse || r.Reason != v1alpha1.ReasonNotAccepted {
		t.Errorf("Ready %+v", r)
	}
	t.Logf("invalid config message: %s", condition(got, v1alpha1.ConditionAccepted).Message)

	// An unknown plugin likewise.
	update(t, got, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{{Name: "no-such-plugin"}} })
	waitStatus(t, got, "UnknownPlugin", func(c *v1alpha1.AmeshPluginConfig) bool {
		a := condition(c, v1alpha1.ConditionAccepted)
		return a.Status == metav1.ConditionFalse && a.Reason == v1alpha1.ReasonUnknownPlugin
	})

	// Fixed again: accepted.
	update(t, got, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{limitCount(t, 3)} })
	waitStatus(t, got, "accepted again", func(c *v1alpha1.AmeshPluginConfig) bool {
		return condition(c, v1alpha1.ConditionAccepted).Status == metav1.ConditionTrue
	})
}

func TestSelectorMovesPodInAndOut(t *testing.T) {
	lis := listen(t)
	controller(t, lis, Options{InsecureSkipAuth: true})
	ctx := context.Background()
	ns := namespace(t)
	p := pod(t, ns, "reviews-1", "reviews", map[string]string{"app": "reviews", "version": "v1"})
	other := pod(t, ns, "ratings-1", "ratings", map[string]string{"app": "ratings"})

	s := watch(t, lis.Addr().String(), ns, p.Name, "")
	if set := s.next(t); len(set.Configs) != 0 || set.Version != 1 {
		t.Fatalf("first set %v, want version 1 and no configs", set)
	}
	o := watch(t, lis.Addr().String(), ns, other.Name, "")
	o.next(t)

	c := newConfig(ns, "v1-limits", map[string]string{"version": "v1"}, limitCount(t, 5))
	c.Spec.Scope = &v1alpha1.Scope{Ports: []int32{9080}}
	if err := k8s.Create(ctx, c); err != nil {
		t.Fatal(err)
	}
	set := s.until(t, "the config", func(s *pb.ConfigSet) bool { return len(s.Configs) == 1 })
	pc := set.Configs[0]
	if pc.Name != "v1-limits" || pc.Plugins[0].Name != "limit-count" || string(pc.Plugins[0].ConfigJson) != `{"count":5,"time_window":60}` ||
		len(pc.Scope.GetPorts()) != 1 || pc.Scope.GetPorts()[0] != 9080 || set.Version < 2 {
		t.Errorf("set %v", set)
	}
	waitStatus(t, c, "1 pod", func(c *v1alpha1.AmeshPluginConfig) bool { return c.Status.MatchedPods == 1 })

	// Relabel the pod out of the selector: its set empties, the count drops.
	update(t, p, func(p *corev1.Pod) { p.Labels["version"] = "v2" })
	prev := set.Version
	set = s.until(t, "no configs", func(s *pb.ConfigSet) bool { return len(s.Configs) == 0 })
	if set.Version <= prev {
		t.Errorf("version %d after %d", set.Version, prev)
	}
	waitStatus(t, c, "0 pods", func(c *v1alpha1.AmeshPluginConfig) bool { return c.Status.MatchedPods == 0 })

	// Change the selector instead: the pod moves back in.
	update(t, c, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Selector.MatchLabels = map[string]string{"app": "reviews"} })
	s.until(t, "the config again", func(s *pb.ConfigSet) bool { return len(s.Configs) == 1 })
	waitStatus(t, c, "1 pod again", func(c *v1alpha1.AmeshPluginConfig) bool { return c.Status.MatchedPods == 1 })

	// An invalid spec is never pushed: the pod's set empties.
	update(t, c, func(c *v1alpha1.AmeshPluginConfig) { c.Spec.Plugins = []v1alpha1.Plugin{{Name: "no-such-plugin"}} })
	s.until(t, "invalid config withdrawn", func(s *pb.ConfigSet) bool { return len(s.Configs) == 0 })

	// The other pod never saw any config.
	select {
	case set := <-o.sets:
		t.Errorf("unselected pod got %v", set)
	default:
	}
}

func TestTokenReviewAuthentication(t *testing.T) {
	lis := listen(t)
	controller(t, lis, Options{})
	ctx := context.Background()
	ns := namespace(t)
	reviews := pod(t, ns, "reviews-1", "reviews", map[string]string{"app": "reviews"})
	ratings := pod(t, ns, "ratings-1", "ratings", map[string]string{"app": "ratings"})
	if err := k8s.Create(ctx, newConfig(ns, "all", nil, limitCount(t, 1))); err != nil {
		t.Fatal(err)
	}
	cs := kubernetes.NewForConfigOrDie(restConfig)
	token := func(sa string, bound *corev1.Pod) string {
		req := &authnv1.TokenRequest{}
		if bound != nil {
			req.Spec.BoundObjectRef = &authnv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: bound.Name, UID: bound.UID}
		}
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, req, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("token request: %v", err)
		}
		return tr.Status.Token
	}
	addr := lis.Addr().String()

	// The pod's own (bound) token: served.
	s := watch(t, addr, ns, reviews.Name, token("reviews", reviews))
	s.until(t, "the config", func(s *pb.ConfigSet) bool { return len(s.Configs) == 1 })
	// An unbound token of the right service account: served.
	watch(t, addr, ns, reviews.Name, token("reviews", nil)).next(t)

	refused := map[string]struct {
		pod, token string
		code       codes.Code
	}{
		"no token":                 {reviews.Name, "", codes.Unauthenticated},
		"garbage token":            {reviews.Name, "not-a-token", codes.Unauthenticated},
		"other service account":    {reviews.Name, token("ratings", nil), codes.PermissionDenied},
		"token bound to other pod": {reviews.Name, token("ratings", ratings), codes.PermissionDenied},
		"bound token, other pod":   {ratings.Name, token("reviews", reviews), codes.PermissionDenied},
		"pod that does not exist":  {"ghost", token("reviews", nil), codes.NotFound},
	}
	for name, tc := range refused {
		t.Run(name, func(t *testing.T) {
			s := watch(t, addr, ns, tc.pod, tc.token)
			select {
			case set := <-s.sets:
				t.Fatalf("served %v", set)
			case err := <-s.err:
				if status.Code(err) != tc.code {
					t.Errorf("got %v, want %v", err, tc.code)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("stream neither served nor refused")
			}
		})
	}
}
