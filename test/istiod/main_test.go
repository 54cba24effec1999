// Package istiod_test is amesh's real-control-plane tier: etcd, a kube-apiserver and an
// unmodified istiod in Kubernetes mode on loopback (package harness), the scenario of testdata/
// applied through the API server, and amesh connected as a sidecar.
//
// The binaries come from scripts/kube/build.sh and scripts/istiod/build.sh (`make e2e` runs both
// and then these tests). Without them the tests skip, unless CI is set: then they fail.
package istiod_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// env is the control plane shared by every test of the package (starting it takes ~10 s).
// Tests run sequentially and put back whatever they change.
var env struct {
	kube   *harness.KubeCluster
	istiod *harness.Istiod
	err    error // why there is no control plane; tests skip or fail with it
}

var keep = flag.Bool("keep", false, "keep the control plane's state directory (logs) after the run")

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if testing.Short() {
		env.err = errors.New("real-istiod tier skipped in -short mode")
		return m.Run()
	}
	bins, err := harness.FindBinaries()
	if err != nil {
		env.err = err
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "amesh-e2e-")
	if err != nil {
		env.err = err
		return m.Run()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	err = setup(ctx, bins, dir)
	if err != nil {
		env.err = fmt.Errorf("control plane setup failed (state in %s): %w", dir, err)
		*keep = true
	}
	code := m.Run()
	if env.istiod != nil {
		env.istiod.Stop()
	}
	if env.kube != nil {
		env.kube.Stop()
	}
	if code != 0 || *keep {
		fmt.Fprintf(os.Stderr, "e2e state and logs kept in %s\n", dir)
	} else {
		os.RemoveAll(dir)
	}
	return code
}

func setup(ctx context.Context, bins harness.Binaries, dir string) error {
	t0 := time.Now()
	k, err := harness.StartKube(ctx, bins, dir)
	if err != nil {
		return err
	}
	env.kube = k
	if err := k.InstallIstioCRDs(ctx); err != nil {
		return err
	}
	for _, f := range []string{"workloads.yaml", "istio.yaml"} {
		objs, err := readObjects(f)
		if err != nil {
			return err
		}
		if err := k.Client.ApplyAll(ctx, objs); err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
	}
	d, err := harness.StartIstiod(ctx, bins, k, harness.IstiodOptions{
		// Shorter than the 100 ms default so config edits reach amesh sooner; the tests wait
		// on conditions, never on time. Remote JWKS in istiod's hybrid mode: a jwksUri of a
		// mesh service is left to the proxy to fetch (TestRemoteJWKS), any other is still
		// fetched and inlined by istiod (TestRequestAuthentication), as by default.
		Env: []string{"PILOT_DEBOUNCE_AFTER=20ms", "PILOT_JWT_ENABLE_REMOTE_JWKS=true"},
	})
	if err != nil {
		return err
	}
	env.istiod = d
	fmt.Fprintf(os.Stderr, "e2e control plane ready in %v: kube %s, istiod xDS %s (TLS %s)\n",
		time.Since(t0).Round(time.Millisecond), k.Client.Server, d.GRPCAddr, d.SecureGRPCAddr)
	return nil
}

// requireEnv skips (or, under CI, fails) the test when there is no control plane.
func requireEnv(t *testing.T) {
	t.Helper()
	if env.err == nil {
		return
	}
	// Only missing binaries (or -short) may skip, and only outside CI; a control plane that
	// does not come up is a failure.
	if !errors.Is(env.err, harness.ErrNoBinaries) && !testing.Short() {
		t.Fatalf("real-istiod tier: %v", env.err)
	}
	if os.Getenv("CI") != "" && !testing.Short() {
		t.Fatalf("CI is set but the real-istiod tier cannot run: %v", env.err)
	}
	t.Skipf("real-istiod tier: %v", env.err)
}

func readObjects(name string) ([]harness.Object, error) {
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		return nil, err
	}
	return harness.ParseYAML(b)
}
