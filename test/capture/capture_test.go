// Package capture_test proves the original-destination module (nginx/original_dst) under
// Istio's own traffic capture: a pod network namespace whose iptables rules come from an
// unmodified `pilot-agent istio-iptables` (the init container's command), nginx with the
// module listening on 15001 (outbound) and 15006 (inbound), a client namespace across a veth
// pair, and connections to several address:port pairs over IPv4 and IPv6.
//
// The nginx is Debian's, and also APISIX's OpenResty when AMESH_APISIX_HOME names an APISIX
// installation and AMESH_OPENRESTY_SRC the source of its OpenResty release (the modules are
// built from it by scripts/nginx-module/build-openresty.sh, as the sidecar image builds them);
// without those two variables that half skips (CI has no APISIX).
//
// Needs root (network namespaces), nginx-dev and libnginx-mod-stream (the module's build and
// nginx's stream module; scripts/install-test-deps.sh) and pilot-agent (`bash
// scripts/istiod/build.sh pilot-agent`). Without them the tests skip, unless CI is set.
package capture_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"text/template"
	"time"

	"github.com/amesh-dev/amesh/test/istiod/harness"
	"github.com/amesh-dev/amesh/test/netns"
)

// The pod's and the client's addresses (documentation ranges, only ever inside the test's
// namespaces), and the "services" the pod calls, which live on the client side.
const (
	podV4, podV6       = "192.0.2.10", "2001:db8::10"
	clientV4, clientV6 = "192.0.2.1", "2001:db8::1"
)

var serviceAddrs = []string{"198.51.100.7/32", "203.0.113.9/32", "2001:db8:5::7/128"}

// nginxBuild is an nginx the modules are tested in.
type nginxBuild struct {
	name   string
	binary string
	loads  []string // load_module arguments, in order
	// debug: built --with-debug, so the module's lookups are in the debug log.
	debug bool
	// lua: has stream-lua (balancer_by_lua, preread_by_lua), as APISIX's OpenResty.
	lua bool
	// skip: why this build cannot run here (APISIX's OpenResty without AMESH_APISIX_HOME).
	skip error
}

// require skips (or, under CI, fails) the test when the machine cannot run it, and returns
// pilot-agent and the nginx builds to test: Debian's, and APISIX's OpenResty when available.
func require(t *testing.T) (agent string, builds []nginxBuild) {
	t.Helper()
	skip := func(err error) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf("CI is set but the capture tier cannot run: %v", err)
		}
		t.Skipf("capture tier: %v", err)
	}
	if err := netns.Available(); err != nil {
		skip(err)
	}
	agent, err := harness.FindPilotAgent()
	if err != nil {
		skip(err)
	}
	module, err := harness.OriginalDstModule()
	if errors.Is(err, harness.ErrNoBinaries) {
		skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	builds = append(builds, nginxBuild{name: "debian", binary: "/usr/sbin/nginx", debug: true, loads: []string{
		"/usr/lib/nginx/modules/ngx_stream_module.so", // Debian's stream module, first
		filepath.Join(module, "ngx_http_amesh_original_dst_module.so"),
		filepath.Join(module, "ngx_stream_amesh_original_dst_module.so"),
	}})
	// APISIX's OpenResty has stream built in and declares its own $connection_original_dst
	// (address:port, IPv4 only), which the http module takes over.
	openresty, modules, err := harness.APISIXOpenResty()
	if err != nil && !errors.Is(err, harness.ErrNoAPISIX) {
		t.Fatal(err)
	}
	builds = append(builds, nginxBuild{name: "apisix-openresty", binary: openresty, lua: true, skip: err, loads: []string{
		filepath.Join(modules, "ngx_http_amesh_original_dst_module.so"),
		filepath.Join(modules, "ngx_stream_amesh_original_dst_module.so"),
	}})
	return agent, builds
}

// run runs test once per nginx build, each as a subtest.
func run(t *testing.T, builds []nginxBuild, test func(t *testing.T, b nginxBuild)) {
	for _, b := range builds {
		t.Run(b.name, func(t *testing.T) {
			if b.skip != nil {
				t.Skip(b.skip)
			}
			test(t, b)
		})
	}
}

