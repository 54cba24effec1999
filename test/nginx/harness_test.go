package nginx

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/amesh-dev/amesh/internal/xdstest"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// What the harness needs of the machine; scripts/install-test-deps.sh installs it.
var required = []string{
	"/usr/sbin/nginx",
	"/usr/lib/nginx/modules/ngx_http_lua_module.so",
	"/usr/lib/nginx/modules/ndk_http_module.so",
	"/usr/share/lua/5.1/resty/core.lua",
}

// requireNginx skips the test when nginx is missing, unless CI is set: in CI a
// missing dependency is a failure, not a reason to pass.
// nginxModules returns the directory of amesh's nginx modules built for Debian's nginx
// (scripts/nginx-module/build.sh, cached); it skips the test when they cannot be built,
// except in CI, where they must be.
func nginxModules(t testing.TB) string {
	t.Helper()
	mods, err := harness.OriginalDstModule()
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip(err)
		}
		t.Fatal(err)
	}
	return mods
}

func requireNginx(t testing.TB) {
	t.Helper()
	for _, p := range required {
		if _, err := os.Stat(p); err != nil {
			msg := fmt.Sprintf("%s is missing: run scripts/install-test-deps.sh", p)
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
}

var (
	libOnce sync.Once
	libPath string
	libErr  error
)

// buildLib builds libxds.so once per test binary run.
func buildLib(t testing.TB) string {
	t.Helper()
	libOnce.Do(func() {
		dir, err := os.MkdirTemp("", "libxds-")
		if err != nil {
			libErr = err
			return
		}
		libPath = filepath.Join(dir, "libxds.so")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-o", libPath, "github.com/amesh-dev/amesh/cmd/libxds")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			libErr = fmt.Errorf("building libxds.so: %v\n%s", err, out)
		}
	})
	if libErr != nil {
		t.Fatal(libErr)
	}
	return libPath
}

// options for one nginx.
type options struct {
	Workers  int
	DictSize string // size of xds-config, e.g. "10m"
	Window   time.Duration
	Protocol string // "delta" (default) or "sotw"
	// Reader is how every worker follows the dict (harness.lua): "full" (default),
	// "stock" or "amesh"; View makes the amesh reader publish every object's
	// modifiedIndex.
	Reader string
	View   bool
	// VersionDictSize is the size of xds-config-version (default "1m").
	VersionDictSize string
	// CertDir is AMESH_WORKLOAD_CERT_DIR (default "off": no identity is watched, so the
	// translation is expected's, without upstream mTLS).
	CertDir string
}

// instance is one running nginx with libxds.so pointed at a fake xDS server.
type instance struct {
	t          testing.TB
	opts       options
	prefix     string
	port       int
	statusAddr string
	xds        *xdstest.Server
	cmd        *exec.Cmd
	exited     chan struct{}
	env        []string
}

var envNames = []string{
	"AMESH_XDS_ADDRESS", "AMESH_XDS_PROTOCOL", "POD_NAME", "POD_NAMESPACE", "INSTANCE_IP",
	"AMESH_LABELS_FILE", "AMESH_CONFIG_FILE", "AMESH_LOG_FILE", "AMESH_LOG_LEVEL",
	"AMESH_STATUS_ADDR", "AMESH_COALESCE_WINDOW", "AMESH_ORIGINAL_DST_VAR", "AMESH_WORKLOAD_CERT_DIR",
}

// start runs nginx against xds (which the test owns).
func start(t testing.TB, xds *xdstest.Server, o options) *instance {
	t.Helper()
	requireNginx(t)
	buildLib(t)
	if o.Workers == 0 {
		o.Workers = 2
	}
	if o.DictSize == "" {
		o.DictSize = "32m"
	}
	if o.Window == 0 {
		o.Window = 20 * time.Millisecond
	}
	if o.Protocol == "" {
		o.Protocol = "delta"
	}
	if o.Reader == "" {
		o.Reader = "full"
	}
	if o.VersionDictSize == "" {
		o.VersionDictSize = "1m"
	}
	n := &instance{t: t, opts: o, prefix: t.TempDir(), port: freePort(t), xds: xds, exited: make(chan struct{})}
	if o.CertDir == "" {
		o.CertDir = "off"
	}
	n.statusAddr = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n.env = []string{
		"AMESH_XDS_ADDRESS=" + xds.Addr(), "AMESH_XDS_PROTOCOL=" + o.Protocol,
		"POD_NAME=apisix-0", "POD_NAMESPACE=default", "INSTANCE_IP=10.1.2.3",
		"AMESH_LABELS_FILE=/nonexistent", "AMESH_CONFIG_FILE=", "AMESH_LOG_FILE=" + filepath.Join(n.prefix, "amesh.log"),
		"AMESH_LOG_LEVEL=debug", "AMESH_STATUS_ADDR=" + n.statusAddr, "AMESH_COALESCE_WINDOW=" + o.Window.String(),
		"AMESH_ORIGINAL_DST_VAR=server_port", "AMESH_WORKLOAD_CERT_DIR=" + o.CertDir,
	}
	n.writeConf()
	n.cmd = exec.Command("/usr/sbin/nginx", "-p", n.prefix, "-c", filepath.Join(n.prefix, "nginx.conf"))
	n.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, n.env...)
	var stdout, stderr bytes.Buffer
	n.cmd.Stdout = &stdout // must stay empty: nothing in the library writes to stdout
	n.cmd.Stderr = &stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = n.cmd.Wait(); close(n.exited) }()
	t.Cleanup(func() {
		n.stop()
		if stdout.Len() > 0 {
			t.Errorf("nginx's stdout is not empty:\n%s", tail(stdout.Bytes(), 4096))
		}
		if t.Failed() || os.Getenv("AMESH_TEST_LOGS") != "" {
			for _, f := range []string{"error.log", "amesh.log"} {
				b, _ := os.ReadFile(filepath.Join(n.prefix, f))
				t.Logf("--- %s (last 4k) ---\n%s", f, tail(b, 4096))
			}
			t.Logf("--- nginx stderr ---\n%s", tail(stderr.Bytes(), 4096))
		}
	})
	n.waitHTTP()
	return n
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (n *instance) writeConf() {
	dir, err := filepath.Abs(".")
	if err != nil {
		n.t.Fatal(err)
	}
	tmpl := template.Must(template.New("nginx.conf.tmpl").Option("missingkey=error").ParseFiles(filepath.Join(dir, "nginx.conf.tmpl")))
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, map[string]any{
		"Root": os.Geteuid() == 0, "Workers": n.opts.Workers, "Prefix": n.prefix, "Env": envNames,
		"Dir": dir, "LuaDir": filepath.Join(dir, "..", "..", "lua"), "DictSize": n.opts.DictSize,
		"VersionDictSize": n.opts.VersionDictSize, "Reader": n.opts.Reader, "View": n.opts.View,
		"Lib": libPath, "Port": n.port, "Poll": poll(n.opts.Reader),
	})
	if err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.prefix, "nginx.conf"), buf.Bytes(), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// poll is the readers' poll interval in seconds: amesh's provider polls at 10 ms.
