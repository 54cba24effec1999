package nginx

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"
)

// streamTemplateConf is stock nginx's stream subsystem with
// ngx_stream_amesh_upstream_tls_module as the chart configures it in APISIX: a server that
// proxies to an upstream and the template server naming the same upstream, plus servers
// that answer with $amesh_upstream_tls as it reads without a profile and after an invalid
// value. {{.Extra}} goes into the template server, {{.ExtraServer}} after it.
const streamTemplateConf = `{{if .Root}}user root root;
{{end}}worker_processes 1;
daemon off;
pid {{.Prefix}}/nginx.pid;
error_log {{.Prefix}}/error.log info;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
load_module {{.Module}};
events {
    worker_connections 64;
}
stream {
    upstream backend {
        server 127.0.0.1:{{.Backend}};
    }
    server {
        listen 127.0.0.1:{{.Port}};
        proxy_pass backend;
    }
    server {
        amesh_upstream_tls_template;
{{- if not .NoProxyPass}}
        proxy_pass backend;
{{- end}}
{{.Extra}}
    }
{{.ExtraServer}}
    server {
        listen 127.0.0.1:{{.State}};
        return "state=[$amesh_upstream_tls]\n";
    }
    server {
        listen 127.0.0.1:{{.Invalid}};
        set $amesh_upstream_tls "not-a-number";
        return "state=[$amesh_upstream_tls]\n";
    }
    server {
        listen 127.0.0.1:{{.Unknown}};
        set $amesh_upstream_tls "140737488355327";
        return "state=[$amesh_upstream_tls]\n";
    }
}
`

// nginxTest runs `nginx -t` on the configuration tmpl makes of vars and returns its
// output and whether it accepted it.
func nginxTest(t *testing.T, prefix, tmpl string, vars map[string]any) (string, bool) {
	t.Helper()
	all := map[string]any{"Root": os.Geteuid() == 0, "Prefix": prefix}
	for k, v := range vars {
		all[k] = v
	}
	var buf bytes.Buffer
	if err := template.Must(template.New("nginx.conf").Parse(tmpl)).Execute(&buf, all); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(prefix, "test.conf")
	if err := os.WriteFile(conf, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("/usr/sbin/nginx", "-t", "-p", prefix, "-c", conf).CombinedOutput()
	return string(out), err == nil
}

// ngx_stream_amesh_upstream_tls_module's configuration side and its effect on sessions
// without a profile, in Debian's nginx (which has no stream Lua to attach profiles:
// TestSidecarOutboundTCPMTLS covers that in real APISIX). The template directive sets
// the stream proxy's TLS settings itself, so writing one of them again is refused as a
// duplicate; there is one template; it needs the upstream (proxy_pass) of the servers that
// use it; it is listened on nowhere. A session without a profile is proxied in plaintext as
// before, and the module's variable reads "" for it; a value that is not a number, and a
// number no profile is registered under (what an address would be), are refused and say
// so: only a registered profile is ever used.
func TestStreamUpstreamTLSTemplate(t *testing.T) {
	requireNginx(t)
	mods := nginxModules(t)
	module := filepath.Join(mods, "ngx_stream_amesh_upstream_tls_module.so")
	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	port, backend, state, invalid, unknown := freePort(t), freePort(t), freePort(t), freePort(t), freePort(t)
	vars := func(extra map[string]any) map[string]any {
		v := map[string]any{"Module": module, "Port": port, "Backend": backend, "State": state, "Invalid": invalid, "Unknown": unknown,
			"Extra": "", "ExtraServer": "", "NoProxyPass": false}
		for k, x := range extra {
			v[k] = x
		}
		return v
	}

	for _, tc := range []struct {
		name  string
		extra map[string]any
		want  string // in nginx -t's output; "" for a configuration it accepts
	}{
		{"the template", nil, ""},
		{"proxy_ssl written again", map[string]any{"Extra": "        proxy_ssl on;"}, `"proxy_ssl" directive is duplicate`},
		{"proxy_ssl_name written again", map[string]any{"Extra": "        proxy_ssl_name example.com;"}, `"proxy_ssl_name" directive is duplicate`},
		{"two templates", map[string]any{"ExtraServer": "    server {\n        amesh_upstream_tls_template;\n        proxy_pass backend;\n    }"}, "one server is the template"},
		{"no proxy_pass", map[string]any{"NoProxyPass": true}, "no handler for server"},
	} {
		out, ok := nginxTest(t, prefix, streamTemplateConf, vars(tc.extra))
		switch {
		case tc.want == "" && !ok:
			t.Errorf("%s: nginx -t refused it:\n%s", tc.name, out)
		case tc.want != "" && (ok || !strings.Contains(out, tc.want)):
			t.Errorf("%s: nginx -t accepted=%v:\n%s\nwant it refused with %q", tc.name, ok, out, tc.want)
		}
	}

	// A backend that answers the line protocol with its address and the client's.
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", backend))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				if line, err := bufio.NewReader(c).ReadString('\n'); err == nil && line == "PING\n" {
					_, _ = io.WriteString(c, "PONG\n")
				}
			}()
		}
	}()
	startStockNginx(t, prefix, streamTemplateConf, vars(nil), port)

	c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "PING\n")
	pong, err := bufio.NewReader(c).ReadString('\n')
	c.Close()
	if pong != "PONG\n" {
		t.Errorf("a session without a profile: %q %v; want the backend's plaintext answer", pong, err)
	}
	if got := streamAnswer(t, state, false, nil); got != "state=[]\n" {
		t.Errorf("$amesh_upstream_tls without a profile: %q, want empty", got)
	}
	if got := streamAnswer(t, invalid, false, nil); got != "state=[error: not a profile number]\n" {
		t.Errorf("$amesh_upstream_tls after a value that is no number: %q", got)
	}
	if got := streamAnswer(t, unknown, false, nil); got != "state=[error: no such profile]\n" {
		t.Errorf("$amesh_upstream_tls after a number no profile is registered under: %q", got)
	}
}
