// Package install_test checks what a user installs to run APISIX as the Istio sidecar: the
// charts/amesh Helm chart rendered with Helm's own engine for several value sets, its injection
// template installed into istiod's injector through Istio's own istiod chart and run by Istio's
// own injection code (istio.io/istio/pkg/kube/inject), the rendered objects and the injected
// pod validated by a real kube-apiserver (server-side dry run), the sidecar image's
// Dockerfile against the paths the configuration uses, and, with AMESH_APISIX_HOME, the
// sidecar's APISIX configuration run in real APISIX (apisix_test.go).
//
// A module of its own, so that Helm's and Istio's dependencies stay out of amesh's main module.
// The kube-apiserver comes from scripts/kube/build.sh (test/istiod/harness); without it the
// dry-run test skips, unless CI is set.
package install_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// kube is the API server shared by the package's tests (nil with kubeErr saying why).
var (
	kube    *harness.KubeCluster
	kubeErr error
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() {
		kubeErr = errors.New("kube-apiserver not started in -short mode")
		return m.Run()
	}
	bins, err := harness.FindBinaries()
	if err != nil {
		kubeErr = err
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "amesh-install-")
	if err != nil {
		kubeErr = err
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	kube, kubeErr = harness.StartKube(ctx, bins, dir)
	if kubeErr != nil {
		kubeErr = fmt.Errorf("kube-apiserver did not start (state in %s): %w", dir, kubeErr)
		return m.Run()
	}
	code := m.Run()
	kube.Stop()
	if code == 0 {
		os.RemoveAll(dir)
	} else {
		fmt.Fprintf(os.Stderr, "kube-apiserver state and logs kept in %s\n", dir)
	}
	return code
}

func requireKube(t *testing.T) *harness.Kube {
	t.Helper()
	if kubeErr == nil {
		return kube.Client
	}
	if !errors.Is(kubeErr, harness.ErrNoBinaries) && !testing.Short() {
		t.Fatal(kubeErr)
	}
	if os.Getenv("CI") != "" && !testing.Short() {
		t.Fatalf("CI is set but there is no kube-apiserver: %v", kubeErr)
	}
	t.Skip(kubeErr)
	return nil
}
