package nginx

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// requireAPISIX returns the APISIX installation in AMESH_APISIX_HOME, or skips: APISIX
// is in no package registry, so CI has none.
func requireAPISIX(t testing.TB) string {
	t.Helper()
	home := os.Getenv("AMESH_APISIX_HOME")
	if home == "" {
		t.Skip("AMESH_APISIX_HOME is not set: the tests and benchmarks that need real APISIX skip")
	}
	for _, p := range []string{"bin/apisix", "openresty/bin/openresty", "apisix/core/config_xds.lua", "conf/mime.types"} {
		if _, err := os.Stat(filepath.Join(home, p)); err != nil {
			t.Fatalf("AMESH_APISIX_HOME=%s is not an APISIX installation: %v", home, err)
		}
	}
	return home
}

// apisixOptions configure one APISIX.
type apisixOptions struct {
	// Provider is "amesh" (this repository's lua/ in extra_lua_path, router
	// amesh_host_uri) or "stock" (APISIX's config_xds.lua and radixtree_host_uri).
	Provider string
	Workers  int
	// Port is where APISIX listens: the mesh's base port (meshgen.Options.BasePort),
	// as routes carry a condition on it (AMESH_ORIGINAL_DST_VAR=server_port).
	Port int
	// ExtraPorts are more ports it listens on: those of other listeners.
	ExtraPorts []int
	// ControlPort, if set, enables APISIX's control API there.
	ControlPort int
	// ExtraLua is a directory of Lua modules added to the path (test helpers), and
	// Snippet nginx configuration added to the http block.
	ExtraLua, Snippet string
	// OmitPlugins are left out of config.yaml's plugins (amesh provider only).
	OmitPlugins []string
	// StreamPort, if set, runs the stream subsystem as the chart configures it
	// (proxy_mode http&stream, amesh's stream plugins, the dicts declared for both
	// subsystems) with its proxy listening there, and StreamSnippet is added to the
	// stream block.
	StreamPort    int
	StreamSnippet string
}

// apisixInstance is one running APISIX (master in the foreground, as a child).
type apisixInstance struct {
	t          testing.TB
	home, dir  string
	opts       apisixOptions
	statusAddr string
	cmd        *exec.Cmd
	exited     chan struct{}
}

const apisixConfig = `deployment:
  role: data_plane
  role_data_plane:
    config_provider: xds
apisix:
  extra_lua_cpath: "{{.LibDir}}/?.so"
{{- if .LuaPath}}
  extra_lua_path: "{{.LuaPath}}"
{{- end}}
  router:
    http: {{.Router}}
{{- if .StreamPort}}
  proxy_mode: http&stream
  stream_proxy:
    tcp:
      - addr: "127.0.0.1:{{.StreamPort}}"
{{- end}}
  node_listen:
{{- range .Ports}}
    - ip: 127.0.0.1
      port: {{.}}
{{- end}}
  enable_admin: false
  enable_control: {{.Control}}
{{- if .Control}}
  control:
    ip: 127.0.0.1
    port: {{.ControlPort}}
{{- end}}
  ssl:
    enable: false
{{- if .Plugins}}
plugins:
{{- range .Plugins}}
  - {{.}}
{{- end}}
{{- end}}
{{- if .StreamPort}}
stream_plugins:
  - amesh-http
  - amesh-mtls-peer
  - amesh-network-rbac
  - amesh-original-dst
{{- end}}
plugin_attr:
{{- if .StreamPort}}
  amesh-http:
    socket_dir: {{.Dir}}
{{- end}}
  prometheus:
    export_addr:
      ip: 127.0.0.1
      port: {{.PromPort}}
nginx_config:
  user: root
  worker_processes: {{.Workers}}
  worker_rlimit_nofile: 16384
  error_log_level: warn
  envs: [{{.Envs}}]
{{- if .StreamPort}}
  meta:
    lua_shared_dict:
      upstream-healthcheck: "10m;\n    lua_shared_dict xds-config 256m;\n    lua_shared_dict xds-config-version 1m"
{{- if .StreamSnippet}}
  stream_configuration_snippet: |
{{.StreamSnippet}}
{{- end}}
{{- else}}
  http:
    custom_lua_shared_dict:
      xds-config: 256m
      xds-config-version: 1m
{{- end}}
{{- if .Snippet}}
  http_configuration_snippet: |
{{.Snippet}}
{{- end}}
`

