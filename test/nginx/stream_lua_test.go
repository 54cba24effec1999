package nginx

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// streamNginxConf is stock nginx running amesh's stream route index and protocol
// classification through streamcheck.lua.
const streamNginxConf = stockLuaNginx + `
    client_body_buffer_size 1m;
    server {
        listen 127.0.0.1:{{.Port}};
        location / {
            content_by_lua_block { require("streamcheck").run() }
        }
    }
}
`

// streamConn is a captured connection: the capture port it arrived on, its original
// destination, and the protocol its first bytes show ("" none).
type streamConn struct {
	Listen   int    `json:"listen"`
	Addr     string `json:"addr"`
	Port     int    `json:"port"`
	Protocol string `json:"protocol"`
	// ALPN: with Protocol "tls", the protocols its ClientHello offers.
	ALPN []string `json:"alpn,omitempty"`
	// Only: the connection is what the stream server's TLS socket terminated
	// ("mtls"): only routes that require it count.
	Only    string `json:"only,omitempty"`
	want    string // the id of the route it gets ("" none)
	sniffed bool   // whether its first bytes are looked at
}

type streamSet struct {
	name     string
	routes   []map[string]any
	conns    []streamConn
	problems []string // routes left out
}

type streamResult struct {
	Sets []struct {
		Selected []string `json:"selected"`
		Detected []int    `json:"detected"`
		Problems string   `json:"problems"`
	} `json:"sets"`
	Classes []string `json:"classes"`
}

func startStreamCheck(t *testing.T) string {
	t.Helper()
	requireNginx(t)
	prefix := t.TempDir()
	port := freePort(t)
	startStockNginx(t, prefix, streamNginxConf, map[string]any{"Port": port}, port)
	return fmt.Sprintf("http://127.0.0.1:%d/", port)
}

func runStreamCheck(t *testing.T, url string, sets []streamSet, data [][]byte) streamResult {
	t.Helper()
	type reqSet struct {
		Routes []map[string]any `json:"routes"`
		Conns  []streamConn     `json:"conns"`
	}
	req := struct {
		Sets  []reqSet `json:"sets"`
		Bytes []string `json:"bytes"`
	}{Sets: []reqSet{}, Bytes: []string{}}
	for _, s := range sets {
		req.Sets = append(req.Sets, reqSet{Routes: s.routes, Conns: s.conns})
	}
	for _, b := range data {
		req.Bytes = append(req.Bytes, base64.StdEncoding.EncodeToString(b))
	}
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("streamcheck: %d %v\n%s", resp.StatusCode, err, b)
	}
	var res streamResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("streamcheck answer %s: %v", b, err)
	}
	return res
}

// route is a stream route as the translation emits it (labels amesh-listen and
// amesh-protocol, server_port, server_addr; listen 0: no amesh-listen); what it sends the
// connection to does not matter to the index.
func route(id string, listen int, port int, addr, protocol string) map[string]any {
	labels := map[string]any{}
	if listen != 0 {
		labels["amesh-listen"] = fmt.Sprint(listen)
	}
	if protocol != "" {
		labels["amesh-protocol"] = protocol
	}
	r := map[string]any{"id": id, "labels": labels, "upstream_id": "u"}
	if port != 0 {
		r["server_port"] = port
	}
	if addr != "" {
		r["server_addr"] = addr
	}
	return r
}

// alpnRoute is a route for TLS connections whose ALPN names one of alpn.
func alpnRoute(id string, listen, port int, addr string, alpn ...string) map[string]any {
	r := route(id, listen, port, addr, "tls")
	r["labels"].(map[string]any)["amesh-alpn"] = strings.Join(alpn, ",")
	return r
}

