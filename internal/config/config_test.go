package config

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

var pod = []string{"POD_NAME=app-1", "POD_NAMESPACE=default", "INSTANCE_IP=10.0.0.7", "AMESH_LABELS_FILE=/nonexistent", "AMESH_CONFIG_FILE="}

func TestDefaults(t *testing.T) {
	cfg, err := Load(pod)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Window != 20*time.Millisecond || cfg.OriginalDstVar != "connection_original_dst" ||
		cfg.StatusAddr != "" || cfg.LogLevel != slog.LevelInfo || cfg.LogFile != "" || cfg.WorkloadCertDir != "/var/lib/istio/data" {
		t.Errorf("defaults = %+v", cfg)
	}
	if cfg.XDS.Server != "unix:///etc/istio/proxy/XDS" || cfg.XDS.Protocol != "delta" || cfg.XDS.TLS != nil {
		t.Errorf("xds defaults = %+v", cfg.XDS)
	}
	if id := cfg.XDS.Node.GetId(); id != "sidecar~10.0.0.7~app-1.default~default.svc.cluster.local" {
		t.Errorf("node id = %q", id)
	}
}

// AMESH_WORKLOAD_CERT_DIR names another directory or, with "off", none.
func TestWorkloadCertDir(t *testing.T) {
	for v, want := range map[string]string{"/certs": "/certs", "off": "", "": DefaultWorkloadCertDir} {
		cfg, err := Load(append(pod, EnvWorkloadCert+"="+v))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.WorkloadCertDir != want {
			t.Errorf("%s=%q: dir %q, want %q", EnvWorkloadCert, v, cfg.WorkloadCertDir, want)
		}
	}
}

func TestEnvironment(t *testing.T) {
	cfg, err := Load(append(pod, "AMESH_LOG_LEVEL=debug", "AMESH_LOG_FILE=/tmp/x.log",
		"AMESH_ORIGINAL_DST_VAR=server_port", "AMESH_COALESCE_WINDOW=75ms", "AMESH_STATUS_ADDR=127.0.0.1:9999",
		"AMESH_XDS_ADDRESS=istiod.istio-system.svc:15012", "AMESH_XDS_TLS=true", "AMESH_XDS_PROTOCOL=sotw"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LogLevel != slog.LevelDebug || cfg.LogFile != "/tmp/x.log" || cfg.OriginalDstVar != "server_port" ||
		cfg.Window != 75*time.Millisecond || cfg.StatusAddr != "127.0.0.1:9999" {
		t.Errorf("cfg = %+v", cfg)
	}
	if cfg.XDS.Server != "istiod.istio-system.svc:15012" || cfg.XDS.TLS == nil || cfg.XDS.Protocol != "sotw" {
		t.Errorf("xds = %+v", cfg.XDS)
	}
}

func TestFileCompletesEnvironment(t *testing.T) {
	path := filepath.Join(t.TempDir(), "amesh.yaml")
	file := "AMESH_COALESCE_WINDOW: 40ms\nAMESH_STATUS_ADDR: 127.0.0.1:1\nAMESH_XDS_TLS: true\n" +
		"AMESH_XDS_ADDRESS: istiod:15012\nISTIO_META_FOO: bar\n"
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(append(pod, "AMESH_CONFIG_FILE="+path, "AMESH_STATUS_ADDR=off"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.File != path || cfg.Window != 40*time.Millisecond || cfg.XDS.TLS == nil || cfg.XDS.Server != "istiod:15012" {
		t.Errorf("file values not applied: %+v", cfg)
	}
	if cfg.StatusAddr != "" {
		t.Errorf("environment must win over the file: status addr %q", cfg.StatusAddr)
	}
	if got := cfg.XDS.Node.GetMetadata().GetFields()["FOO"].GetStringValue(); got != "bar" {
		t.Errorf("ISTIO_META_FOO from the file: metadata FOO = %q", got)
	}
}

func TestErrors(t *testing.T) {
	for _, c := range []struct{ env, want string }{
		{"AMESH_COALESCE_WINDOW=soon", EnvWindow},
		{"AMESH_COALESCE_WINDOW=0s", EnvWindow},
		{"AMESH_LOG_LEVEL=loud", EnvLogLevel},
		{"AMESH_ORIGINAL_DST_VAR=$server_port", EnvOriginalDstVar},
		{"AMESH_CONFIG_FILE=/nonexistent/amesh.yaml", EnvConfigFile},
		{"AMESH_XDS_PROTOCOL=rest", "AMESH_XDS_PROTOCOL"},
		{"AMESH_CONTROLLER_TLS=maybe", EnvControllerTLS},
	} {
		_, err := Load(append(pod, EnvControllerAddress+"=unix:///run/ctl.sock", c.env))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Load(%s) = %v, want an error naming %s", c.env, err, c.want)
		}
	}
}

func TestController(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		want Controller
	}{
		{"off by default, other variables ignored", []string{EnvControllerTokenFile + "=/t", EnvControllerTLS + "=true"}, Controller{}},
		{"off explicitly", []string{EnvControllerAddress + "=off"}, Controller{}},
		{"address with the pod's token", []string{EnvControllerAddress + "=amesh-controller.amesh-system.svc:15090"},
			Controller{Address: "amesh-controller.amesh-system.svc:15090", TokenFile: DefaultControllerTokenFile}},
		{"no token", []string{EnvControllerAddress + "=c:1", EnvControllerTokenFile + "=none"}, Controller{Address: "c:1"}},
		{"CA file implies TLS", []string{EnvControllerAddress + "=c:1", EnvControllerTokenFile + "=/tok",
			EnvControllerCAFile + "=/ca.pem", EnvControllerServerName + "=ctl.svc"},
			Controller{Address: "c:1", TokenFile: "/tok", TLS: true, CAFile: "/ca.pem", ServerName: "ctl.svc"}},
		{"TLS with system roots", []string{EnvControllerAddress + "=c:1", EnvControllerTLS + "=true"},
			Controller{Address: "c:1", TokenFile: DefaultControllerTokenFile, TLS: true}},
	} {
		cfg, err := Load(append(pod, c.env...))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if cfg.Controller != c.want {
			t.Errorf("%s: Controller = %+v, want %+v", c.name, cfg.Controller, c.want)
		}
	}
	if _, err := Load(append(pod, EnvControllerAddress+"=unix:///run/c.sock", EnvControllerTLS+"=true")); err == nil {
		t.Error("TLS over a unix socket was accepted")
	}
}

func TestLoggerWritesToFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "amesh.log")
	log, closeFn, err := Config{LogFile: path, LogLevel: slog.LevelWarn}.Logger()
	if err != nil {
		t.Fatal(err)
	}
	log.Info("hidden")
	log.Warn("shown")
	if err := closeFn(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	if !strings.Contains(string(b), "shown") || strings.Contains(string(b), "hidden") {
		t.Errorf("log file = %q", b)
	}
}

// A key of the config file that no code reads is an error naming the variable it
// was probably meant to be; a setting must not silently stay at its default.
func TestFileUnknownKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "amesh.yaml")
	file := "AMESH_XDS_ADRESS: istiod:15012\namesh_log_level: debug\nFOO_BAR_BAZ: 1\nAMESH_CONFIG_FILE: /x\nISTIO_META_MESH_ID: m\nAMESH_STATUS_ADDR: 127.0.0.1:1\n"
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(append(pod, "AMESH_CONFIG_FILE="+path))
	if err == nil {
		t.Fatal("unknown keys were accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	for _, want := range []string{
		"unknown variable AMESH_XDS_ADRESS (did you mean AMESH_XDS_ADDRESS?)",
		"unknown variable amesh_log_level (did you mean AMESH_LOG_LEVEL?)",
		"unknown variable FOO_BAR_BAZ (the variables are listed",
		"AMESH_CONFIG_FILE cannot be set in the config file",
	} {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, want) && strings.Contains(l, path)
		}
		if !found {
			t.Errorf("no line says %q (with the file's path):\n%s", want, err)
		}
	}
	if len(lines) != 4 {
		t.Errorf("%d lines, want one per unknown key (4):\n%s", len(lines), err)
	}
}

