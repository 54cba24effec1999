package sidecar

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/apisix/schema"
	"github.com/amesh-dev/amesh/internal/config"
	"github.com/amesh-dev/amesh/internal/identity"
	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/translate"
)

// ssls reads the ssl objects of the standalone file, by id.
func ssls(t *testing.T, path string) map[string]map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct{ SSLs []map[string]any }
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s: %v\n%s", path, err, b)
	}
	out := map[string]map[string]any{}
	for _, s := range cfg.SSLs {
		id, _ := s["id"].(string)
		out[id] = s
		raw, _ := json.Marshal(s)
		if err := schema.Validate("/ssls/"+id, raw); err != nil {
			t.Errorf("ssl %s fails APISIX's schema: %v", id, err)
		}
	}
	return out
}

// holds reports whether the file's ssl objects carry exactly files.
func holds(got map[string]map[string]any, f identitytest.Files) bool {
	c, s := got[translate.ClientSSLID], got[translate.ServerSSLID]
	if c == nil || s == nil {
		return false
	}
	client, _ := s["client"].(map[string]any)
	return c["cert"] == string(f.Chain) && c["key"] == string(f.Key) && c["type"] == "client" &&
		s["cert"] == string(f.Chain) && s["key"] == string(f.Key) && s["type"] == "server" && s["sni"] == "*" &&
		client["ca"] == string(f.Root)
}

// The whole pipeline with a certificate directory: the standalone file's ssl objects
// carry the files (and follow a rotation, and keep the last good set through one that
// stops half-way), while the key reaches none of the status server's views, its
// report or the log.
func TestWorkloadIdentity(t *testing.T) {
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	issue := func() identitytest.Files {
		f, err := ca.Issue(identitytest.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	dir := t.TempDir()
	first := issue()
	if err := first.Write(dir); err != nil {
		t.Fatal(err)
	}
	xds := startXDS(t)
	logs := &identitytest.Log{}
	s, out := startLogged(t, loadConfig(t, "AMESH_XDS_ADDRESS="+xds.Addr(), config.EnvWorkloadCert+"="+dir),
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	h := s.Handler()
	waitFor(t, "the identity in the file", func() bool { return holds(ssls(t, out), first) })
	waitStatus(t, h, "/debug/identity", `"serial": "`+first.Serial+`"`)

	// A rotation: the file follows.
	next := issue()
	if err := next.Write(dir); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the rotated identity in the file", func() bool { return holds(ssls(t, out), next) })

	// A rotation that stops after the key: the last good set stays, and the problem
	// is reported.
	stuck := issue()
	if err := identitytest.WriteFile(filepath.Join(dir, identity.KeyFile), stuck.Key); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, h, "/debug/report", "workload_certificate")
	waitStatus(t, h, "/debug/identity", `"files": "inconsistent"`)
	if !holds(ssls(t, out), next) {
		t.Fatal("a mismatched key replaced the identity in force")
	}

	views := []string{"/", "/healthz", "/ready", "/metrics", "/debug/xds", "/debug/apisix", "/debug/apisix?kind=ssls",
		"/debug/report", "/debug/controller", "/debug/identity"}
	var all []byte
	for _, v := range views {
		all = append(all, get(h, v)...)
	}
	if !strings.Contains(get(h, "/debug/apisix?kind=ssls"), `"cert": "-----BEGIN CERTIFICATE-----`) {
		t.Errorf("/debug/apisix does not show the ssl objects' certificates:\n%s", get(h, "/debug/apisix?kind=ssls"))
	}
	all = append(all, logs.String()...)
	for _, f := range []identitytest.Files{first, next, stuck} {
		if m := identitytest.Leaks(all, f.Key); m != "" {
			t.Errorf("key material %q in the status views or the log", m)
		}
	}
	if !strings.Contains(logs.String(), "workload identity published") {
		t.Errorf("the log does not say an identity was published:\n%s", logs)
	}
}

// With the directory off, nothing watches it: no ssl objects, no identity view.
func TestWorkloadIdentityOff(t *testing.T) {
	xds := startXDS(t)
	s, out := start(t, loadConfig(t, "AMESH_XDS_ADDRESS="+xds.Addr(), config.EnvWorkloadCert+"=off"))
	if s.certs != nil {
		t.Fatal("a watcher was built for a directory that is off")
	}
	if got := ssls(t, out); len(got) != 0 {
		t.Errorf("ssl objects without a directory: %v", got)
	}
	if v := get(s.Handler(), "/debug/identity"); !strings.Contains(v, `"configured": false`) {
		t.Errorf("/debug/identity = %s", v)
	}
}

// Upstream mTLS presents the ssl object the watched directory's identity becomes and
// trusts the roots beside it; with the directory off there is no client certificate, so
// the translation leaves out (and reports) the endpoints Envoy would reach with mTLS.
func TestTranslateOptionsFollowCertDir(t *testing.T) {
	on := translateOptions(config.Config{WorkloadCertDir: "/var/lib/istio/data", OriginalDstVar: "connection_original_dst"})
	if on.WorkloadCertID != translate.ClientSSLID || on.MeshRootFile != "/var/lib/istio/data/"+identity.RootFile ||
		on.OriginalDstVar != "connection_original_dst" {
		t.Errorf("with a certificate directory: %+v", on)
	}
	if off := translateOptions(config.Config{}); off.WorkloadCertID != "" || off.MeshRootFile != "" {
		t.Errorf("without a certificate directory: %+v", off)
	}
}
