package istiod_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/amesh-dev/amesh/internal/xds/client"
)

// This file runs libxds.so inside a real nginx (Debian's nginx + lua-nginx-module) against the
// real istiod, using the nginx harness of test/nginx (its nginx.conf template and Lua module,
// read from there at run time): worker 0 loads the library with the shared-dict zones, every
// worker polls the version like APISIX and serves what it sees at /dump.

var nginxDeps = []string{
	"/usr/sbin/nginx",
	"/usr/lib/nginx/modules/ngx_http_lua_module.so",
	"/usr/lib/nginx/modules/ndk_http_module.so",
	"/usr/share/lua/5.1/resty/core.lua",
}

// libxdsEnv are the variables nginx passes to the library (nginx clears the environment
// except for `env` directives).
var libxdsEnv = []string{
	"AMESH_XDS_ADDRESS", "AMESH_XDS_PROTOCOL", "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP",
	"AMESH_LABELS_FILE", "SERVICE_ACCOUNT", "ISTIO_VERSION", "CLUSTER_ID",
	"AMESH_LOG_FILE", "AMESH_LOG_LEVEL", "AMESH_COALESCE_WINDOW", "AMESH_CONFIG_FILE", "AMESH_WORKLOAD_CERT_DIR",
}

type nginxDump struct {
	Version *string           `json:"version"`
	Keys    map[string]string `json:"keys"`
	Digest  string            `json:"digest"`
	// LoaderPID is the process that loaded libxds.so; Loads counts its initial() calls.
	LoaderPID int `json:"loader_pid"`
	Loads     int `json:"loads"`
	Workers   map[string]struct {
		Version string `json:"version"`
		Digest  string `json:"digest"`
	} `json:"workers"`
}

// TestLibxdsInNginx: libxds.so in nginx, connected to istiod, writes into the shared dict
// exactly what the in-process pipeline writes for the same sidecar, both workers converge on
// it, and an endpoint change arrives with a version bump.
func TestLibxdsInNginx(t *testing.T) {
	requireEnv(t)
	for _, p := range nginxDeps {
		if _, err := os.Stat(p); err != nil {
			msg := p + " is missing: run scripts/install-test-deps.sh"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	harnessDir, err := filepath.Abs(filepath.Join("..", "nginx"))
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	lib := filepath.Join(prefix, "libxds.so")
	build := exec.Command("go", "build", "-buildmode=c-shared", "-o", lib, "github.com/amesh-dev/amesh/cmd/libxds")
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building libxds.so: %v\n%s", err, out)
	}

	environ := sidecarEnv(t, env.istiod.GRPCAddr, client.Delta)
	environ = append(environ, "AMESH_LOG_FILE="+filepath.Join(prefix, "amesh.log"), "AMESH_LOG_LEVEL=info",
		"AMESH_COALESCE_WINDOW=20ms", "AMESH_CONFIG_FILE=",
		// No istio-agent writes a workload certificate here: the library watches none,
		// as the in-process pipeline it is compared with has none (TestPodWithIstioAgent
		// runs the identity).
		"AMESH_WORKLOAD_CERT_DIR=off")
	port := freePort(t)
	// missingkey=error: a field the harness's template gains must be given here too.
	tmpl, err := template.New("nginx.conf.tmpl").Option("missingkey=error").ParseFiles(filepath.Join(harnessDir, "nginx.conf.tmpl"))
	if err != nil {
		t.Fatal(err)
	}
	var conf bytes.Buffer
	if err := tmpl.Execute(&conf, map[string]any{
		"Root": os.Geteuid() == 0, "Workers": 2, "Prefix": prefix, "Env": libxdsEnv,
		"Dir": harnessDir, "LuaDir": filepath.Join(harnessDir, "..", "..", "lua"), "DictSize": "16m",
		"VersionDictSize": "1m", "Reader": "", "View": false, "Lib": lib, "Port": port, "Poll": 0.05,
	}); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(prefix, "nginx.conf")
	writeFile(t, confPath, conf.String())
	exited, _ := runNginx(t, prefix, confPath, append([]string{"PATH=" + os.Getenv("PATH")}, environ...), "error.log", "amesh.log")

	dump := func() (nginxDump, error) {
		var d nginxDump
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/dump", port))
		if err != nil {
			return d, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return d, err
		}
		return d, json.Unmarshal(b, &d)
	}
	// converged: the dict has a version and every worker has read that version's content.
	converged := func(d nginxDump) bool {
		if d.Version == nil || len(d.Workers) < 2 {
			return false
		}
		for _, w := range d.Workers {
			if w.Version != *d.Version || w.Digest != d.Digest {
				return false
			}
		}
		return true
	}

	// The same sidecar in-process: its written objects are what the dict must hold.
	ref := startAmesh(t, environ)
	var d nginxDump
	waitUntil(t, "nginx's dict equals the in-process pipeline's output", func() bool {
		select {
		case <-exited:
			t.Fatal("nginx exited")
		default:
		}
		var err error
		if d, err = dump(); err != nil || !converged(d) {
			return false
		}
		want, _, _ := ref.sink.state()
		return len(want) > 0 && maps.Equal(d.Keys, stringMap(want))
	})
	if len(routesFor(t, bytesMap(d.Keys), reviews)) < 6 {
		t.Errorf("dict lacks the reviews routes")
	}
	v0 := *d.Version

	// An endpoint change reaches the dict with a new version.
	pod, slice := reviewsV2c(t)
	apply(t, pod)
	apply(t, slice)
	t.Cleanup(func() { removeReviewsV2c(t) })
	waitUntil(t, "the new endpoint in nginx's dict", func() bool {
		var err error
		d, err = dump()
		return err == nil && converged(d) && *d.Version != v0 && strings.Contains(fmt.Sprint(d.Keys), "192.0.2.24")
	})
}

func stringMap(m map[string][]byte) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

func bytesMap(m map[string]string) map[string][]byte {
	out := make(map[string][]byte, len(m))
	for k, v := range m {
		out[k] = []byte(v)
	}
	return out
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// runNginx runs Debian's nginx with prefix and confPath (env: its environment, nil for
// the test's) until the test ends, then stops it; on a failed test it logs the last
// 4 KiB of each of logs (files under prefix) and of its stderr. exited is closed when
// nginx has exited.
func runNginx(t *testing.T, prefix, confPath string, env []string, logs ...string) (exited <-chan struct{}, stderr *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command("/usr/sbin/nginx", "-p", prefix, "-c", confPath)
	cmd.Env = env
	stderr = &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			for _, f := range logs {
				b, _ := os.ReadFile(filepath.Join(prefix, f))
				t.Logf("--- %s, last 4 KiB ---\n%s", f, b[max(0, len(b)-4096):])
			}
			b := stderr.Bytes()
			t.Logf("--- stderr ---\n%s", b[max(0, len(b)-4096):])
		}
	})
	return done, stderr
}
