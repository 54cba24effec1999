package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/amesh-dev/amesh/internal/sink/file"
)

const istiodDir = "../../testdata/istiod/sotw"

// parseConfig decodes a standalone file into kind -> objects.
func parseConfig(t *testing.T, b []byte, f file.Format) map[string][]map[string]any {
	t.Helper()
	if f == file.YAML {
		if !strings.HasSuffix(string(b), "\n#END\n") {
			t.Fatalf("YAML output does not end with #END:\n%s", b)
		}
		var err error
		if b, err = yaml.YAMLToJSON(b); err != nil {
			t.Fatalf("output is not YAML: %v", err)
		}
	}
	var cfg map[string][]map[string]any
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("output does not parse: %v\n%s", err, b)
	}
	return cfg
}

func TestTranslateDir(t *testing.T) {
	code, out, stderr := runCmd("translate", "-dir", istiodDir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	cfg := parseConfig(t, []byte(out), file.YAML)
	if len(cfg["routes"]) == 0 || len(cfg["upstreams"]) == 0 {
		t.Fatalf("no routes or upstreams in:\n%s", out)
	}
	// Every endpoint of the recorded mesh is a node of some upstream.
	nodes := map[string]bool{}
	for _, u := range cfg["upstreams"] {
		ns, _ := u["nodes"].([]any)
		for _, n := range ns {
			nodes[n.(map[string]any)["host"].(string)] = true
		}
	}
	for _, ip := range []string{"127.0.0.21", "127.0.0.22", "127.0.0.23", "127.0.0.31", "127.0.0.32"} {
		if !nodes[ip] {
			t.Errorf("endpoint %s is in no upstream", ip)
		}
	}
	if !strings.HasPrefix(stderr, "translation report: ") {
		t.Errorf("stderr does not start with the report: %q", stderr)
	}

	// JSON carries the same objects.
	code, jsonOut, _ := runCmd("translate", "-dir", istiodDir, "-format", "json")
	if code != 0 {
		t.Fatalf("json: exit %d", code)
	}
	if got := parseConfig(t, []byte(jsonOut), file.JSON); len(got["routes"]) != len(cfg["routes"]) || len(got["upstreams"]) != len(cfg["upstreams"]) {
		t.Errorf("json output has %d routes / %d upstreams, yaml %d / %d", len(got["routes"]), len(got["upstreams"]), len(cfg["routes"]), len(cfg["upstreams"]))
	}

	// -o writes the file instead of stdout.
	path := filepath.Join(t.TempDir(), "apisix.yaml")
	code, out2, _ := runCmd("translate", "-dir", istiodDir, "-o", path)
	written, err := os.ReadFile(path)
	if code != 0 || err != nil || out2 != "" || string(written) != out {
		t.Errorf("-o: exit %d, err %v, stdout %d bytes, file equal to stdout output: %v", code, err, len(out2), string(written) == out)
	}
}

// TestTranslateConfigDump wraps the recorded istiod resources into an Envoy
// /config_dump document (as istioctl proxy-config all -o json prints it, including an
// Istio filter type amesh does not know): translating it must give exactly what
// translating the directory gives.
func TestTranslateConfigDump(t *testing.T) {
	const prefix = "type.googleapis.com/envoy."
	read := func(sub, typ string) []map[string]any {
		files, err := filepath.Glob(filepath.Join(istiodDir, sub, "*.json"))
		if err != nil || len(files) == 0 {
			t.Fatalf("no %s files: %v", sub, err)
		}
		var out []map[string]any
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			m["@type"] = prefix + typ
			out = append(out, m)
		}
		return out
	}
	var listeners, routes, clusters, endpoints []any
	for _, l := range read("lds", "config.listener.v3.Listener") {
		listeners = append(listeners, map[string]any{"name": l["name"], "active_state": map[string]any{"version_info": "1", "listener": l}})
	}
	for _, r := range read("rds", "config.route.v3.RouteConfiguration") {
		routes = append(routes, map[string]any{"version_info": "1", "route_config": r})
	}
	for _, c := range read("cds", "config.cluster.v3.Cluster") {
		clusters = append(clusters, map[string]any{"version_info": "1", "cluster": c})
	}
	for _, e := range read("eds", "config.endpoint.v3.ClusterLoadAssignment") {
		endpoints = append(endpoints, map[string]any{"version_info": "1", "endpoint_config": e})
	}
	doc := map[string]any{"configs": []any{
		map[string]any{"@type": prefix + "admin.v3.BootstrapConfigDump", "bootstrap": map[string]any{}},
		map[string]any{"@type": prefix + "admin.v3.ListenersConfigDump", "dynamic_listeners": listeners},
		map[string]any{"@type": prefix + "admin.v3.RoutesConfigDump", "dynamic_route_configs": routes},
		map[string]any{"@type": prefix + "admin.v3.ClustersConfigDump", "dynamic_active_clusters": clusters},
		map[string]any{"@type": prefix + "admin.v3.EndpointsConfigDump", "dynamic_endpoint_configs": endpoints},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config_dump.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	code, fromDump, stderr := runCmd("translate", "-config-dump", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	_, fromDir, _ := runCmd("translate", "-dir", istiodDir)
	if fromDump != fromDir {
		t.Errorf("config dump and directory translate differently:\n--- dump\n%s\n--- dir\n%s", fromDump, fromDir)
	}
}

func TestTranslateBadInput(t *testing.T) {
	dir := t.TempDir()
	malformed := filepath.Join(dir, "malformed.json")
	os.WriteFile(malformed, []byte(`{"configs": [{"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [`), 0o644)
	notADump := filepath.Join(dir, "list.json")
	os.WriteFile(notADump, []byte(`"just a string"`), 0o644)
	aFile := filepath.Join(dir, "file.txt")
	os.WriteFile(aFile, []byte("x"), 0o644)
	badResource := filepath.Join(dir, "bad")
	os.MkdirAll(filepath.Join(badResource, "cds"), 0o755)
	os.WriteFile(filepath.Join(badResource, "cds", "c.json"), []byte(`{"name": "c", "type": "NOT_A_TYPE"}`), 0o644)

	for _, c := range []struct {
		name    string
		args    []string
		mention string
	}{
		{"malformed dump", []string{"-config-dump", malformed}, "malformed.json"},
		{"not a dump", []string{"-config-dump", notADump}, "config dump"},
		{"missing dump", []string{"-config-dump", filepath.Join(dir, "nope.json")}, "nope.json"},
		{"missing directory", []string{"-dir", filepath.Join(dir, "nope")}, "nope"},
		{"file as directory", []string{"-dir", aFile}, "file.txt"},
		{"bad resource", []string{"-dir", badResource}, "c.json"},
		{"both inputs", []string{"-dir", istiodDir, "-config-dump", malformed}, "exactly one"},
		{"no input", nil, "exactly one"},
		{"bad format", []string{"-dir", istiodDir, "-format", "xml"}, "xml"},
		{"bad log level", []string{"-dir", istiodDir, "-log-level", "loud"}, "loud"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCmd(append([]string{"translate"}, c.args...)...)
			assertOneLineError(t, code, stderr, "amesh translate: ", c.mention)
			if out != "" {
				t.Errorf("stdout not empty on error: %q", out)
			}
		})
	}
}
