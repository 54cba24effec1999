package nginx

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// upstreamTLSConf is stock nginx proxying as APISIX does ($upstream_scheme, a Lua
// balancer, proxy_ssl_name), with ngx_http_amesh_upstream_tls_module and
// upstreamtlscheck.lua attaching profiles as amesh's plugin does. /noname/ is a location
// whose proxy_ssl_name does not name the module's variable.
const upstreamTLSConf = stockLuaNginx + `
    upstream backend {
        server 0.0.0.1;
        balancer_by_lua_block { require("upstreamtlscheck").balancer() }
    }
    server {
        listen 127.0.0.1:{{.Port}};
        proxy_ssl_server_name on;
        proxy_ssl_name $amesh_upstream_ssl_name;
        proxy_next_upstream error timeout;
        proxy_connect_timeout 2s;
        location / {
            set $upstream_scheme 'http';
            set $upstream_host $http_host;
            access_by_lua_block { require("upstreamtlscheck").access("{{.Routes}}") }
            proxy_http_version 1.1;
            proxy_set_header Host $upstream_host;
            proxy_set_header Connection "";
            proxy_pass $upstream_scheme://backend;
        }
        location /noname/ {
            set $upstream_scheme 'http';
            set $upstream_host $http_host;
            proxy_ssl_name $upstream_host;
            access_by_lua_block { require("upstreamtlscheck").access("{{.Routes}}") }
            proxy_pass $upstream_scheme://backend;
        }
    }
}
`

// tlsNode and tlsRoute are upstreamtlscheck.lua's routes.
type tlsNode struct {
	Addr string `json:"addr"`
	Port int    `json:"port"`
	TLS  bool   `json:"tls"`
}

type tlsSAN struct {
	Type       string `json:"type,omitempty"`
	Match      string `json:"match,omitempty"`
	Value      string `json:"value"`
	IgnoreCase bool   `json:"ignore_case,omitempty"`
}

type tlsProfile struct {
	SNI      string   `json:"sni,omitempty"`
	AutoSNI  bool     `json:"auto_sni,omitempty"`
	ALPN     []string `json:"alpn,omitempty"`
	CertFile string   `json:"cert_file,omitempty"`
	KeyFile  string   `json:"key_file,omitempty"`
	CAFile   string   `json:"ca_file,omitempty"`
	SANs     []tlsSAN `json:"sans,omitempty"`
	AutoSAN  bool     `json:"auto_san,omitempty"`
}

type tlsRoute struct {
	Nodes   []tlsNode   `json:"nodes"`
	Profile *tlsProfile `json:"profile,omitempty"`
}

// nodeOf is the node of a peer (or of any "host:port").
func nodeOf(t *testing.T, addr string, tls bool) tlsNode {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := strconv.Atoi(port)
	return tlsNode{Addr: host, Port: p, TLS: tls}
}

type tlsNginx struct {
	t      *testing.T
	prefix string
	port   int
}

func startTLSNginx(t *testing.T, routes map[string]tlsRoute) *tlsNginx {
	t.Helper()
	requireNginx(t)
	mods := nginxModules(t)
	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	n := &tlsNginx{t: t, prefix: prefix, port: freePort(t)}
	rb, err := json.Marshal(routes)
	if err != nil {
		t.Fatal(err)
	}
	routesFile := filepath.Join(prefix, "routes.json")
	if err := os.WriteFile(routesFile, rb, 0o644); err != nil {
		t.Fatal(err)
	}
	startStockNginx(t, prefix, upstreamTLSConf, map[string]any{
		"Module": filepath.Join(mods, "ngx_http_amesh_upstream_tls_module.so"), "LogLevel": "debug", "Port": n.port, "Routes": routesFile,
	}, n.port)
	return n
}

func (n *tlsNginx) errorLog() []byte {
	b, _ := os.ReadFile(filepath.Join(n.prefix, "error.log"))
	return b
}

// get sends GET path with Host host through nginx and returns the status and what the
// peer saw (zero when it did not answer).
func (n *tlsNginx) get(host, path string) (int, meshpeer.Seen) {
	n.t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path), nil)
	if err != nil {
		n.t.Fatal(err)
	}
	req.Host = host
	resp, err := apisixClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s meshpeer.Seen
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &s); err != nil {
			n.t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode, s
}

