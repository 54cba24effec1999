package capture_test

// The stream front, as amesh's sidecar runs it: nginx's stream server takes the captured
// connections on 15001 and 15006 with `amesh_original_dst_local on` and hands HTTP to an http
// server's capture listeners (unix sockets, `amesh_capture_listener`) with a PROXY header
// ($amesh_upstream_proxy_protocol), where the connection looks as it does under capture
// without the front.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/test/netns"
)

const frontTmpl = `
worker_processes 1;
daemon off;
error_log {{.Prefix}}/error.log debug;
pid {{.Prefix}}/nginx.pid;
{{range .Loads}}load_module {{.}};
{{end}}events { worker_connections 64; }
stream {
    upstream hop15001 { server unix:{{.Prefix}}/15001.sock; }
    upstream hop15006 { server unix:{{.Prefix}}/15006.sock; }
    map $connection_listen_port $hop { 15001 hop15001; 15006 hop15006; }
    upstream recorder { server unix:{{.Prefix}}/recorder.sock; }
    upstream recorder_after_down {
        # never marked failed, so that round robin keeps trying it first for some connections
        server unix:{{.Prefix}}/down.sock max_fails=0;
        server unix:{{.Prefix}}/recorder.sock;
    }
{{- if .Lua}}
    upstream hop_lua {
        server 127.0.0.1:1;
        balancer_by_lua_block {
            local ok, err = require("ngx.balancer").set_current_peer(
                "unix:{{.Prefix}}/" .. ngx.var.connection_listen_port .. ".sock")
            if not ok then
                ngx.log(ngx.ERR, "set_current_peer: ", err)
                return ngx.exit(ngx.ERROR)
            end
        }
    }
{{- end}}
    server {
        {{range .Listen}}listen {{.}};
        {{end}}
        amesh_original_dst_local on;
        {{.Front}}
    }
}
http {
    access_log off;
    client_body_temp_path {{.Prefix}}/body;
    proxy_temp_path {{.Prefix}}/proxy;
    fastcgi_temp_path {{.Prefix}}/fastcgi;
    uwsgi_temp_path {{.Prefix}}/uwsgi;
    scgi_temp_path {{.Prefix}}/scgi;
    server {
        listen unix:{{.Prefix}}/15001.sock {{if not .NoProxyProtocol}}proxy_protocol{{end}}{{if .HTTP2}} http2{{end}};
        listen unix:{{.Prefix}}/15006.sock proxy_protocol{{if .HTTP2}} http2{{end}};
        amesh_capture_listener unix:{{.Prefix}}/15001.sock 15001;
        amesh_capture_listener unix:{{.Prefix}}/15006.sock 15006;
        location / {
            return 200 "$remote_addr|$remote_port|$realip_remote_addr|$server_addr|$server_port|$connection_original_dst|$connection_original_dst_port|$connection_original_dst_addr|$connection_original_dst_endpoint";
        }
    }
}
`

// The stream server's part of the front.
const (
	// frontEcho answers with the stream variables themselves.
	frontEcho = `return "$server_addr|$server_port|$connection_listen_port|$connection_original_dst_endpoint|$remote_addr";`
	// frontHop passes the connection to the http server's capture listener for its port.
	frontHop = `set $amesh_upstream_proxy_protocol on;
        proxy_pass $hop;`
	// frontHopLua does so as APISIX does: Lua sets the variable, balancer_by_lua the peer.
	frontHopLua = `preread_by_lua_block { ngx.var.amesh_upstream_proxy_protocol = "on" }
        proxy_pass hop_lua;`
)

// frontSocket is how the stream server's sockets are bound.
type frontSocket struct {
	name   string
	listen []string
	// dual: one IPv6 socket takes IPv4 too, whose clients (and so the local address nginx
	// writes into a PROXY header) are ::ffff:a.b.c.d.
	dual bool
}

var frontSockets = []frontSocket{
	{name: "separate sockets", listen: []string{"15001", "[::]:15001", "15006", "[::]:15006"}},
	{name: "dual-stack socket", listen: []string{"[::]:15001 ipv6only=off", "[::]:15006 ipv6only=off"}, dual: true},
}

// asSeen is ip as nginx's stream server sees it on socket s: an IPv4 address of a dual-stack
// socket in its IPv6 form.
func (s frontSocket) asSeen(ip string) string {
	if s.dual && !strings.Contains(ip, ":") {
		return "::ffff:" + ip
	}
	return ip
}