// pod makes the pod and client namespaces with Istio's capture rules in the pod, and the
// services' addresses on the client side.
func pod(t *testing.T, agent string) (p, client *netns.NS) {
	p, client = netns.IstioPod(t, agent, []string{podV4 + "/24", podV6 + "/64"}, []string{clientV4 + "/24", clientV6 + "/64"})
	for _, a := range serviceAddrs {
		client.MustRun(t, "ip", "addr", "add", a, "dev", "lo")
	}
	return p, client
}

const confTmpl = `
worker_processes 1;
daemon off;
error_log {{.Prefix}}/error.log debug;
pid {{.Prefix}}/nginx.pid;
{{range .Loads}}load_module {{.}};
{{end}}events { worker_connections 64; }
{{if .Stream}}
stream {
    server {
        {{range .Listen}}listen {{.}};
        {{end}}
        return "$connection_original_dst|$connection_original_dst_port|$connection_original_dst_addr|$connection_original_dst_endpoint|$server_port\n";
    }
}
{{else}}
http {
    access_log off;
    client_body_temp_path {{.Prefix}}/body;
    proxy_temp_path {{.Prefix}}/proxy;
    fastcgi_temp_path {{.Prefix}}/fastcgi;
    uwsgi_temp_path {{.Prefix}}/uwsgi;
    scgi_temp_path {{.Prefix}}/scgi;
    server {
        {{range .Listen}}listen {{.}};
        {{end}}
        location / {
            return 200 "$connection_original_dst|$connection_original_dst_port|$connection_original_dst_addr|$connection_original_dst_endpoint|$server_port\n";
        }
    }
}
{{end}}
`

// listener is one nginx setup: which subsystem answers on the capture ports and how its
// sockets are bound.
type listener struct {
	name   string
	stream bool
	http2  bool     // h2c with prior knowledge on every listener
	listen []string // listen directives' arguments
}

var listeners = []listener{
	{name: "http", listen: []string{"15001", "[::]:15001", "15006", "[::]:15006"}},
	// One IPv6 socket takes IPv4 too: IPv4 clients arrive as ::ffff:a.b.c.d.
	{name: "http dual-stack socket", listen: []string{"[::]:15001 ipv6only=off", "[::]:15006 ipv6only=off"}},
	{name: "http2", http2: true, listen: []string{"15001 http2", "[::]:15001 http2", "15006 http2", "[::]:15006 http2"}},
	{name: "stream", stream: true, listen: []string{"15001", "[::]:15001", "15006", "[::]:15006"}},
	{name: "stream dual-stack socket", stream: true, listen: []string{"[::]:15001 ipv6only=off", "[::]:15006 ipv6only=off"}},
}

// startNginx runs nginx with listener l's configuration inside ns until the test ends; it
// returns the error log's path.
func startNginx(t *testing.T, ns *netns.NS, b nginxBuild, l listener) string {
	t.Helper()
	dir := nginxDir(t)
	conf := render(t, confTmpl, map[string]any{"Prefix": dir, "Loads": b.loads, "Stream": l.stream, "Listen": l.listen})
	return runNginx(t, ns, b, dir, conf, func() error {
		// The pod's own loopback traffic is not captured (Istio returns it early), so the ports
		// can be probed directly.
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:15006")
		if err != nil {
			return err
		}
		defer c.Close()
		if l.stream {
			// stream answers at once; reading the answer makes sure this connection's lookup
			// is in the log before the test counts lookups.
			_ = c.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = io.ReadAll(c)
		}
		return nil
	})
}