// TestStreamRouteIndex: amesh's stream router picks, for a connection captured on a
// listen port, the route Envoy's filter chain match order gives among the listeners it
// may be handed to: only routes of that capture port; a route for the destination port
// before one for any port; the longest matching address prefix; a route for the
// connection's protocol before one for any protocol, the first bytes looked at only when
// routes differ in protocol; a more specific group without a route for the connection
// falls back to a less specific one (an address:port listener, then 0.0.0.0:port, then
// the virtual listener). Routes without amesh-listen, with an invalid address or an
// unknown protocol, and routes that tie, are left out.
func TestStreamRouteIndex(t *testing.T) {
	url := startStreamCheck(t)
	sets := []streamSet{{
		name: "istiod's shapes, ALLOW_ANY",
		routes: []map[string]any{
			route("out-9080-http", 15001, 9080, "", "http"),
			route("out-9080-tcp", 15001, 9080, "", ""),
			route("out-3306-vip", 15001, 3306, "240.240.0.3", ""),
			route("out-3306-net", 15001, 3306, "240.240.0.0/16", ""),
			route("out-443-v6", 15001, 443, "2001:db8::/32", ""),
			route("out-any", 15001, 0, "", ""),
			route("in-19080", 15006, 19080, "", ""),
			route("in-any-http", 15006, 0, "", "http"),
			route("in-any-tcp", 15006, 0, "", ""),
			route("out-3306-vip-tie", 15001, 3306, "240.240.0.3/32", ""),
			route("no-listen", 0, 80, "", ""),
			route("bad-addr", 15001, 80, "240.240.0.300", ""),
			route("bad-len", 15001, 80, "10.0.0.0/33", ""),
			route("bad-protocol", 15001, 80, "", "mysql"),
		},
		conns: []streamConn{
			{Listen: 15001, Addr: "10.0.0.1", Port: 9080, Protocol: "http", want: "out-9080-http", sniffed: true},
			{Listen: 15001, Addr: "10.0.0.1", Port: 9080, want: "out-9080-tcp", sniffed: true},
			{Listen: 15001, Addr: "10.0.0.1", Port: 9080, Protocol: "tls", want: "out-9080-tcp", sniffed: true},
			{Listen: 15001, Addr: "240.240.0.3", Port: 3306, Protocol: "http", want: "out-3306-vip"},
			{Listen: 15001, Addr: "240.240.7.7", Port: 3306, want: "out-3306-net"},
			{Listen: 15001, Addr: "::ffff:240.240.0.3", Port: 3306, want: "out-3306-vip"},
			{Listen: 15001, Addr: "240.241.0.3", Port: 3306, want: "out-any"},
			{Listen: 15001, Addr: "10.0.0.1", Port: 8080, Protocol: "http", want: "out-any"},
			{Listen: 15001, Addr: "2001:db8:1::5", Port: 443, want: "out-443-v6"},
			{Listen: 15001, Addr: "2001:db9::5", Port: 443, want: "out-any"},
			{Listen: 15001, Addr: "240.240.0.3", Port: 443, want: "out-any"},
			{Listen: 15001, Addr: "not-an-address", Port: 3306, want: "out-any"},
			{Listen: 15006, Addr: "192.0.2.10", Port: 19080, Protocol: "http", want: "in-19080"},
			{Listen: 15006, Addr: "192.0.2.10", Port: 8081, Protocol: "http", want: "in-any-http", sniffed: true},
			{Listen: 15006, Addr: "192.0.2.10", Port: 8081, want: "in-any-tcp", sniffed: true},
			{Listen: 15006, Addr: "240.240.0.3", Port: 3306, Protocol: "tls", want: "in-any-tcp", sniffed: true},
			{Listen: 15002, Addr: "10.0.0.1", Port: 9080, Protocol: "http"},
		},
		problems: []string{"out-3306-vip-tie", "no-listen", "bad-addr", "bad-len", "bad-protocol"},
	}, {
		name: "REGISTRY_ONLY: no catch-all, a port with an HTTP route only",
		routes: []map[string]any{
			route("out-9080-http", 15001, 9080, "", "http"),
			route("in-19080", 15006, 19080, "", ""),
		},
		conns: []streamConn{
			{Listen: 15001, Addr: "10.0.0.1", Port: 9080, Protocol: "http", want: "out-9080-http", sniffed: true},
			{Listen: 15001, Addr: "10.0.0.1", Port: 9080, sniffed: true},
			{Listen: 15001, Addr: "10.0.0.1", Port: 8080, Protocol: "http"},
			{Listen: 15006, Addr: "192.0.2.10", Port: 8081, Protocol: "http"},
		},
	}, {
		name: "a protocol route alone in its group falls back to less specific groups",
		routes: []map[string]any{
			route("vip-http", 15001, 8000, "10.1.0.1", "http"),
			route("port-tls", 15001, 8000, "", "tls"),
			route("any", 15001, 0, "", ""),
		},
		conns: []streamConn{
			{Listen: 15001, Addr: "10.1.0.1", Port: 8000, Protocol: "http", want: "vip-http", sniffed: true},
			{Listen: 15001, Addr: "10.1.0.1", Port: 8000, Protocol: "tls", want: "port-tls", sniffed: true},
			{Listen: 15001, Addr: "10.1.0.1", Port: 8000, want: "any", sniffed: true},
		},
	}, {
		name: "TLS by ALPN: the first of the client's protocols a route names, else the TLS route, else any",
		routes: []map[string]any{
			alpnRoute("istio-http", 15006, 19080, "", "istio-http/1.0", "istio-http/1.1", "istio-h2"),
			alpnRoute("istio-tcp", 15006, 19080, "", "istio-peer-exchange", "istio"),
			route("tls", 15006, 19080, "", "tls"),
			route("port", 15006, 19080, "", ""),
			alpnRoute("any-istio", 15006, 0, "", "istio"),
			route("any", 15006, 0, "", ""),
			route("bad-alpn", 15006, 8000, "", "http"),
			alpnRoute("tie", 15006, 19080, "", "istio-h2"),
		},
		conns: []streamConn{
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Protocol: "tls", ALPN: []string{"istio-http/1.1", "istio", "http/1.1"}, want: "istio-http", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Protocol: "tls", ALPN: []string{"istio", "istio-http/1.1"}, want: "istio-tcp", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Protocol: "tls", ALPN: []string{"h2", "http/1.1"}, want: "tls", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Protocol: "tls", want: "tls", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Protocol: "http", want: "port", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 5000, Protocol: "tls", ALPN: []string{"istio-peer-exchange", "istio"}, want: "any-istio", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 5000, Protocol: "tls", ALPN: []string{"h2"}, want: "any", sniffed: true},
			{Listen: 15006, Addr: "10.1.0.1", Port: 5000, ALPN: []string{"istio"}, want: "any", sniffed: true},
		},
		problems: []string{"tie"},
	}, {
		name: "terminated mTLS takes the routes of amesh-protocol mtls only, never sniffed",
		routes: []map[string]any{
			route("tcp", 15006, 19306, "", ""),
			route("tcp-mtls", 15006, 19306, "", "mtls"),
			alpnRoute("tcp-tls", 15006, 19306, "", "istio"),
			route("http-port", 15006, 19080, "", ""),
			route("any-mtls", 15006, 0, "", "mtls"),
			route("any", 15006, 0, "", ""),
			route("out", 15001, 0, "", ""),
		},
		conns: []streamConn{
			{Listen: 15006, Addr: "10.1.0.1", Port: 19306, Only: "mtls", want: "tcp-mtls"},
			{Listen: 15006, Addr: "10.1.0.1", Port: 5000, Only: "mtls", want: "any-mtls"},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19080, Only: "mtls", want: "any-mtls"},
			{Listen: 15001, Addr: "10.1.0.1", Port: 19306, Only: "mtls", want: ""},
			{Listen: 15006, Addr: "10.1.0.1", Port: 19306, want: "tcp", sniffed: true},
		},
	}}
	res := runStreamCheck(t, url, sets, nil)
	if len(res.Sets) != len(sets) {
		t.Fatalf("%d answers for %d sets", len(res.Sets), len(sets))
	}
	for i, s := range sets {
		got := res.Sets[i]
		for j, c := range s.conns {
			if got.Selected[j] != c.want {
				t.Errorf("%s: connection on %d to %s:%d (%q): route %q, want %q", s.name, c.Listen, c.Addr, c.Port, c.Protocol, got.Selected[j], c.want)
			}
			if want := map[bool]int{true: 1, false: 0}[c.sniffed]; got.Detected[j] != want {
				t.Errorf("%s: connection on %d to %s:%d: its first bytes were looked at %d times, want %d", s.name, c.Listen, c.Addr, c.Port, got.Detected[j], want)
			}
		}
		var problems []string
		if got.Problems != "" {
			problems = strings.Split(got.Problems, ",")
		}
		slices.Sort(problems)
		want := slices.Clone(s.problems)
		slices.Sort(want)
		if !slices.Equal(problems, want) {
			t.Errorf("%s: routes left out %v, want %v", s.name, got.Problems, s.problems)
		}
	}
}