// startFront runs nginx with the front template inside ns; front is the stream server's part.
func startFront(t *testing.T, ns *netns.NS, b nginxBuild, listen []string, front string, http2 bool) (dir, errLog string) {
	t.Helper()
	dir = nginxDir(t)
	conf := render(t, frontTmpl, map[string]any{
		"Prefix": dir, "Loads": b.loads, "Listen": listen, "Front": front, "HTTP2": http2, "Lua": b.lua,
	})
	return dir, runNginx(t, ns, b, dir, conf, func() error {
		// The pod's own loopback traffic is not captured. Waiting for nginx to close the
		// probe's connection puts the probe's lookups in the log before the test counts them
		// (conntrack knows a connection that was not redirected too).
		c, err := ns.Dial(context.Background(), "tcp", "127.0.0.1:15006")
		if err != nil {
			return err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if front != frontEcho {
			_, _ = io.WriteString(c, "GET / HTTP/1.0\r\n\r\n")
		}
		_, _ = io.ReadAll(c)
		return nil
	})
}

// fields splits an answer of nginx into its |-separated variables.
func fields(answer string) []string {
	return strings.Split(strings.TrimSpace(answer), "|")
}

// hopWant is what the http side of the front must see for a client at client connecting to
// host:port, captured on serverPort, through stream socket s.
func hopWant(s frontSocket, client *net.TCPAddr, host, port, serverPort string) []string {
	remote := s.asSeen(client.IP.String())
	return []string{
		remote, fmt.Sprint(client.Port), remote, // $remote_addr, $remote_port, $realip_remote_addr
		s.asSeen(host), serverPort, // $server_addr, $server_port
		port, port, host, net.JoinHostPort(host, port), // $connection_original_dst*
	}
}

// TestStreamFrontLocalAddress: with amesh_original_dst_local, a captured connection's
// $server_addr and $server_port in stream are its original destination, $connection_listen_port
// stays the capture port, and the kernel is asked once per connection.
func TestStreamFrontLocalAddress(t *testing.T) {
	agent, builds := require(t)
	p, client := pod(t, agent)
	cases := captured(p, client)
	run(t, builds, func(t *testing.T, b nginxBuild) {
		for _, s := range frontSockets {
			t.Run(s.name, func(t *testing.T) {
				_, errLog := startFront(t, p, b, s.listen, frontEcho, false)
				before := lookups(t, errLog)
				for _, c := range cases {
					answer, local := readFrom(t, c.from, net.JoinHostPort(c.host, c.port), "")
					want := []string{s.asSeen(c.host), c.port, c.serverPort, net.JoinHostPort(c.host, c.port), s.asSeen(local.IP.String())}
					if got := fields(answer); !slices.Equal(got, want) {
						t.Errorf("%s: stream saw $server_addr|$server_port|$connection_listen_port|$connection_original_dst_endpoint|$remote_addr = %q, want %q", c.name, got, want)
					}
				}
				if !b.debug {
					return
				}
				after := lookups(t, errLog)
				if n := after["connection tracking"] - before["connection tracking"]; n != len(cases) {
					t.Errorf("%d lookups answered by connection tracking for %d connections, want one each", n, len(cases))
				}
			})
		}
	})
}

// TestStreamFrontHTTPHop: the stream front passes captured connections to the http server's
// capture listener with a PROXY header ($amesh_upstream_proxy_protocol set by `set`, or by Lua
// with a balancer_by_lua upstream as in APISIX); there every request of the connection sees
// the client as $remote_addr, $remote_port and $realip_remote_addr, the capture port as
// $server_port, the original destination as $server_addr and $connection_original_dst*, over
// HTTP/1.1 keepalive and HTTP/2, and the header is read once per connection.
func TestStreamFrontHTTPHop(t *testing.T) {
	agent, builds := require(t)
	p, client := pod(t, agent)
	cases := captured(p, client)
	variants := []struct {
		name  string
		s     frontSocket
		front string
		http2 bool
	}{
		{"set, " + frontSockets[0].name, frontSockets[0], frontHop, false},
		{"set, " + frontSockets[1].name, frontSockets[1], frontHop, false},
		{"set, http2", frontSockets[0], frontHop, true},
		{"balancer_by_lua", frontSockets[0], frontHopLua, false},
	}
	run(t, builds, func(t *testing.T, b nginxBuild) {
		for _, v := range variants {
			t.Run(v.name, func(t *testing.T) {
				if v.front == frontHopLua && !b.lua {
					t.Skip("this nginx has no stream-lua")
				}
				_, errLog := startFront(t, p, b, v.s.listen, v.front, v.http2)
				before := lookups(t, errLog)
				const requests = 3
				for _, c := range cases {
					bodies, local := get(t, c.from, net.JoinHostPort(c.host, c.port), v.http2, requests)
					want := hopWant(v.s, local, c.host, c.port, c.serverPort)
					for i, body := range bodies {
						if got := fields(body); !slices.Equal(got, want) {
							t.Errorf("%s, request %d: http saw %q, want %q", c.name, i+1, got, want)
						}
					}
				}
				if !b.debug {
					return
				}
				after := lookups(t, errLog)
				tracked := after["connection tracking"] - before["connection tracking"]
				headers := after["PROXY header"] - before["PROXY header"]
				if tracked != len(cases) || headers != len(cases) {
					t.Errorf("%d lookups by connection tracking (stream) and %d from PROXY headers (http) for %d connections of %d requests, want one each per connection",
						tracked, headers, len(cases), requests)
				}
			})
		}
	})
}

// count is how many lines of the file at path contain substr.
func count(t *testing.T, path, substr string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), substr)
}

