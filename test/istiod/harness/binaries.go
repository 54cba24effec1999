package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
)

// IstioModuleVersion is the istio.io/istio version amesh is tested against; scripts/istiod/build.sh
// builds the same one.
const IstioModuleVersion = "v0.0.0-20260827124520-eed52ebb66ad"

// KubeVersion is the kube-apiserver version scripts/kube/build.sh builds.
const KubeVersion = "1.37.2"

// Binaries are the executables the harness runs.
type Binaries struct {
	Etcd          string
	KubeAPIServer string
	Istiod        string
}

// ErrNoBinaries means the binaries have not been built on this machine.
var ErrNoBinaries = errors.New("control-plane binaries not built")

// FindBinaries locates the binaries: $AMESH_ETCD, $AMESH_KUBE_APISERVER and $AMESH_ISTIOD when
// set, else the caches that scripts/kube/build.sh and scripts/istiod/build.sh fill. The error
// wraps ErrNoBinaries and says how to build what is missing.
func FindBinaries() (Binaries, error) {
	cache := os.Getenv("AMESH_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return Binaries{}, err
		}
		cache = filepath.Join(home, ".cache", "amesh")
	}
	kubeDir := filepath.Join(cache, "kube", "k8s-"+KubeVersion)
	b := Binaries{
		Etcd:          envOr("AMESH_ETCD", filepath.Join(kubeDir, "etcd")),
		KubeAPIServer: envOr("AMESH_KUBE_APISERVER", filepath.Join(kubeDir, "kube-apiserver")),
		Istiod:        envOr("AMESH_ISTIOD", filepath.Join(cache, "istiod", IstioModuleVersion, "pilot-discovery")),
	}
	var missing []string
	for _, p := range []string{b.Etcd, b.KubeAPIServer, b.Istiod} {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("%w: missing %v; run `bash scripts/kube/build.sh && bash scripts/istiod/build.sh` (or `make e2e`)", ErrNoBinaries, missing)
	}
	return b, nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

var (
	istioDirOnce sync.Once
	istioDir     string
	istioDirErr  error
)

// IstioModuleDir returns the istio module's directory in the Go module cache, downloading it
// through the module proxy when absent (it is already there after scripts/istiod/build.sh).
func IstioModuleDir() (string, error) {
	istioDirOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "amesh-istio-mod")
		if err != nil {
			istioDirErr = err
			return
		}
		defer os.RemoveAll(tmp)
		// Run outside any module so no go.mod is consulted or touched.
		cmd := exec.Command("go", "mod", "download", "-json", "istio.io/istio@"+IstioModuleVersion)
		cmd.Dir = tmp
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=")
		out, err := cmd.Output()
		if err != nil {
			istioDirErr = fmt.Errorf("go mod download istio.io/istio@%s: %w", IstioModuleVersion, err)
			return
		}
		var m struct{ Dir, Error string }
		if err := json.Unmarshal(out, &m); err != nil {
			istioDirErr = fmt.Errorf("go mod download: %w", err)
			return
		}
		if m.Error != "" || m.Dir == "" {
			istioDirErr = fmt.Errorf("go mod download istio.io/istio@%s: %s", IstioModuleVersion, m.Error)
			return
		}
		istioDir = m.Dir
	})
	return istioDir, istioDirErr
}

// CRDFile is the manifest with all of Istio's CRDs inside the istio module.
func CRDFile() (string, error) {
	dir, err := IstioModuleDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "manifests", "charts", "base", "files", "crd-all.gen.yaml"), nil
}