// TestStreamProtocolClassify: the first bytes of a connection are HTTP as Envoy's
// http_inspector says (the HTTP/2 preface: h2c; a request line: http/1.1 or, for any
// other version, http/1.0), TLS for a handshake record, and a start of any of these asks
// for more bytes; 64 KiB without the end of a request line closes the connection, as in
// Envoy.
func TestStreamProtocolClassify(t *testing.T) {
	url := startStreamCheck(t)
	cases := []struct {
		in   string
		want string
	}{
		{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "http/1.1"},
		{"GET / HTTP/1.1\n", "http/1.1"},
		{"get /x?y=1 HTTP/1.1\r\n", "http/1.1"},
		{"OPTIONS * HTTP/1.1\r\n", "http/1.1"},
		{"GET / HTTP/1.0\r\n\r\n", "http/1.0"},
		{"GET / HTTP/2.0\r\n", "http/1.0"},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04", "h2c"},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n", "MORE"},
		{"PRI", "MORE"},
		{"G", "MORE"},
		{"GET", "MORE"},
		{"GET /index", "MORE"},
		{"GET /index ", "MORE"},
		{"GET / HTTP/1.", "MORE"},
		{"GET / HTTP/1.1\r", "MORE"},
		{"\x16", "MORE"},
		{"\x16\x03", "MORE"},
		{"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", "MORE"},
		{"\x16\x03\x01\x00\x04\x02\x00\x00\x00", ""},
		{string(clientHello(t, "outbound_.9080_._.productpage.default.svc.cluster.local", "istio-http/1.1", "istio", "http/1.1")),
			"tls alpn=istio-http/1.1,istio,http/1.1 sni=outbound_.9080_._.productpage.default.svc.cluster.local"},
		{string(clientHello(t, "", "istio-peer-exchange", "istio")), "tls alpn=istio-peer-exchange,istio sni="},
		{string(clientHello(t, "example.com")), "tls alpn= sni=example.com"},
		{string(clientHello(t, "example.com", "h2")[:100]), "MORE"},
		{"\x16\x05\x01", ""},
		{"\r\nGET / HTTP/1.1\r\n", ""},
		{"SSH-2.0-OpenSSH_9.6\r\n", ""},
		{"PING\r\n", ""},
		{"*1\r\n$4\r\nPING\r\n", ""},
		{"\x00\x00\x00\x0a", ""},
		{"GET  / HTTP/1.1\r\n", ""},
		{"GET / HTTP/1.1 x\r\n", ""},
		{"GET / FTP/1.1\r\n", ""},
		{"GET / HTTX", ""},
		{"GET /\x01 HTTP/1.1\r\n", ""},
		{"GET /" + strings.Repeat("a", 64*1024), "CLOSE"},
	}
	var data [][]byte
	for _, c := range cases {
		data = append(data, []byte(c.in))
	}
	res := runStreamCheck(t, url, nil, data)
	for i, c := range cases {
		if res.Classes[i] != c.want {
			in := c.in
			if len(in) > 40 {
				in = in[:40] + "..."
			}
			t.Errorf("classify(%q) = %q, want %q", in, res.Classes[i], c.want)
		}
	}
}

// clientHello is the first flight of a Go TLS client (a ClientHello as Envoy's peers
// send one) with server name sni ("" none) offering the application protocols alpn.
func clientHello(t *testing.T, sni string, alpn ...string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		cl := tls.Client(c, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: sni == ""})
		_ = cl.Handshake()
		c.Close()
	}()
	buf := make([]byte, 64*1024)
	n, err := s.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return buf[:n]
}