// meshTLS is a trust domain's CA with the client's workload certificate and peers.
type meshTLS struct {
	ca           *meshpeer.CA
	dir          string
	rootFile     string
	certFile     string
	keyFile      string
	clientID     string
	workloadKeys []byte
}

func newMeshTLS(t *testing.T) *meshTLS {
	t.Helper()
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	m := &meshTLS{ca: ca, dir: t.TempDir(), clientID: ca.SPIFFE("default", "productpage")}
	if err := os.Chmod(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	w, err := ca.Workload(m.clientID)
	if err != nil {
		t.Fatal(err)
	}
	m.workloadKeys = w.KeyPEM
	// As pilot-agent writes OUTPUT_CERTS.
	m.rootFile = m.write(t, "root-cert.pem", ca.PEM)
	m.certFile = m.write(t, "cert-chain.pem", w.CertPEM)
	m.keyFile = m.write(t, "key.pem", w.KeyPEM)
	return m
}

func (m *meshTLS) write(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(m.dir, name)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// peer starts an Istio sidecar's inbound listener whose workload is identity, with a
// certificate of ca (nil: the mesh's).
func (m *meshTLS) peer(t *testing.T, ca *meshpeer.CA, identity string) *meshpeer.Peer {
	t.Helper()
	if ca == nil {
		ca = m.ca
	}
	leaf, err := ca.Workload(identity)
	if err != nil {
		t.Fatal(err)
	}
	p, err := meshpeer.StartPeer(m.ca, leaf.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// istioProfile is what the translation makes of istiod's auto-mTLS cluster
// outbound|8080||secure.default.svc.cluster.local behind Istio's outbound HTTP filters.
func (m *meshTLS) istioProfile(sans ...string) *tlsProfile {
	p := &tlsProfile{
		SNI:      "outbound_.8080_._.secure.default.svc.cluster.local",
		ALPN:     []string{"istio-http/1.1", "istio", "http/1.1"},
		CertFile: m.certFile, KeyFile: m.keyFile, CAFile: m.rootFile,
	}
	for _, s := range sans {
		p.SANs = append(p.SANs, tlsSAN{Value: s})
	}
	return p
}

// TestUpstreamTLS: requests to an Istio peer go out as Envoy sends them for an auto-mTLS
// cluster: TLS with the cluster's SNI (while the Host header stays the request's), the
// ALPN Istio's HTTP filters set (so the peer takes its mTLS HTTP chain) and the
// workload certificate, and the peer's SPIFFE identity verified; a peer with another
// identity, or a chain to another root, gets no request (502); a route without a
// profile stays plaintext; a location that does not hand its connections to the
// module refuses the request instead of sending it without TLS; a retry switches
// between TLS and plaintext nodes as their endpoints ask; the private key never
// reaches the log (at debug level).
func TestUpstreamTLS(t *testing.T) {
	m := newMeshTLS(t)
	secureID := m.ca.SPIFFE("default", "secure")
	secure := m.peer(t, nil, secureID)
	impostor := m.peer(t, nil, m.ca.SPIFFE("default", "other"))
	otherCA, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	untrusted := m.peer(t, otherCA, secureID)
	plain := m.peer(t, nil, m.ca.SPIFFE("default", "plain"))
	dead := nodeOf(t, fmt.Sprintf("127.0.0.1:%d", freePort(t)), false)
	deadTLS := dead
	deadTLS.TLS = true

	routes := map[string]tlsRoute{
		"secure":    {Nodes: []tlsNode{nodeOf(t, secure.Addr, true)}, Profile: m.istioProfile(secureID)},
		"impostor":  {Nodes: []tlsNode{nodeOf(t, impostor.Addr, true)}, Profile: m.istioProfile(secureID)},
		"untrusted": {Nodes: []tlsNode{nodeOf(t, untrusted.Addr, true)}, Profile: m.istioProfile(secureID)},
		"plain":     {Nodes: []tlsNode{nodeOf(t, plain.Addr, false)}},
		// No SAN matchers: the chain alone is verified (istiod's clusters of services
		// without service accounts).
		"anyone": {Nodes: []tlsNode{nodeOf(t, impostor.Addr, true)}, Profile: m.istioProfile()},
		// The cluster's own ALPN (without Istio's istio.alpn filter in front): the
		// peer's TCP chain.
		"tcp-alpn": {Nodes: []tlsNode{nodeOf(t, secure.Addr, true)}, Profile: &tlsProfile{
			SNI: "outbound_.8080_._.secure.default.svc.cluster.local", ALPN: []string{"istio-peer-exchange", "istio"},
			CertFile: m.certFile, KeyFile: m.keyFile, CAFile: m.rootFile, SANs: []tlsSAN{{Value: secureID}}}},
		// Retries across nodes of both kinds: the first is down.
		"to-tls":   {Nodes: []tlsNode{dead, nodeOf(t, secure.Addr, true)}, Profile: m.istioProfile(secureID)},
		"to-plain": {Nodes: []tlsNode{deadTLS, nodeOf(t, plain.Addr, false)}, Profile: m.istioProfile(secureID)},
		"noname":   {Nodes: []tlsNode{nodeOf(t, secure.Addr, true)}, Profile: m.istioProfile(secureID)},
	}
	n := startTLSNginx(t, routes)
	const host = "secure.default.svc.cluster.local:8080"

	code, s := n.get(host, "/secure/a")
	if code != http.StatusOK {
		t.Fatalf("secure: %d", code)
	}
	want := meshpeer.Seen{Chain: meshpeer.ChainMTLSHTTP, ALPNOffered: []string{"istio-http/1.1", "istio", "http/1.1"}, ALPN: "http/1.1",
		SNI: "outbound_.8080_._.secure.default.svc.cluster.local", ClientID: m.clientID, Host: host, Path: "/secure/a", Conn: s.Conn}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("secure: the peer saw\n %+v\nwant\n %+v", s, want)
	}

	for _, path := range []string{"/impostor/a", "/untrusted/a"} {
		before := n.errorLog()
		if code, _ := n.get(host, path); code != http.StatusBadGateway {
			t.Errorf("%s: %d, want 502", path, code)
		}
		logged := string(n.errorLog()[len(before):])
		why := map[string]string{"/impostor/a": "none of the expected subject alt names", "/untrusted/a": "certificate verify error"}[path]
		if !strings.Contains(logged, why) {
			t.Errorf("%s: the error log does not say %q:\n%s", path, why, tail([]byte(logged), 2048))
		}
	}
	if impostor.Handshakes.Load() == 0 || untrusted.Handshakes.Load() == 0 {
		t.Error("the peers with the wrong identity or root were not even contacted")
	}

	if code, s := n.get(host, "/anyone/a"); code != http.StatusOK || s.Chain != meshpeer.ChainMTLSHTTP || s.ClientID != m.clientID {
		t.Errorf("anyone: %d %+v", code, s)
	}
	if code, s := n.get(host, "/tcp-alpn/a"); code != http.StatusOK || s.Chain != meshpeer.ChainMTLSTCP {
		t.Errorf("tcp-alpn: %d %+v", code, s)
	}

	hs := plain.Handshakes.Load()
	if code, s := n.get("plain.default.svc.cluster.local", "/plain/a"); code != http.StatusOK || s.Chain != meshpeer.ChainPlaintext || s.Host != "plain.default.svc.cluster.local" {
		t.Errorf("plain: %d %+v", code, s)
	}
	if code, s := n.get(host, "/to-tls/a"); code != http.StatusOK || s.Chain != meshpeer.ChainMTLSHTTP || s.ClientID != m.clientID {
		t.Errorf("retry from a plaintext node to a TLS node: %d %+v", code, s)
	}
	if code, s := n.get("plain.default.svc.cluster.local", "/to-plain/a"); code != http.StatusOK || s.Chain != meshpeer.ChainPlaintext {
		t.Errorf("retry from a TLS node to a plaintext node: %d %+v", code, s)
	}
	if plain.Handshakes.Load() != hs {
		t.Error("a TLS handshake reached the plaintext peer")
	}

	hs = secure.Handshakes.Load()
	conns := secure.Conns.Load()
	if code, _ := n.get(host, "/noname/a"); code != http.StatusBadGateway {
		t.Errorf("noname: %d, want 502", code)
	}
	if secure.Handshakes.Load() != hs || secure.Conns.Load() != conns {
		t.Error("a location whose proxy_ssl_name is not the module's variable sent the request anyway")
	}
	if !strings.Contains(string(n.errorLog()), "proxy_ssl_name is not $amesh_upstream_ssl_name") {
		t.Error("the error log does not say why /noname/ was refused")
	}

	log := n.errorLog()
	if !bytes.Contains(log, []byte("amesh upstream tls: profile applied")) {
		t.Error("the debug log shows no profile applied: is the log at debug level?")
	}
	for _, line := range bytes.Split(m.workloadKeys, []byte("\n")) {
		if len(line) > 20 && bytes.Contains(log, line) {
			t.Fatalf("the error log holds a line of the private key: %s", line)
		}
	}
}

// TestUpstreamTLSNames: the subject alt name matchers Envoy's validation context can
// hold, and auto SNI with auto SAN validation (istiod's SIMPLE DestinationRules without
// sni and subjectAltNames): each route is answered (200) or refused (502) as Envoy's
// verification of the peer's certificate decides.
func TestUpstreamTLSNames(t *testing.T) {
	m := newMeshTLS(t)
	id := m.ca.SPIFFE("Default", "secure")
	peer := m.peer(t, nil, id)
	dnsLeaf, err := m.ca.Server("*.example.com", "api.example.org")
	if err != nil {
		t.Fatal(err)
	}
	web, err := meshpeer.StartPeer(m.ca, dnsLeaf.TLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = web.Close() })

	profile := func(sans ...tlsSAN) *tlsProfile {
		p := m.istioProfile()
		p.SANs = sans
		return p
	}
	routes := map[string]tlsRoute{}
	want := map[string]int{}
	add := func(name string, addr string, p *tlsProfile, code int) {
		routes[name] = tlsRoute{Nodes: []tlsNode{nodeOf(t, addr, true)}, Profile: p}
		want[name] = code
	}
	add("exact", peer.Addr, profile(tlsSAN{Value: id}), 200)
	add("exact-case", peer.Addr, profile(tlsSAN{Value: strings.ToLower(id)}), 502)
	add("exact-ignore-case", peer.Addr, profile(tlsSAN{Value: strings.ToLower(id), IgnoreCase: true}), 200)
	add("prefix", peer.Addr, profile(tlsSAN{Match: "prefix", Value: "spiffe://cluster.local/"}), 200)
	add("suffix", peer.Addr, profile(tlsSAN{Match: "suffix", Value: "/sa/secure"}), 200)
	add("contains", peer.Addr, profile(tlsSAN{Match: "contains", Value: "/ns/Default/"}), 200)
	add("typed-uri", peer.Addr, profile(tlsSAN{Type: "uri", Value: id}), 200)
	add("typed-dns", peer.Addr, profile(tlsSAN{Type: "dns", Value: id}), 502)
	add("second-of-two", peer.Addr, profile(tlsSAN{Value: "spiffe://cluster.local/ns/x/sa/y"}, tlsSAN{Value: id}), 200)
	add("dns-wildcard", web.Addr, profile(tlsSAN{Value: "www.example.com"}), 200)
	add("dns-wildcard-one-label", web.Addr, profile(tlsSAN{Value: "a.b.example.com"}), 502)
	add("dns-exact", web.Addr, profile(tlsSAN{Type: "dns", Value: "API.example.org"}), 200)
	add("auto-san", web.Addr, &tlsProfile{AutoSNI: true, AutoSAN: true, ALPN: []string{"istio-http/1.1"}, CAFile: m.rootFile, CertFile: m.certFile, KeyFile: m.keyFile}, 200)
	n := startTLSNginx(t, routes)
	for name, code := range want {
		host := "svc.example.net"
		if name == "auto-san" {
			host = "www.example.com"
		}
		got, s := n.get(host, "/"+name+"/")
		if got != code {
			t.Errorf("%s: %d, want %d", name, got, code)
		}
		if name == "auto-san" && s.SNI != "www.example.com" {
			t.Errorf("auto SNI: the peer saw SNI %q, want the Host", s.SNI)
		}
	}
	if got, _ := n.get("other.example.net", "/auto-san/"); got != http.StatusBadGateway {
		t.Errorf("auto SAN validation of a Host the certificate does not name: %d, want 502", got)
	}
}