func poll(reader string) float64 {
	if reader == "full" {
		return 0.02
	}
	return 0.01
}

// stop stops nginx (fast shutdown) and waits for it.
func (n *instance) stop() { terminate(n.cmd, n.exited, 10*time.Second) }

// terminate sends cmd's process SIGTERM and waits for exited, killing it after d.
func terminate(cmd *exec.Cmd, exited <-chan struct{}, d time.Duration) {
	if cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// signal runs `nginx -s sig` like an operator would.
func (n *instance) signal(sig string) {
	n.t.Helper()
	cmd := exec.Command("/usr/sbin/nginx", "-p", n.prefix, "-c", filepath.Join(n.prefix, "nginx.conf"), "-s", sig)
	if out, err := cmd.CombinedOutput(); err != nil {
		n.t.Fatalf("nginx -s %s: %v\n%s", sig, err, out)
	}
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func (n *instance) get(path string) ([]byte, error) {
	resp, err := httpClient.Get(fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %s: %s", path, resp.Status, b)
	}
	return b, err
}

func (n *instance) waitHTTP() {
	n.t.Helper()
	waitFor(n.t, "nginx to answer", func() bool {
		select {
		case <-n.exited:
			n.t.Fatal("nginx exited at start")
		default:
		}
		_, err := n.get("/version")
		return err == nil
	})
}

// dump is GET /dump.
type dump struct {
	Version   *string            `json:"version"`
	Keys      map[string]string  `json:"keys"`
	Digest    string             `json:"digest"`
	LoaderPID int                `json:"loader_pid"`
	Loads     int                `json:"loads"`
	Workers   map[string]workerV `json:"workers"`
	FreeSpace int64              `json:"free_space"`
	// Readers and Views are what the stock and amesh readers publish, by worker id.
	Readers map[string]readerV            `json:"readers"`
	Views   map[string]map[string]float64 `json:"views"`
}

// readerV is one worker's state in the stock or amesh reader.
type readerV struct {
	Version      string         `json:"version"`
	Digest       string         `json:"digest"`
	Keys         int            `json:"keys"`
	PID          int            `json:"pid"`
	ConfVersions map[string]int `json:"conf_versions"`
	CPUms        float64        `json:"cpu_ms"`
	LastCPUms    float64        `json:"last_cpu_ms"`
	Filtered     int            `json:"filtered"`
	Stats        struct {
		Polls, Applied, Keys, Resyncs int
	} `json:"stats"`
}

type workerV struct {
	Version string `json:"version"`
	Digest  string `json:"digest"`
	Keys    int    `json:"keys"`
	PID     int    `json:"pid"`
}

func (d dump) version() uint64 {
	if d.Version == nil {
		return 0
	}
	v, _ := strconv.ParseUint(*d.Version, 10, 64)
	return v
}

func (n *instance) dump() dump {
	n.t.Helper()
	b, err := n.get("/dump")
	if err != nil {
		n.t.Fatal(err)
	}
	var d dump
	if err := json.Unmarshal(b, &d); err != nil {
		n.t.Fatalf("decoding /dump: %v\n%s", err, b)
	}
	if d.Keys == nil {
		d.Keys = map[string]string{} // cjson encodes an empty table as {}
	}
	return d
}

// version is GET /version (0 when none).
func (n *instance) version() uint64 {
	b, err := n.get("/version")
	if err != nil {
		n.t.Fatal(err)
	}
	v, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return v
}

// waitDump polls /dump until cond holds.
func (n *instance) waitDump(what string, cond func(dump) bool) dump {
	n.t.Helper()
	var d dump
	waitFor(n.t, what, func() bool { d = n.dump(); return cond(d) })
	return d
}

// waitNewVersion waits until the version differs from old and returns the dump.
func (n *instance) waitNewVersion(old uint64) dump {
	n.t.Helper()
	return n.waitDump(fmt.Sprintf("a version other than %d", old), func(d dump) bool { return d.version() != old && d.version() != 0 })
}

// statusMetric returns the value of a metric line from the status server.
func (n *instance) statusMetric(name string) (float64, bool) { return statusValue(n.statusAddr, name) }

// statusValue returns the value of a metric line from the status server at addr.
func statusValue(addr, name string) (float64, bool) {
	resp, err := httpClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 2 && f[0] == name {
			v, err := strconv.ParseFloat(f[1], 64)
			return v, err == nil
		}
	}
	return 0, false
}

// digestOf is the harness's digest of a key/value set.
func digestOf(kv map[string]string) string {
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + "=" + kv[k]
	}
	sum := md5.Sum([]byte(strings.Join(parts, "\n")))
	return hex.EncodeToString(sum[:])
}

// logContains reports whether amesh's log file contains s.
func (n *instance) logContains(s string) bool {
	b, _ := os.ReadFile(filepath.Join(n.prefix, "amesh.log"))
	return bytes.Contains(b, []byte(s))
}

// workerPIDs returns the pids of the running nginx workers (children of the master).
func (n *instance) workerPIDs() []int { return children(n.t, n.cmd.Process.Pid) }

// children returns the pids of pid's children.
func children(t testing.TB, pid int) []int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, _ := strconv.Atoi(f)
		pids = append(pids, p)
	}
	return pids
}

const long = 60 * time.Second // deadline for what must happen

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	waitForLong(t, what, long, cond)
}

// waitForLong is waitFor with deadline d.
func waitForLong(t testing.TB, what string, d time.Duration, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(5 * time.Millisecond):
		}
	}
}
