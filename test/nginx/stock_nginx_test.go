package nginx

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"text/template"
	"time"
)

// startStockNginx runs Debian's nginx without libxds.so, on the configuration tmpl makes
// with vars and these: Root (run as root), Prefix (its directory), Dir (this package's,
// for test Lua modules) and LuaDir (the repository's lua/). It stops nginx at the end of
// the test, logging its error log when the test failed, and returns once nginx listens on
// 127.0.0.1:port.
func startStockNginx(t *testing.T, prefix, tmpl string, vars map[string]any, port int) {
	t.Helper()
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]any{"Root": os.Geteuid() == 0, "Prefix": prefix, "Dir": dir, "LuaDir": filepath.Join(dir, "..", "..", "lua")}
	for k, v := range vars {
		all[k] = v
	}
	var buf bytes.Buffer
	if err := template.Must(template.New("nginx.conf").Parse(tmpl)).Execute(&buf, all); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(prefix, "nginx.conf")
	if err := os.WriteFile(conf, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/sbin/nginx", "-p", prefix, "-c", conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		terminate(cmd, exited, 10*time.Second)
		if t.Failed() || os.Getenv("AMESH_TEST_LOGS") != "" {
			b, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
			t.Logf("--- error.log (last 8k) ---\n%s\n--- stderr ---\n%s", tail(b, 8192), tail(stderr.Bytes(), 4096))
		}
	})
	waitFor(t, "nginx to listen", func() bool {
		select {
		case <-exited:
			t.Fatalf("nginx exited: %s", stderr.String())
		default:
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// stockLuaNginx starts the configuration of a stock nginx (one worker, its files in
// .Prefix) whose http block runs Lua from this directory (.Dir) and the repository's lua/
// (.LuaDir), logging at .LogLevel (default info) and loading the dynamic module .Module
// if given; the servers follow, and a closing brace.
const stockLuaNginx = `{{if .Root}}user root root;
{{end}}worker_processes 1;
daemon off;
pid {{.Prefix}}/nginx.pid;
error_log {{.Prefix}}/error.log {{or .LogLevel "info"}};
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
{{if .Module}}load_module {{.Module}};
{{end}}events {
    worker_connections 64;
}
http {
    access_log off;
    client_body_temp_path {{.Prefix}}/body;
    proxy_temp_path {{.Prefix}}/proxy;
    fastcgi_temp_path {{.Prefix}}/fastcgi;
    uwsgi_temp_path {{.Prefix}}/uwsgi;
    scgi_temp_path {{.Prefix}}/scgi;
    lua_package_path "{{.Dir}}/?.lua;{{.LuaDir}}/?.lua;/usr/share/lua/5.1/?.lua;;";`
