package install_test

import (
	"encoding/json"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"istio.io/istio/pkg/config/mesh"
	"istio.io/istio/pkg/kube/inject"

	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// istiodRender renders Istio's own istiod chart (from the istio module amesh is tested
// against) with extra values, as `helm upgrade istiod istio/istiod -f ...` would.
func istiodRender(t *testing.T, extra map[string]any) rendered {
	t.Helper()
	dir, err := harness.IstioModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]any{
		"global": map[string]any{"hub": "docker.io/istio", "tag": "1.31.0"},
	}
	for k, v := range extra {
		if m, ok := v.(map[string]any); ok {
			if cur, ok := vals[k].(map[string]any); ok {
				for kk, vv := range m {
					cur[kk] = vv
				}
				continue
			}
		}
		vals[k] = v
	}
	return renderChart(t, filepath.Join(dir, "manifests", "charts", "istio-control", "istio-discovery"), "istiod", "istio-system", vals)
}

// injector is istiod's injector as Istio's istiod chart configures it, with the amesh chart's
// output installed the documented way: its istiod-values.yaml passed to the istiod chart.
type injector struct {
	cfg    inject.Config
	values inject.ValuesConfig
	mesh   string
}

func newInjector(t *testing.T, amesh rendered) injector {
	t.Helper()
	cm := amesh.find(t, "ConfigMap", "amesh-injection-template")
	var istiodValues map[string]any
	if err := yaml.Unmarshal([]byte(str(cm, "data", "istiod-values.yaml")), &istiodValues); err != nil {
		t.Fatalf("istiod-values.yaml: %v", err)
	}
	istiod := istiodRender(t, istiodValues)
	injCM := istiod.find(t, "ConfigMap", "istio-sidecar-injector")
	cfg, err := inject.UnmarshalConfig([]byte(str(injCM, "data", "config")))
	if err != nil {
		t.Fatalf("istiod's injector rejects the configuration: %v", err)
	}
	if _, ok := cfg.Templates["amesh"]; !ok {
		t.Fatalf("istiod's injector has no template amesh; it has %v", keys(cfg.RawTemplates))
	}
	if strings.TrimSpace(cfg.RawTemplates["amesh"]) != strings.TrimSpace(str(cm, "data", "template.yaml")) {
		t.Errorf("the template istiod got differs from the chart's template.yaml")
	}
	vals, err := inject.NewValuesConfig(str(injCM, "data", "values"))
	if err != nil {
		t.Fatal(err)
	}
	return injector{cfg: cfg, values: vals, mesh: str(istiod.find(t, "ConfigMap", "istio"), "data", "mesh")}
}

// inject runs Istio's injection (what the webhook and `istioctl kube-inject` run) on pod.
func (in injector) inject(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	mc, err := mesh.ApplyMeshConfigDefaults(in.mesh)
	if err != nil {
		t.Fatal(err)
	}
	var warnings []string
	out, err := inject.IntoObject(nil, in.cfg.Templates, in.values, "", mc, pod, func(w string) { warnings = append(warnings, w) })
	if err != nil {
		t.Fatalf("injection failed: %v", err)
	}
	if len(warnings) > 0 {
		t.Errorf("injection warnings: %v", warnings)
	}
	return out.(*corev1.Pod)
}

// samplePod is an application pod that asks for the amesh template, with a port and an HTTP
// readiness probe (which the injection rewrites to go through istio-agent).
func samplePod() *corev1.Pod {
	return &corev1.Pod{
		TypeMeta: metaType("v1", "Pod"),
		ObjectMeta: objectMeta("productpage-v1", "default",
			map[string]string{"app": "productpage", "version": "v1"},
			map[string]string{"inject.istio.io/templates": "amesh"}),
		Spec: corev1.PodSpec{
			ServiceAccountName: "productpage",
			Containers: []corev1.Container{{
				Name:  "productpage",
				Image: "docker.io/istio/examples-bookinfo-productpage-v1:1.20.2",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/health", Port: intstr.FromInt32(9080)},
				}},
			}},
		},
	}
}

