package harness

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
)

// Files a Debian nginx needs to load the original-destination module (nginx/original_dst);
// scripts/install-test-deps.sh installs them.
var originalDstDeps = []string{
	"/usr/sbin/nginx",
	"/usr/share/nginx/src/conf_flags",             // nginx-dev
	"/usr/lib/nginx/modules/ngx_stream_module.so", // libnginx-mod-stream
}

var (
	moduleOnce sync.Once
	moduleDir  string
	moduleErr  error
)

// OriginalDstModule returns the directory holding ngx_http_amesh_original_dst_module.so,
// ngx_stream_amesh_original_dst_module.so (and ngx_http_amesh_upstream_tls_module.so) built
// for the installed nginx by
// scripts/nginx-module/build.sh (cached; built on first use). A missing package is reported as
// ErrNoBinaries; a failed build is a plain error.
func OriginalDstModule() (string, error) {
	moduleOnce.Do(func() {
		for _, p := range originalDstDeps {
			if _, err := os.Stat(p); err != nil {
				moduleErr = fmt.Errorf("%w: %s is missing; run scripts/install-test-deps.sh", ErrNoBinaries, p)
				return
			}
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "nginx-module", "build.sh")
		var stderr bytes.Buffer
		cmd := exec.Command("bash", script)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			moduleErr = fmt.Errorf("%s: %v\n%s", script, err, stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		moduleDir = lines[len(lines)-1]
	})
	return moduleDir, moduleErr
}

// ErrNoAPISIX means AMESH_APISIX_HOME (an APISIX installation with its OpenResty in
// openresty/) or AMESH_OPENRESTY_SRC (the source of that OpenResty release) is not set: APISIX
// is in no package registry, so CI has neither and the tests that need them skip.
var ErrNoAPISIX = errors.New("AMESH_APISIX_HOME or AMESH_OPENRESTY_SRC is not set")

var (
	openrestyOnce    sync.Once
	openrestyNginx   string
	openrestyModules string
	openrestyErr     error
)

// APISIXOpenResty returns the nginx binary of APISIX's OpenResty in $AMESH_APISIX_HOME and the
// directory holding the original-destination modules built for it from $AMESH_OPENRESTY_SRC
// (an unpacked OpenResty release) by scripts/nginx-module/build-openresty.sh (cached; built on
// first use, about two minutes). The source must be of the release the binary reports.
func APISIXOpenResty() (nginx, modules string, err error) {
	openrestyOnce.Do(func() {
		home, src := os.Getenv("AMESH_APISIX_HOME"), os.Getenv("AMESH_OPENRESTY_SRC")
		if home == "" || src == "" {
			openrestyErr = ErrNoAPISIX
			return
		}
		nginx = filepath.Join(home, "openresty", "bin", "openresty")
		v, err := exec.Command(nginx, "-v").CombinedOutput()
		if err != nil {
			openrestyErr = fmt.Errorf("%s -v: %v\n%s", nginx, err, v)
			return
		}
		release := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(v)), "nginx version: openresty/"))
		if want := "openresty-" + release; filepath.Base(filepath.Clean(src)) != want {
			openrestyErr = fmt.Errorf("AMESH_OPENRESTY_SRC=%s: %s is OpenResty %s, want the source of that release (a directory %s)", src, nginx, release, want)
			return
		}
		_, file, _, _ := runtime.Caller(0)
		script := filepath.Join(filepath.Dir(file), "..", "..", "..", "scripts", "nginx-module", "build-openresty.sh")
		var stderr bytes.Buffer
		cmd := exec.Command("bash", script, src)
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			openrestyErr = fmt.Errorf("%s: %v\n%s", script, err, stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		openrestyNginx, openrestyModules = nginx, lines[len(lines)-1]
	})
	return openrestyNginx, openrestyModules, openrestyErr
}
