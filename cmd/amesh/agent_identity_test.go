package main

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
)

// TestAgentWorkloadCertDir checks that -workload-cert-dir reaches the pipeline: the
// standalone file holds the workload certificate as APISIX ssls (with the key, which
// APISIX needs), and neither the command's output nor its status views show the key.
func TestAgentWorkloadCertDir(t *testing.T) {
	setPodEnv(t)
	ca, err := identitytest.NewCA("mesh")
	if err != nil {
		t.Fatal(err)
	}
	files, err := ca.Issue(identitytest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := files.Write(dir); err != nil {
		t.Fatal(err)
	}
	srv := reviewsServer(t)

	ctx, cancel := withContext(t)
	statusAddr := freeAddr(t)
	out := filepath.Join(t.TempDir(), "apisix.yaml")
	stdout, stderr := newSyncBuffer(), newSyncBuffer()
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"agent", "-xds-address", srv.Addr(), "-workload-cert-dir", dir,
			"-output", out, "-status-addr", statusAddr, "-log-level", "debug"}, stdout, stderr)
	}()
	waitFile(t, out, 30*time.Second, func(b []byte) bool {
		var cfg struct {
			SSLs []struct{ ID, Cert, Key string }
		}
		if yaml.Unmarshal(b, &cfg) != nil || len(cfg.SSLs) != 2 {
			return false
		}
		for _, s := range cfg.SSLs {
			if s.Cert != string(files.Chain) || s.Key != string(files.Key) {
				return false
			}
		}
		return true
	})
	var views strings.Builder
	for _, p := range []string{"/debug/apisix", "/debug/report", "/debug/identity", "/debug/xds", "/metrics"} {
		_, body := httpGet(t, "http://"+statusAddr+p)
		views.WriteString(body)
	}
	if !strings.Contains(views.String(), `"spiffe": "spiffe://cluster.local/ns/default/sa/productpage"`) {
		t.Errorf("/debug/identity does not name the identity:\n%s", views.String())
	}
	stopAgent(t, cancel, done, stderr)
	for what, s := range map[string]string{"stdout": stdout.String(), "stderr (the log)": stderr.String(), "status views": views.String()} {
		if m := identitytest.Leaks([]byte(s), files.Key); m != "" {
			t.Errorf("key material %q in %s", m, what)
		}
	}
	if !strings.Contains(stderr.String(), "workload identity published") {
		t.Errorf("the log does not say an identity was published:\n%s", stderr.String())
	}
}
