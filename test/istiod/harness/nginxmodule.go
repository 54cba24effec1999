package harness

import (
	"bytes"
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

// OriginalDstModule returns the directory holding ngx_http_amesh_original_dst_module.so and
// ngx_stream_amesh_original_dst_module.so built for the installed nginx by
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
