package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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

// sampleDump is the sample config dump: the recorded istiod resources in Envoy's
// /config_dump?include_eds shape (testdata/envoy/README.md).
const sampleDump = "../../testdata/envoy/config_dump.json"

// writeConfigDump returns the path of the sample config dump, with its endpoints
// section, or a copy without it (Envoy's /config_dump without ?include_eds).
func writeConfigDump(t *testing.T, withEDS bool) string {
	t.Helper()
	if withEDS {
		return sampleDump
	}
	b, err := os.ReadFile(sampleDump)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Configs []map[string]any `json:"configs"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var kept []map[string]any
	for _, c := range doc.Configs {
		if c["@type"] != "type.googleapis.com/envoy.admin.v3.EndpointsConfigDump" {
			kept = append(kept, c)
		}
	}
	if len(kept) != len(doc.Configs)-1 {
		t.Fatal("the sample has no endpoints section")
	}
	b, err = json.Marshal(map[string]any{"configs": kept})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "config_dump.json")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestTranslateConfigDump translates the sample config dump, the recorded istiod
// resources as istioctl proxy-config all -o json prints them (including an Istio
// filter type amesh does not know): it must give exactly what translating the
// directory gives.
func TestTranslateConfigDump(t *testing.T) {
	path := sampleDump
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

// A directory or file given without a flag is what a user types first.
func TestTranslatePositional(t *testing.T) {
	_, want, _ := runCmd("translate", "-dir", istiodDir)
	if code, out, stderr := runCmd("translate", istiodDir); code != 0 || out != want {
		t.Errorf("amesh translate DIR: exit %d, same output as -dir: %v; stderr %s", code, out == want, stderr)
	}
	dumpFile := writeConfigDump(t, true)
	_, wantDump, _ := runCmd("translate", "-config-dump", dumpFile)
	if code, out, stderr := runCmd("translate", "-format", "yaml", dumpFile); code != 0 || out != wantDump {
		t.Errorf("amesh translate FILE: exit %d, same output as -config-dump: %v; stderr %s", code, out == wantDump, stderr)
	}
	for _, args := range [][]string{{istiodDir, istiodDir}, {"-dir", istiodDir, istiodDir}} {
		if code, _, _ := runCmd(append([]string{"translate"}, args...)...); code != 2 {
			t.Errorf("amesh translate %v: exit %d, want 2", args, code)
		}
	}
}

// Input without a single resource is an error that says where it looked, never an
// empty configuration "translated faithfully".
func TestTranslateNothingFound(t *testing.T) {
	empty := t.TempDir()
	unrelated := t.TempDir()
	os.WriteFile(filepath.Join(unrelated, "notes.txt"), []byte("hello"), 0o644)
	os.MkdirAll(filepath.Join(unrelated, "src"), 0o755)
	emptyDump := filepath.Join(t.TempDir(), "empty.json")
	os.WriteFile(emptyDump, []byte(`{"configs":[]}`), 0o644)
	onlyEDS := t.TempDir()
	os.MkdirAll(filepath.Join(onlyEDS, "eds"), 0o755)
	eds, _ := os.ReadFile(filepath.Join(istiodDir, "eds", "outbound_9080__reviews.default.svc.cluster.local.json"))
	os.WriteFile(filepath.Join(onlyEDS, "eds", "e.json"), eds, 0o644)
	for _, c := range []struct {
		name     string
		args     []string
		mentions []string
	}{
		{"empty directory", []string{"-dir", empty}, []string{"nothing to translate", empty, "lds/"}},
		{"unrelated files", []string{unrelated}, []string{"nothing to translate", unrelated}},
		{"one level too deep", []string{"-dir", filepath.Join(istiodDir, "lds")}, []string{"nothing to translate", "give the directory above it"}},
		{"empty config dump", []string{"-config-dump", emptyDump}, []string{"nothing to translate", "no listeners, route configurations, clusters or endpoints"}},
		{"endpoints only", []string{onlyEDS}, []string{"nothing to translate", "1 load assignments", "no APISIX object"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, stderr := runCmd(append([]string{"translate"}, c.args...)...)
			assertOneLineError(t, code, stderr, "amesh translate: ", c.mentions[0])
			for _, m := range c.mentions[1:] {
				if !strings.Contains(stderr, m) {
					t.Errorf("stderr %q does not mention %q", stderr, m)
				}
			}
			if out != "" {
				t.Errorf("stdout not empty: %q", out)
			}
		})
	}
}

// translate reads regular files only and at most -max-bytes: /dev/zero (directly or
// through a symbolic link) would grow without end, a named pipe could block forever.
func TestTranslateReadLimits(t *testing.T) {
	dir := t.TempDir()
	zeroLink := filepath.Join(dir, "zero")
	os.MkdirAll(filepath.Join(zeroLink, "cds"), 0o755)
	if err := os.Symlink("/dev/zero", filepath.Join(zeroLink, "cds", "c.json")); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo.json")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	fifoDir := filepath.Join(dir, "fifodir")
	os.MkdirAll(filepath.Join(fifoDir, "lds"), 0o755)
	if err := syscall.Mkfifo(filepath.Join(fifoDir, "lds", "l.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	dumpFile := writeConfigDump(t, true)
	st, _ := os.Stat(dumpFile)
	for _, c := range []struct {
		name    string
		args    []string
		mention string
	}{
		{"config dump /dev/zero", []string{"-config-dump", "/dev/zero"}, "a device, not a regular file"},
		{"symlink to /dev/zero", []string{"-dir", zeroLink}, "a device, not a regular file"},
		{"named pipe", []string{"-config-dump", fifo}, "a named pipe, not a regular file"},
		{"named pipe in a directory", []string{fifoDir}, "a named pipe, not a regular file"},
		{"over the limit", []string{"-config-dump", dumpFile, "-max-bytes", strconv.FormatInt(st.Size()-1, 10)}, "raise -max-bytes"},
		{"directory over the limit", []string{"-dir", istiodDir, "-max-bytes", "10KiB"}, "more than 10240 bytes"},
		{"bad limit", []string{"-dir", istiodDir, "-max-bytes", "lots"}, "lots"},
	} {
		t.Run(c.name, func(t *testing.T) {
			done := make(chan struct{})
			var code int
			var stderr string
			go func() {
				defer close(done)
				code, _, stderr = runCmd(append([]string{"translate"}, c.args...)...)
			}()
			select {
			case <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("translate is still reading")
			}
			assertOneLineError(t, code, stderr, "amesh translate: ", c.mention)
		})
	}
	// Exactly at the limit is fine.
	if code, _, stderr := runCmd("translate", "-config-dump", dumpFile, "-max-bytes", strconv.FormatInt(st.Size(), 10)); code != 0 {
		t.Errorf("input of exactly -max-bytes: exit %d: %s", code, stderr)
	}
}

// A config dump without endpoints (Envoy's /config_dump without ?include_eds) says how
// to take one with them.
func TestTranslateConfigDumpWithoutEndpoints(t *testing.T) {
	code, _, stderr := runCmd("translate", "-config-dump", writeConfigDump(t, false))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{"hint: the config dump has no endpoints", "istioctl proxy-config all POD -o json", "include_eds"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, ": : ") {
		t.Errorf("a report line has an empty field:\n%s", stderr)
	}
	if _, _, stderr := runCmd("translate", "-config-dump", writeConfigDump(t, true)); strings.Contains(stderr, "hint:") {
		t.Errorf("hint with endpoints present:\n%s", stderr)
	}
}

// With the workload identity, istiod's auto-mTLS endpoints are reached through
// amesh-upstream-tls; without it they are left out and said so.
func TestTranslateWorkloadIdentity(t *testing.T) {
	const mtlsDir = "../../testdata/istiod/mtls"
	code, out, stderr := runCmd("translate", "-workload-cert-id", "workload", "-mesh-root-file", "/var/lib/istio/data/root-cert.pem", mtlsDir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if !strings.Contains(out, `ssl_id: "workload"`) || !strings.Contains(out, `file: "/var/lib/istio/data/root-cert.pem"`) {
		t.Errorf("no route names the workload identity:\n%s", out)
	}
	code, _, stderr = runCmd("translate", mtlsDir)
	if code != 0 || !strings.Contains(stderr, "the 2 endpoint(s) Envoy reaches with this transport socket are left out") {
		t.Errorf("exit %d without the identity; stderr:\n%s", code, stderr)
	}
}
