package harness

import (
	"fmt"
	"os"
	"path/filepath"
)

// FindPilotAgent locates istio's pilot-agent (the sidecar's istio-agent, also the command that
// holds istio-iptables): $AMESH_PILOT_AGENT when set, else the cache that
// `scripts/istiod/build.sh pilot-agent` fills. The error wraps ErrNoBinaries.
func FindPilotAgent() (string, error) {
	cache := os.Getenv("AMESH_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "amesh")
	}
	p := envOr("AMESH_PILOT_AGENT", filepath.Join(cache, "istiod", IstioModuleVersion, "pilot-agent"))
	if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
		return p, fmt.Errorf("%w: missing %s; run `bash scripts/istiod/build.sh pilot-agent`", ErrNoBinaries, p)
	}
	return p, nil
}