// startAPISIX runs APISIX with libxds.so pointed at xds.
func startAPISIX(t testing.TB, xds *xdstest.Server, o apisixOptions) *apisixInstance {
	t.Helper()
	home := requireAPISIX(t)
	buildLib(t)
	if o.Workers == 0 {
		o.Workers = 2
	}
	dir, err := os.MkdirTemp("", "amesh-apisix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The workers run as the master's user, but APISIX's CLI checks the tree.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := harness.LayOutAPISIX(dir, home); err != nil {
		t.Fatal(err)
	}
	a := &apisixInstance{t: t, home: home, dir: dir, opts: o, exited: make(chan struct{})}
	a.statusAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	env := []string{
		"AMESH_XDS_ADDRESS=" + xds.Addr(), "AMESH_XDS_PROTOCOL=delta",
		"POD_NAME=apisix-0", "POD_NAMESPACE=default", "INSTANCE_IP=10.1.2.3",
		"AMESH_LABELS_FILE=/nonexistent", "AMESH_CONFIG_FILE=", "AMESH_LOG_FILE=" + filepath.Join(dir, "logs", "amesh.log"),
		"AMESH_LOG_LEVEL=info", "AMESH_STATUS_ADDR=" + a.statusAddr, "AMESH_COALESCE_WINDOW=20ms",
		"AMESH_ORIGINAL_DST_VAR=server_port",
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]any{
		"LibDir": filepath.Dir(libPath), "Router": "radixtree_host_uri", "Ports": append([]int{o.Port}, o.ExtraPorts...),
		"Control": o.ControlPort != 0, "ControlPort": o.ControlPort, "PromPort": freePort(t),
		"Workers": o.Workers, "Envs": strings.Join(envNames, ", "),
	}
	var lua []string
	if o.Provider == "amesh" {
		lua = append(lua, filepath.Join(here, "..", "..", "lua", "?.lua"))
		vars["Router"] = "amesh_host_uri"
		var plugins []string
		for _, p := range apisixPlugins(t, home, here) {
			if !slices.Contains(o.OmitPlugins, p) {
				plugins = append(plugins, p)
			}
		}
		vars["Plugins"] = plugins
	}
	if o.ExtraLua != "" {
		lua = append(lua, filepath.Join(o.ExtraLua, "?.lua"))
	}
	vars["LuaPath"] = strings.Join(lua, ";")
	if o.Snippet != "" {
		vars["Snippet"] = "    " + strings.ReplaceAll(strings.TrimSpace(o.Snippet), "\n", "\n    ")
	}
	if o.StreamPort != 0 {
		vars["StreamPort"], vars["Dir"] = o.StreamPort, dir
		if o.StreamSnippet != "" {
			vars["StreamSnippet"] = "    " + strings.ReplaceAll(strings.TrimSpace(o.StreamSnippet), "\n", "\n    ")
		}
	}
	var conf bytes.Buffer
	if err := template.Must(template.New("config").Parse(apisixConfig)).Execute(&conf, vars); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "conf", "config.yaml"), conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	a.cmd, a.exited = launchAPISIX(t, home, dir, env)
	return a
}

// launchAPISIX renders the nginx.conf of the instance home dir (conf/config.yaml written)
// with APISIX's CLI and starts APISIX's nginx in the foreground with env. It stops it at the
// end of the test, logging its logs when the test failed.
func launchAPISIX(t testing.TB, home, dir string, env []string) (*exec.Cmd, chan struct{}) {
	t.Helper()
	path := "PATH=" + filepath.Join(home, "openresty", "bin") + ":" + os.Getenv("PATH")
	initCmd := exec.Command("./bin/apisix", "init")
	initCmd.Dir = dir
	initCmd.Env = []string{path}
	if out, err := initCmd.CombinedOutput(); err != nil {
		conf, _ := os.ReadFile(filepath.Join(dir, "conf", "config.yaml"))
		t.Fatalf("apisix init: %v\n%s\n%s", err, out, conf)
	}
	cmd := exec.Command(filepath.Join(home, "openresty", "bin", "openresty"), "-p", dir, "-c", filepath.Join(dir, "conf", "nginx.conf"), "-g", "daemon off;")
	cmd.Dir = dir
	cmd.Env = append([]string{path}, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		terminate(cmd, exited, 15*time.Second)
		if t.Failed() || os.Getenv("AMESH_TEST_LOGS") != "" {
			for _, f := range []string{"logs/error.log", "logs/amesh.log"} {
				if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil {
					t.Logf("--- %s (last 4k) ---\n%s", f, tail(b, 4096))
				}
			}
			t.Logf("--- stderr ---\n%s", tail(stderr.Bytes(), 4096))
		}
	})
	return cmd, exited
}