// recorder accepts the stream front's upstream connections on a unix socket and reports what
// each sent before the client's "hello\n".
type recorder chan string

func startRecorder(t *testing.T, path string) recorder {
	t.Helper()
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	// nginx's workers run as another user
	if err := os.Chmod(path, 0o777); err != nil {
		t.Fatal(err)
	}
	r := make(recorder, 16)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				var got []byte
				buf := make([]byte, 512)
				for {
					n, err := c.Read(buf)
					got = append(got, buf[:n]...)
					if before, _, ok := bytes.Cut(got, []byte("hello\n")); ok {
						r <- string(before)
						_, _ = io.WriteString(c, "ok\n")
						return
					}
					if err != nil {
						// a readiness probe's connection: it sends nothing
						return
					}
				}
			}()
		}
	}()
	return r
}

// TestStreamFrontProxyProtocolHeader: the upstream connection starts with a PROXY v1 header
// (client, original destination) exactly when $amesh_upstream_proxy_protocol is "on", with an
// upstream block, a retry to its next server, and proxy_pass to an address; "off" or unset,
// the upstream gets the client's bytes only.
func TestStreamFrontProxyProtocolHeader(t *testing.T) {
	agent, builds := require(t)
	p, client := pod(t, agent)
	cases := captured(p, client)
	variants := []struct {
		name   string
		front  string // with PREFIX for nginx's directory
		header bool
	}{
		{"on, upstream block", "set $amesh_upstream_proxy_protocol on; proxy_pass recorder;", true},
		{"on, retry after a server that is down", "set $amesh_upstream_proxy_protocol on; proxy_pass recorder_after_down;", true},
		{"on, proxy_pass address", "set $amesh_upstream_proxy_protocol on; proxy_pass unix:PREFIX/recorder.sock;", true},
		{"off", "set $amesh_upstream_proxy_protocol off; proxy_pass recorder;", false},
		{"unset", "proxy_pass recorder;", false},
	}
	run(t, builds, func(t *testing.T, b nginxBuild) {
		for _, s := range frontSockets {
			for _, v := range variants {
				t.Run(s.name+", "+v.name, func(t *testing.T) {
					dir := nginxDir(t)
					rec := startRecorder(t, filepath.Join(dir, "recorder.sock"))
					conf := render(t, frontTmpl, map[string]any{
						"Prefix": dir, "Loads": b.loads, "Listen": s.listen, "Front": strings.ReplaceAll(v.front, "PREFIX", dir),
					})
					errLog := runNginx(t, p, b, dir, conf, func() error {
						c, err := p.Dial(context.Background(), "tcp", "127.0.0.1:15006")
						if err == nil {
							c.Close()
						}
						return err
					})
					downBefore := count(t, errLog, "down.sock failed")
					for _, c := range cases {
						answer, local := readFrom(t, c.from, net.JoinHostPort(c.host, c.port), "hello\n")
						if answer != "ok\n" {
							t.Fatalf("%s: client got %q, want the upstream's \"ok\\n\"", c.name, answer)
						}
						var got string
						select {
						case got = <-rec:
						case <-time.After(10 * time.Second):
							t.Fatalf("%s: the upstream got no \"hello\\n\"", c.name)
						}
						want := ""
						if v.header {
							family := "TCP4"
							if s.dual || strings.Contains(c.host, ":") {
								family = "TCP6"
							}
							want = fmt.Sprintf("PROXY %s %s %s %d %s\r\n", family, s.asSeen(local.IP.String()), s.asSeen(c.host), local.Port, c.port)
						}
						if got != want {
							t.Errorf("%s: the upstream got %q before the client's bytes, want %q", c.name, got, want)
						}
					}
					if strings.Contains(v.name, "retry") && count(t, errLog, "down.sock failed") == downBefore {
						t.Errorf("no connection tried the server that is down first, so no retry was tested")
					}
				})
			}
		}
	})
}