func metaType(apiVersion, kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: apiVersion, Kind: kind}
}

func objectMeta(name, ns string, labels, annotations map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels, Annotations: annotations}
}

func container(t *testing.T, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %q among %v", name, names(cs))
	return corev1.Container{}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

func envOf(c corev1.Container) map[string]corev1.EnvVar {
	m := map[string]corev1.EnvVar{}
	for _, e := range c.Env {
		m[e.Name] = e
	}
	return m
}

func mounts(c corev1.Container) map[string]string {
	m := map[string]string{}
	for _, v := range c.VolumeMounts {
		m[v.MountPath] = v.Name
	}
	return m
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// apisixConfig parses the config.yaml the injected apisix container gets.
func apisixConfig(t *testing.T, c corev1.Container) map[string]any {
	t.Helper()
	raw := envOf(c)["AMESH_APISIX_CONFIG"].Value
	var cfg map[string]any
	if err := yaml.Unmarshal([]byte(raw), &cfg); err != nil || len(cfg) == 0 {
		t.Fatalf("AMESH_APISIX_CONFIG is not a YAML document (%v): %q", err, raw)
	}
	return cfg
}

// checkInjected asserts what every amesh-injected pod must have, whatever the values.
func checkInjected(t *testing.T, pod *corev1.Pod, image string) {
	t.Helper()
	// Capture: istio-iptables with APISIX's ports and the proxy UID, as Envoy's sidecar gets.
	if len(pod.Spec.InitContainers) != 1 {
		t.Fatalf("init containers %v, want [istio-init]", names(pod.Spec.InitContainers))
	}
	initC := pod.Spec.InitContainers[0]
	wantArgs := []string{"istio-iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
		"-i", "*", "-x", "", "-b", "*", "-d", "15090,15021,15020", "--log_output_level=default:info"}
	if initC.Name != "istio-init" || !slices.Equal(initC.Args, wantArgs) {
		t.Errorf("init container %s args %q, want istio-init %q", initC.Name, initC.Args, wantArgs)
	}
	if caps := initC.SecurityContext.Capabilities; caps == nil || !slices.Contains(caps.Add, "NET_ADMIN") {
		t.Errorf("istio-init lacks NET_ADMIN")
	}

	// The application, istio-agent and APISIX.
	got := names(pod.Spec.Containers)
	slices.Sort(got)
	if want := []string{"apisix", "istio-proxy", "productpage"}; !slices.Equal(got, want) {
		t.Fatalf("containers %v, want %v", got, want)
	}
	agent := container(t, pod.Spec.Containers, "istio-proxy")
	apisix := container(t, pod.Spec.Containers, "apisix")
	if !strings.Contains(agent.Image, "/proxyv2:") {
		t.Errorf("istio-proxy runs %q, want Istio's proxyv2 image (pilot-agent)", agent.Image)
	}
	if apisix.Image != image {
		t.Errorf("apisix runs %q, want %q", apisix.Image, image)
	}
	ae := envOf(agent)
	for k, v := range map[string]string{"DISABLE_ENVOY": "true", "OUTPUT_CERTS": "/var/lib/istio/data", "CA_ADDR": "istiod.istio-system.svc:15012"} {
		if ae[k].Value != v {
			t.Errorf("istio-proxy env %s=%q, want %q", k, ae[k].Value, v)
		}
	}
	for _, c := range []corev1.Container{agent, apisix} {
		sc := c.SecurityContext
		if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 1337 || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s does not run as the proxy UID 1337 (the capture rules exempt only it)", c.Name)
		}
	}

	// Certificates and tokens: the agent reads the pod's token and the mesh root where it
	// looks by default, shares its XDS socket and the certificates it writes with APISIX.
	am := mounts(agent)
	for path, vol := range map[string]string{
		"/var/run/secrets/tokens": "istio-token", "/var/run/secrets/istio": "istiod-ca-cert",
		"/etc/istio/proxy": "istio-xds", "/var/lib/istio/data": "istio-data", "/etc/istio/pod": "istio-podinfo",
	} {
		if am[path] != vol {
			t.Errorf("istio-proxy mounts %q at %s, want %q", am[path], path, vol)
		}
	}
	pm := mounts(apisix)
	for path, vol := range map[string]string{"/etc/istio/proxy": "istio-xds", "/var/lib/istio/data": "istio-data", "/etc/istio/pod": "istio-podinfo"} {
		if pm[path] != vol {
			t.Errorf("apisix mounts %q at %s, want %q", pm[path], path, vol)
		}
	}
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = v
	}
	if tok := vols["istio-token"].Projected; tok == nil || len(tok.Sources) != 1 || tok.Sources[0].ServiceAccountToken == nil ||
		tok.Sources[0].ServiceAccountToken.Audience != "istio-ca" || tok.Sources[0].ServiceAccountToken.Path != "istio-token" {
		t.Errorf("volume istio-token %+v, want a projected service-account token istio-token with audience istio-ca", vols["istio-token"])
	}
	if cm := vols["istiod-ca-cert"].ConfigMap; cm == nil || cm.Name != "istio-ca-root-cert" {
		t.Errorf("volume istiod-ca-cert %+v, want ConfigMap istio-ca-root-cert", vols["istiod-ca-cert"])
	}
	if ed := vols["istio-xds"].EmptyDir; ed == nil || ed.Medium != corev1.StorageMediumMemory {
		t.Errorf("volume istio-xds %+v, want an in-memory emptyDir", vols["istio-xds"])
	}
	// The HTTP server's unix sockets behind the capture ports: a directory of APISIX's own,
	// which no other container mounts (a client that could connect there would name any
	// source address in its PROXY header), and which the entrypoint clears.
	sockets, _ := at(apisixConfig(t, apisix), "plugin_attr", "amesh-http", "socket_dir").(string)
	if vol := pm[sockets]; vol == "" || vols[vol].EmptyDir == nil {
		t.Errorf("apisix mounts %q at the socket directory %q, want an emptyDir", vol, sockets)
	} else {
		for _, c := range pod.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if m.Name == vol && c.Name != "apisix" {
					t.Errorf("%s mounts the socket directory's volume %s", c.Name, vol)
				}
			}
		}
	}
	if got := envOf(apisix)["AMESH_SOCKET_DIR"].Value; got != sockets {
		t.Errorf("apisix env AMESH_SOCKET_DIR=%q, want the socket directory %q (the entrypoint removes stale sockets there)", got, sockets)
	}

	// amesh's environment: no xDS address, TLS or token of its own (the defaults are the
	// agent's socket at /etc/istio/proxy/XDS), the pod's identity from the downward API, and
	// every variable it gets is passed through by nginx.
	pe := envOf(apisix)
	for _, k := range []string{"AMESH_XDS_ADDRESS", "AMESH_XDS_TLS", "AMESH_XDS_TOKEN_FILE", "AMESH_XDS_CA_FILE"} {
		if _, ok := pe[k]; ok {
			t.Errorf("apisix sets %s: amesh must use istio-agent's socket, its default", k)
		}
	}
	for k, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace", "INSTANCE_IP": "status.podIP", "SERVICE_ACCOUNT": "spec.serviceAccountName"} {
		if e := pe[k]; e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != field {
			t.Errorf("apisix env %s %+v, want the downward API's %s", k, e, field)
		}
	}
	cfg := apisixConfig(t, apisix)
	envs := toStrings(at(cfg, "nginx_config", "envs"))
	for name := range pe {
		// The entrypoint's own variables (docker/sidecar/entrypoint.sh).
		if name != "AMESH_APISIX_CONFIG" && name != "AMESH_SOCKET_DIR" && !slices.Contains(envs, name) {
			t.Errorf("apisix gets %s but nginx_config.envs does not pass it to amesh", name)
		}
	}

	// Readiness and drain. Istio rewrites every container's HTTP probe but istio-proxy's to go
	// through the agent; for apisix the agent then asks APISIX's 15021/healthz/ready.
	probers := map[string]struct {
		HTTPGet struct {
			Path string `json:"path"`
			Port int    `json:"port"`
		} `json:"httpGet"`
	}{}
	if err := json.Unmarshal([]byte(ae["ISTIO_KUBE_APP_PROBERS"].Value), &probers); err != nil {
		t.Errorf("ISTIO_KUBE_APP_PROBERS: %v", err)
	}
	if p := apisix.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15020 || p.HTTPGet.Path != "/app-health/apisix/readyz" {
		t.Errorf("apisix readiness probe %+v, want the agent's /app-health/apisix/readyz", apisix.ReadinessProbe)
	}
	if p := probers["/app-health/apisix/readyz"].HTTPGet; p.Port != 15021 || p.Path != "/healthz/ready" {
		t.Errorf("the agent probes apisix at %+v, want :15021/healthz/ready", p)
	}
	if p := agent.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15020 {
		t.Errorf("istio-proxy readiness probe %+v, want the agent's status port 15020", agent.ReadinessProbe)
	}
	if l := apisix.Lifecycle; l == nil || l.PreStop == nil || l.PreStop.Exec == nil || len(l.PreStop.Exec.Command) != 2 || l.PreStop.Exec.Command[0] != "sleep" {
		t.Errorf("apisix preStop %+v, want a sleep that keeps it serving while the pod drains", apisix.Lifecycle)
	}
	// The application's own probe now goes through istio-agent, which reaches the app
	// outside the capture.
	app := container(t, pod.Spec.Containers, "productpage")
	if p := app.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.IntValue() != 15020 || !strings.HasPrefix(p.HTTPGet.Path, "/app-health/productpage/") {
		t.Errorf("application probe %+v, want it rewritten to istio-agent's /app-health/productpage/readyz on 15020", app.ReadinessProbe)
	}
	if p := probers["/app-health/productpage/readyz"].HTTPGet; p.Port != 9080 || p.Path != "/health" {
		t.Errorf("the agent probes the application at %+v, want :9080/health", p)
	}
	// APISIX does not terminate Istio mTLS: peers must not be told it does.
	if l := pod.Labels["security.istio.io/tlsMode"]; l != "istio" {
		t.Errorf("label security.istio.io/tlsMode %q, want istio: peers' auto mTLS would send plaintext, which PeerAuthentication STRICT refuses", l)
	}
	if pod.Annotations["sidecar.istio.io/status"] == "" {
		t.Errorf("no sidecar.istio.io/status annotation: Istio does not consider the pod injected")
	}
}