// waitServing waits until APISIX answers on its port (workers wait in init_worker for
// amesh's first version).
func (a *apisixInstance) waitServing() {
	a.t.Helper()
	waitFor(a.t, "APISIX to answer", func() bool {
		select {
		case <-a.exited:
			a.t.Fatal("APISIX exited at start")
		default:
		}
		_, _, err := a.request("nothing.invalid", "/")
		return err == nil
	})
}

func (a *apisixInstance) stop() { terminate(a.cmd, a.exited, 15*time.Second) }

// apisixClient opens a connection per request (keep-alive would pin a worker).
var apisixClient = &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// request sends GET path with Host host and returns the status and body.
func (a *apisixInstance) request(host, path string) (int, string, error) {
	ans, err := a.call(a.opts.Port, host, path)
	return ans.code, ans.body, err
}

// get is a GET of the control API or another local server of the instance.
func (a *apisixInstance) get(port int, path string) ([]byte, error) {
	resp, err := apisixClient.Get(fmt.Sprintf("http://127.0.0.1:%d%s", port, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, tail(b, 2048))
	}
	return b, err
}

// processes returns the pids of the master's children by title ("worker process",
// "privileged agent").
func (a *apisixInstance) processes(title string) []int {
	a.t.Helper()
	var pids []int
	for _, p := range children(a.t, a.cmd.Process.Pid) {
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", p))
		if strings.Contains(string(cmdline), title) {
			pids = append(pids, p)
		}
	}
	return pids
}

// backend is a local HTTP server that answers its name: an endpoint whose
// answers show which endpoint a request reached.
type backend struct {
	name, ip string
	port     int
	srv      *http.Server
}

// addr is the backend's "ip:port", an endpoint address.
func (b *backend) addr() string { return net.JoinHostPort(b.ip, strconv.Itoa(b.port)) }

func startBackend(t testing.TB, name string) *backend {
	t.Helper()
	return startBackendAt(t, "127.0.0.1", name, nil)
}

// startBackendAt starts a backend on ip (any of 127.0.0.0/8) that answers after
// delay() when delay is not nil.
func startBackendAt(t testing.TB, ip, name string, delay func() time.Duration) *backend {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &backend{name: name, ip: ip, port: ln.Addr().(*net.TCPAddr).Port}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if delay != nil {
			time.Sleep(delay())
		}
		_, _ = io.WriteString(w, name)
	}), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = b.srv.Serve(ln) }()
	t.Cleanup(func() { _ = b.srv.Close() })
	return b
}

// apisixPlugins is APISIX's default plugin list (config.yaml.example's, which
// config.yaml's `plugins` replaces) and amesh's own plugins (lua/apisix/plugins), as
// the chart's APISIX config lists them.
func apisixPlugins(t testing.TB, home, here string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(home, "conf", "config.yaml.example"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "plugins:"):
			in = true
		case in && strings.HasPrefix(line, "  - "):
			out = append(out, strings.Fields(line)[1])
		case in && line != "" && !strings.HasPrefix(line, " "):
			in = false
		}
	}
	if len(out) == 0 {
		t.Fatal("no plugin list in APISIX's config.yaml.example")
	}
	own, err := filepath.Glob(filepath.Join(here, "..", "..", "lua", "apisix", "plugins", "*.lua"))
	if err != nil || len(own) == 0 {
		t.Fatalf("amesh's plugins: %v %v", own, err)
	}
	for _, f := range own {
		out = append(out, strings.TrimSuffix(filepath.Base(f), ".lua"))
	}
	return out
}