// TestCaptureListenerRefuses: the capture listener is an internal socket; a connection without
// a PROXY header with addresses gets no answer (no header: nginx closes it) or 400 and is
// closed ("PROXY UNKNOWN"); one with a header is answered with the header's addresses. nginx
// refuses a capture listener whose socket is not declared with proxy_protocol.
func TestCaptureListenerRefuses(t *testing.T) {
	_, builds := require(t)
	ns := netns.New(t, "plain")
	run(t, builds, func(t *testing.T, b nginxBuild) {
		dir, _ := startFront(t, ns, b, frontSockets[0].listen, frontHop, false)
		// Refused requests ask for keepalive: an answer and then EOF means nginx closed the
		// connection.
		const keepalive = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
		const closing = "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
		for _, c := range []struct {
			name, socket, send string
			status             string // "" for no answer at all
			body               string
		}{
			{"no PROXY header", "15001.sock", keepalive, "", ""},
			{"PROXY UNKNOWN", "15001.sock", "PROXY UNKNOWN\r\n" + keepalive, "400", ""},
			{"PROXY TCP4", "15006.sock", "PROXY TCP4 192.0.2.99 198.51.100.99 4321 8443\r\n" + closing, "200",
				"192.0.2.99|4321|192.0.2.99|198.51.100.99|15006|8443|8443|198.51.100.99|198.51.100.99:8443"},
			{"PROXY TCP6", "15001.sock", "PROXY TCP6 2001:db8::99 2001:db8:5::99 4321 443\r\n" + closing, "200",
				"2001:db8::99|4321|2001:db8::99|2001:db8:5::99|15001|443|443|2001:db8:5::99|[2001:db8:5::99]:443"},
		} {
			conn, err := net.Dial("unix", filepath.Join(dir, c.socket))
			if err != nil {
				t.Fatal(err)
			}
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.WriteString(conn, c.send); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn)
			conn.Close()
			if err != nil {
				t.Errorf("%s: %v after %q", c.name, err, got)
				continue
			}
			switch {
			case c.status == "" && len(got) != 0:
				t.Errorf("%s: answered %q, want the connection closed without an answer", c.name, got)
			case c.status != "" && !strings.HasPrefix(string(got), "HTTP/1.1 "+c.status+" "):
				t.Errorf("%s: answered %q, want status %s", c.name, got, c.status)
			case c.body != "" && !strings.HasSuffix(string(got), "\r\n\r\n"+c.body):
				t.Errorf("%s: answered %q, want the body %q", c.name, got, c.body)
			}
		}

		// The capture listener's socket without proxy_protocol: nginx does not start.
		dir = nginxDir(t)
		conf := render(t, frontTmpl, map[string]any{
			"Prefix": dir, "Loads": b.loads, "Listen": frontSockets[0].listen, "Front": frontHop, "NoProxyProtocol": true,
		})
		confPath := filepath.Join(dir, "nginx.conf")
		if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := ns.Command(b.binary, "-t", "-p", dir, "-c", confPath).CombinedOutput()
		want := fmt.Sprintf(`amesh_capture_listener unix:%s/15001.sock: no "listen unix:%s/15001.sock proxy_protocol"`, dir, dir)
		if err == nil || !strings.Contains(string(out), want) {
			t.Errorf("nginx -t with a capture listener without proxy_protocol: %v\n%s\nwant it to fail with %q", err, out, want)
		}
	})
}

// TestStreamFrontNotRedirected: without capture the kernel reports no original destination;
// the stream front keeps the local address, and the http side sees it as the destination.
func TestStreamFrontNotRedirected(t *testing.T) {
	_, builds := require(t)
	ns := netns.New(t, "plain")
	ns.MustRun(t, "ip", "addr", "add", "2001:db8:9::1/128", "dev", "lo", "nodad")
	targets := []struct{ host, port string }{
		{"127.0.0.1", "15001"}, {"127.0.0.1", "15006"}, {"::1", "15001"}, {"2001:db8:9::1", "15006"},
	}
	s := frontSockets[0]
	run(t, builds, func(t *testing.T, b nginxBuild) {
		t.Run("stream", func(t *testing.T) {
			_, errLog := startFront(t, ns, b, s.listen, frontEcho, false)
			for _, c := range targets {
				addr := net.JoinHostPort(c.host, c.port)
				answer, local := readFrom(t, ns, addr, "")
				want := []string{c.host, c.port, c.port, addr, local.IP.String()}
				if got := fields(answer); !slices.Equal(got, want) {
					t.Errorf("%s: stream saw %q, want %q", addr, got, want)
				}
			}
			if b.debug {
				if n := lookups(t, errLog)["connection tracking"]; n != 0 {
					t.Errorf("%d lookups answered by connection tracking without capture, want 0", n)
				}
			}
		})
		t.Run("http hop", func(t *testing.T) {
			startFront(t, ns, b, s.listen, frontHop, false)
			for _, c := range targets {
				addr := net.JoinHostPort(c.host, c.port)
				bodies, local := get(t, ns, addr, false, 1)
				if got, want := fields(bodies[0]), hopWant(s, local, c.host, c.port, c.port); !slices.Equal(got, want) {
					t.Errorf("%s: http saw %q, want %q", addr, got, want)
				}
			}
		})
	})
}