func at(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

func toStrings(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		s, _ := x.(string)
		out = append(out, s)
	}
	return out
}

// TestInjection renders the chart for several value sets, installs its template into istiod's
// injector the documented way (through Istio's own istiod chart) and runs Istio's injection
// code on an application pod that asks for it.
func TestInjection(t *testing.T) {
	cases := []struct {
		name   string
		values map[string]any
		check  func(t *testing.T, pod *corev1.Pod, cfg map[string]any)
	}{
		{
			name: "defaults",
			check: func(t *testing.T, pod *corev1.Pod, cfg map[string]any) {
				if at(cfg, "apisix", "enable_ipv6") != true || !strings.Contains(at(cfg, "nginx_config", "http_end_configuration_snippet").(string), "listen [::]:15021;") {
					t.Errorf("IPv6 off by default")
				}
				apisix := container(t, pod.Spec.Containers, "apisix")
				if got := envOf(apisix)["AMESH_CONTROLLER_ADDRESS"].Value; got != "" {
					t.Errorf("controller address %q without a controller", got)
				}
				if got := apisix.Lifecycle.PreStop.Exec.Command[1]; got != "5" {
					t.Errorf("drain %s s, want 5", got)
				}
			},
		},
		{
			name: "sized and configured",
			values: map[string]any{
				"sidecar": map[string]any{
					"image": "registry.example/amesh-sidecar:1.2.3", "logLevel": "debug", "drainSeconds": 12,
					"env":       []any{map[string]any{"name": "AMESH_COALESCE_WINDOW", "value": "50ms"}, map[string]any{"name": "X_TEMPLATE", "value": "{{ not-a-template }}"}},
					"resources": map[string]any{"limits": map[string]any{"memory": "2Gi"}},
				},
				"apisix": map[string]any{
					"xdsConfigSize": "200m", "workerProcesses": 4, "extraPlugins": []any{"limit-count", "redirect"},
					"extraEnvs": []any{"X_TEMPLATE"}, "enableIPv6": false,
				},
				"controller": map[string]any{"enabled": true},
			},
			check: func(t *testing.T, pod *corev1.Pod, cfg map[string]any) {
				apisix := container(t, pod.Spec.Containers, "apisix")
				e := envOf(apisix)
				for k, v := range map[string]string{
					"AMESH_LOG_LEVEL": "debug", "AMESH_COALESCE_WINDOW": "50ms", "X_TEMPLATE": "{{ not-a-template }}",
					"AMESH_CONTROLLER_ADDRESS": "amesh-controller.amesh-system.svc:15090",
				} {
					if e[k].Value != v {
						t.Errorf("apisix env %s=%q, want %q", k, e[k].Value, v)
					}
				}
				if got := metaDicts(cfg)["xds-config"]; got != "200m" {
					t.Errorf("xds-config dict %v, want 200m", got)
				}
				if at(cfg, "apisix", "enable_ipv6") != false || strings.Contains(at(cfg, "nginx_config", "http_end_configuration_snippet").(string), "[::]") {
					t.Errorf("IPv6 still on: enable_ipv6 %v", at(cfg, "apisix", "enable_ipv6"))
				}
				if got := at(cfg, "nginx_config", "worker_processes"); got != "4" {
					t.Errorf("worker_processes %v, want 4", got)
				}
				if got := toStrings(cfg["plugins"]); got[len(got)-1] != "limit-count" || slices.Contains(got, "key-auth") || len(got) != len(slices.Compact(slices.Sorted(slices.Values(got)))) {
					t.Errorf("plugins %v: want the translation's plugins and limit-count, each once", got)
				}
				if got := apisix.Lifecycle.PreStop.Exec.Command[1]; got != "12" {
					t.Errorf("drain %s s, want 12", got)
				}
				if got := apisix.Resources.Limits.Memory().String(); got != "2Gi" {
					t.Errorf("memory limit %s, want 2Gi", got)
				}
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := renderChart(t, chartDir, "amesh", "istio-system", c.values)
			image := "ghcr.io/amesh-dev/amesh-sidecar:latest"
			if s, _ := at(c.values, "sidecar", "image").(string); s != "" {
				image = s
			}
			pod := newInjector(t, r).inject(t, samplePod())
			checkInjected(t, pod, image)
			apisix := container(t, pod.Spec.Containers, "apisix")
			cfg := apisixConfig(t, apisix)
			checkAPISIXConfig(t, cfg)
			c.check(t, pod, cfg)
			if t.Failed() {
				b, _ := yaml.Marshal(pod)
				t.Logf("injected pod:\n%s", b)
			}
		})
	}
}

// TestNotInjectedWithoutAnnotation: pods that do not ask for the amesh template keep Istio's
// default (Envoy) sidecar; installing the template changes nothing for them.
func TestNotInjectedWithoutAnnotation(t *testing.T) {
	in := newInjector(t, renderChart(t, chartDir, "amesh", "istio-system", nil))
	pod := samplePod()
	delete(pod.Annotations, "inject.istio.io/templates")
	out := in.inject(t, pod)
	if slices.Contains(names(out.Spec.Containers), "apisix") {
		t.Errorf("a pod without the annotation got APISIX: %v", names(out.Spec.Containers))
	}
	proxy := container(t, out.Spec.Containers, "istio-proxy")
	if envOf(proxy)["DISABLE_ENVOY"].Value == "true" {
		t.Errorf("the default sidecar lost Envoy")
	}
}