// nginxDir is a directory for one nginx, removed when the test ends: short enough for unix
// socket paths in it, and open to nginx's workers (which run as another user).
func nginxDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "amesh-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// render executes the text template tmpl with data.
func render(t *testing.T, tmpl string, data any) string {
	t.Helper()
	var out strings.Builder
	if err := template.Must(template.New("nginx").Parse(tmpl)).Execute(&out, data); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// runNginx runs nginx with configuration conf in directory dir (nginxDir) inside ns until the
// test ends; it returns once ready returns nil, with the error log's path.
func runNginx(t *testing.T, ns *netns.NS, b nginxBuild, dir, conf string, ready func() error) string {
	t.Helper()
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	errLog := filepath.Join(dir, "error.log")
	cmd := ns.Command(b.binary, "-p", dir, "-c", confPath)
	out, err := os.Create(filepath.Join(dir, "stderr.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait(); out.Close() }()
	t.Cleanup(func() {
		// SIGQUIT: graceful shutdown of master and worker.
		_ = cmd.Process.Signal(syscall.SIGQUIT)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
		if t.Failed() {
			b, _ := os.ReadFile(errLog)
			t.Logf("nginx error log (last 4 KiB):\n%s", tail(b, 4096))
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := ready()
		if err == nil {
			return errLog
		}
		select {
		case err := <-exited:
			b, _ := os.ReadFile(filepath.Join(dir, "stderr.log"))
			t.Fatalf("nginx exited: %v\n%s", err, b)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("nginx not ready after 10 s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// seen is what nginx reports for one connection.
type seen struct {
	origDst, port, addr, endpoint, serverPort string
}

func parseSeen(t *testing.T, line string) seen {
	t.Helper()
	f := strings.Split(strings.TrimSpace(line), "|")
	if len(f) != 5 {
		t.Fatalf("unexpected answer %q", line)
	}
	return seen{f[0], f[1], f[2], f[3], f[4]}
}

// expect is what the variables must say for a connection to host:port arriving on
// serverPort.
func expect(host, port, serverPort string) seen {
	return seen{origDst: port, port: port, addr: host, endpoint: net.JoinHostPort(host, port), serverPort: serverPort}
}

// ask connects from ns to addr and returns what nginx reports, once per request for HTTP
// (several requests share the connection: keepalive, or streams of one HTTP/2 connection).
func ask(t *testing.T, ns *netns.NS, l listener, addr string, requests int) []seen {
	t.Helper()
	if l.stream {
		line, _ := readFrom(t, ns, addr, "")
		return []seen{parseSeen(t, line)}
	}
	var out []seen
	bodies, _ := get(t, ns, addr, l.http2, requests)
	for _, b := range bodies {
		out = append(out, parseSeen(t, b))
	}
	return out
}

// readFrom connects from ns to addr, sends send, and returns all it reads until the other end
// closes, and the connection's local address.
func readFrom(t *testing.T, ns *netns.NS, addr, send string) (string, *net.TCPAddr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := ns.Dial(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, send); err != nil {
		t.Fatalf("write to %s: %v", addr, err)
	}
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read from %s: %v", addr, err)
	}
	return string(b), c.LocalAddr().(*net.TCPAddr)
}

// get sends requests GETs from ns to addr over one connection (keepalive, or streams of one
// HTTP/2 connection with http2) and returns the bodies and the connection's local address.
func get(t *testing.T, ns *netns.NS, addr string, http2 bool, requests int) ([]string, *net.TCPAddr) {
	t.Helper()
	var dials atomic.Int32
	var local atomic.Pointer[net.TCPAddr]
	tr := &http.Transport{
		DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
			dials.Add(1)
			c, err := ns.Dial(ctx, network, a)
			if err == nil {
				local.Store(c.LocalAddr().(*net.TCPAddr))
			}
			return c, err
		},
	}
	if http2 {
		tr.Protocols = new(http.Protocols)
		tr.Protocols.SetUnencryptedHTTP2(true)
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var out []string
	for range requests {
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			t.Fatalf("GET %s: %v", addr, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %v %s", addr, resp.StatusCode, err, b)
		}
		if want := map[bool]int{false: 1, true: 2}[http2]; resp.ProtoMajor != want {
			t.Fatalf("GET %s: answered over HTTP/%d, want HTTP/%d", addr, resp.ProtoMajor, want)
		}
		out = append(out, string(b))
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("GET %s: %d connections for %d requests, want 1 (keepalive)", addr, n, requests)
	}
	return out, local.Load()
}

var lookupLine = regexp.MustCompile(`amesh original dst: \S+ from the (connection tracking|local address|PROXY header)\b`)

// lookups counts the module's lookups in nginx's debug log (one a connection, when a variable
// is first read) by where the answer came from: "connection tracking", "local address" or, on
// a capture listener, "PROXY header".
func lookups(t *testing.T, errLog string) map[string]int {
	t.Helper()
	f, err := os.Open(errLog)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := map[string]int{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := lookupLine.FindStringSubmatch(sc.Text()); m != nil {
			n[m[1]]++
		}
	}
	return n
}

// capturedConn is a connection the pod's capture redirects: from a namespace to host:port,
// arriving on serverPort (15001 outbound, 15006 inbound).
type capturedConn struct {
	name       string
	from       *netns.NS
	host, port string
	serverPort string
}

// captured are the connections the tests make under capture: outbound from the pod to
// services, inbound from the client to the pod, IPv4 and IPv6, several addresses and ports.
func captured(p, client *netns.NS) []capturedConn {
	return []capturedConn{
		{"outbound v4 :80", p, "198.51.100.7", "80", "15001"},
		{"outbound v4 :9080", p, "198.51.100.7", "9080", "15001"},
		{"outbound v4 other host :3306", p, "203.0.113.9", "3306", "15001"},
		{"outbound v6 :80", p, "2001:db8:5::7", "80", "15001"},
		{"outbound v6 :9080", p, "2001:db8:5::7", "9080", "15001"},
		{"inbound v4 :8080", client, podV4, "8080", "15006"},
		{"inbound v4 :9080", client, podV4, "9080", "15006"},
		{"inbound v6 :8080", client, podV6, "8080", "15006"},
	}
}

// TestOriginalDstUnderIstioCapture: outbound connections from the pod to services (IPv4 and
// IPv6, several ports) are redirected to 15001, inbound connections from the client to the pod
// to 15006; in every subsystem and socket layout nginx reports the address and port the client
// connected to, asking the kernel once per connection.
func TestOriginalDstUnderIstioCapture(t *testing.T) {
	agent, builds := require(t)
	p, client := pod(t, agent)
	cases := captured(p, client)
	run(t, builds, func(t *testing.T, b nginxBuild) {
		for _, l := range listeners {
			t.Run(l.name, func(t *testing.T) {
				errLog := startNginx(t, p, b, l)
				// The readiness probe's connection is one too (stream answers every connection).
				before := lookups(t, errLog)
				requests := 3
				if l.stream {
					requests = 1
				}
				for _, c := range cases {
					want := expect(c.host, c.port, c.serverPort)
					for i, got := range ask(t, c.from, l, net.JoinHostPort(c.host, c.port), requests) {
						if got != want {
							t.Errorf("%s, request %d: nginx saw %+v, want %+v", c.name, i+1, got, want)
						}
					}
				}
				if !b.debug {
					return
				}
				after := lookups(t, errLog)
				if n := after["connection tracking"] - before["connection tracking"]; n != len(cases) || after["local address"] != before["local address"] {
					t.Errorf("%d original-destination lookups answered by connection tracking and %d by the local address for %d connections (%d requests each), want one by connection tracking per connection",
						n, after["local address"]-before["local address"], len(cases), requests)
				}
			})
		}
	})
}

// TestOriginalDstNotRedirected: without capture rules the kernel has no original destination
// for the connection, and the variables hold the local address, as Envoy's original_dst
// listener filter keeps it; IPv4 clients of a dual-stack socket are reported in IPv4 form.
func TestOriginalDstNotRedirected(t *testing.T) {
	_, builds := require(t)
	ns := netns.New(t, "plain")
	ns.MustRun(t, "ip", "addr", "add", "2001:db8:9::1/128", "dev", "lo", "nodad")
	run(t, builds, func(t *testing.T, b nginxBuild) {
		for _, l := range listeners {
			t.Run(l.name, func(t *testing.T) {
				errLog := startNginx(t, ns, b, l)
				before := lookups(t, errLog)
				for _, c := range []struct{ host, port string }{
					{"127.0.0.1", "15001"}, {"127.0.0.1", "15006"}, {"::1", "15001"}, {"2001:db8:9::1", "15006"},
				} {
					want := expect(c.host, c.port, c.port)
					if got := ask(t, ns, l, net.JoinHostPort(c.host, c.port), 1)[0]; got != want {
						t.Errorf("%s: nginx saw %+v, want %+v", net.JoinHostPort(c.host, c.port), got, want)
					}
				}
				if !b.debug {
					return
				}
				after := lookups(t, errLog)
				if n := after["local address"] - before["local address"]; n != 4 || after["connection tracking"] != 0 {
					t.Errorf("%d lookups fell back to the local address and %d were answered by connection tracking, want 4 and 0", n, after["connection tracking"])
				}
			})
		}
	})
}