// Every problem is reported at once: the config file's own variables and the xDS ones.
func TestLoadReportsAllProblems(t *testing.T) {
	_, err := Load([]string{"AMESH_CONFIG_FILE=", "AMESH_LOG_LEVEL=loud", "AMESH_COALESCE_WINDOW=soon", "AMESH_XDS_PROTOCOL=rest", "INSTANCE_IP=10.0.0.1"})
	if err == nil {
		t.Fatal("no error")
	}
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) || len(joined.Unwrap()) != 4 {
		t.Fatalf("want 4 separate problems (pod identity, protocol, log level, window), got:\n%v", err)
	}
	for _, want := range []string{"POD_NAME", "AMESH_XDS_PROTOCOL", EnvLogLevel, EnvWindow} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

// The variables the code reads and the ones README.md (and bootstrap's README for the
// node's finer points) documents are the same.
func TestVariablesDocumented(t *testing.T) {
	documented := map[string]bool{} // in either README
	name := regexp.MustCompile("`([A-Z][A-Z0-9_]+)`")
	for _, f := range []string{"README.md", "../xds/bootstrap/README.md"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if !strings.HasPrefix(line, "| `") {
				continue
			}
			first, _, _ := strings.Cut(strings.TrimPrefix(line, "| "), " | ")
			for _, m := range name.FindAllStringSubmatch(first, -1) {
				documented[m[1]] = true
			}
		}
	}
	for _, v := range Variables() {
		if _, ok := documented[v]; !ok {
			t.Errorf("%s is read but documented in neither README", v)
		}
	}
	for v := range documented {
		if v != EnvConfigFile && checkKnown(v) != nil {
			t.Errorf("%s is documented but no code reads it", v)
		}
	}
}
