package harness

import (
	"os"
	"path/filepath"
)

// LayOutAPISIX makes dir an instance home of the APISIX installation in home (such as
// $AMESH_APISIX_HOME), for APISIX's CLI run in dir (./bin/apisix init) and its nginx (-p dir):
// links to the installation's code (apisix/, bin/, deps/) and certificates (conf/cert, which
// nginx.conf's HTTPS listener names), copies of conf/mime.types and conf/debug.yaml, and conf/
// and logs/ of its own for the instance's config.yaml, nginx.conf and logs.
func LayOutAPISIX(dir, home string) error {
	for _, d := range []string{"conf", "logs"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for _, l := range []string{"apisix", "bin", "deps", "conf/cert"} {
		if err := os.Symlink(filepath.Join(home, l), filepath.Join(dir, l)); err != nil {
			return err
		}
	}
	for _, f := range []string{"conf/mime.types", "conf/debug.yaml"} {
		b, err := os.ReadFile(filepath.Join(home, f))
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
