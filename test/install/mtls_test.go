package install_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/xds/dump"
	"github.com/amesh-dev/amesh/test/netns"
)

// peerAuthResources is istiod's configuration for productpage (testdata/istiod/sotw) with
// the virtualInbound istiod sends under a PeerAuthentication mode
// (testdata/istiod/peerauth/<mode>).
func peerAuthResources(t *testing.T, mode string) *dump.Resources {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(repoRoot, "testdata", "istiod", "sotw")
	for _, sub := range []string{"lds", "rds", "cds", "eds"} {
		if err := os.CopyFS(filepath.Join(dir, sub), os.DirFS(filepath.Join(src, sub))); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "istiod", "peerauth", mode, "virtualInbound.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "lds", "virtualInbound.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, err := dump.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// workloadCertDir writes a workload certificate of ca for the SPIFFE identity id where
// istio-agent writes it (OUTPUT_CERTS: key.pem, cert-chain.pem, root-cert.pem), readable by
// the proxy UID, and returns the directory.
func workloadCertDir(t *testing.T, ca *identitytest.CA, id string) string {
	t.Helper()
	workload, err := ca.Issue(identitytest.Options{SPIFFE: id})
	if err != nil {
		t.Fatal(err)
	}
	dir := tempDir(t, "amesh-certs-")
	if err := workload.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "key.pem"), filepath.Join(dir, "cert-chain.pem"), filepath.Join(dir, "root-cert.pem")} {
		if err := os.Chown(p, proxyUID, proxyUID); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// envoyPeer is a client as an Envoy sidecar of the mesh connects to a pod with auto mTLS:
// its workload certificate (cert nil: none), the SNI and ALPN of Istio's outbound
// clusters, and the server's SPIFFE identity checked against the mesh's roots.
type envoyPeer struct {
	cert   *tls.Certificate
	roots  *x509.CertPool
	server string // the SPIFFE identity the server must have
	alpn   []string
	maxTLS uint16 // 0: Go's default (TLS 1.3)
}

func (p envoyPeer) config() *tls.Config {
	c := &tls.Config{
		ServerName: "outbound_.9080_._.productpage.default.svc.cluster.local",
		NextProtos: p.alpn,
		MaxVersion: p.maxTLS,
		// The server's certificate names a SPIFFE identity, not the SNI: verified below.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: p.roots, Intermediates: inter}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != p.server {
				return fmt.Errorf("server identity %v, want %s", leaf.URIs, p.server)
			}
			return nil
		},
	}
	// Envoy sends its certificate whatever CAs the server names (Go would send none
	// that another CA issued).
	c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
		if p.cert == nil {
			return &tls.Certificate{}, nil
		}
		return p.cert, nil
	}
	return c
}

// tlsAlert reports whether err is the server's TLS alert: the handshake refused.
func tlsAlert(err error) bool {
	return err != nil && strings.Contains(err.Error(), "remote error: tls: ")
}

// refusedTLS13 reports whether err is how a TLS 1.3 client sees its handshake refused:
// no answer at all. Its side of the handshake ends before the server has verified its
// certificate, so the server's alert is what it reads first, or, when it wrote before it
// read, its write meets the closed connection (reset; Go's HTTP/2 client then says only
// that the connection could not be established). TLS 1.2 (tls12) shows the alert itself.
func refusedTLS13(err error) bool {
	return err != nil
}

// tls12 is p limited to TLS 1.2, whose client sees a refusal in the handshake itself.
func tls12(p envoyPeer) envoyPeer {
	p.maxTLS = tls.VersionTLS12
	return p
}

// get sends one request over mTLS from ns to addr; it returns the status, what the
// application saw and the negotiated protocol.
func (p envoyPeer) get(ns *netns.NS, addr string, h2 bool) (int, seen, string, error) {
	tr := &http.Transport{
		DialContext:       func(ctx context.Context, network, a string) (net.Conn, error) { return ns.Dial(ctx, network, a) },
		TLSClientConfig:   p.config(),
		ForceAttemptHTTP2: h2,
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Timeout: 10 * time.Second, Transport: tr}).Get("https://" + addr + "/")
	if err != nil {
		return 0, seen{}, "", err
	}
	defer resp.Body.Close()
	var s seen
	if resp.StatusCode == http.StatusOK {
		err = json.NewDecoder(resp.Body).Decode(&s)
	}
	return resp.StatusCode, s, resp.Proto, err
}

// TestSidecarInboundMTLS: the sidecar's APISIX terminates Istio mTLS as an Envoy sidecar's
// inbound listener does, with the workload certificate amesh follows in the agent's
// certificate directory. Under PERMISSIVE (istiod's virtualInbound without a
// PeerAuthentication), a mesh peer's mTLS request to the application port (Istio's SNI and
// ALPN istio-http/1.1, HTTP/1.1 and HTTP/2) reaches the application from 127.0.0.6 with the
// client's address in X-Forwarded-For, the server presenting productpage's SPIFFE identity
// from the mesh's CA; so does its request with Istio's TCP ALPN (istio-peer-exchange, istio:
// a peer that treats the port as TCP; no protocol is negotiated, as with Envoy) and its
// request to a port no chain names; a plaintext request works too. A TLS client without a
// certificate, with one from another CA, or with one of the mesh's CA for another trust
// domain than istiod's chains accept, has its handshake refused with a TLS alert, as by
// Envoy, over HTTP/1.1, HTTP/2 and TCP, and reaches nothing. Under STRICT (istiod's virtualInbound for a namespace-wide
// PeerAuthentication STRICT, served to the same sidecar), plaintext requests are refused,
// to the application port and to other ports, and mTLS ones still reach the application.
func TestSidecarInboundMTLS(t *testing.T) {
	ca, err := identitytest.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	certDir := workloadCertDir(t, ca, "spiffe://cluster.local/ns/default/sa/productpage")
	peerCert := func(ca *identitytest.CA, id string) *tls.Certificate {
		f, err := ca.Issue(identitytest.Options{SPIFFE: id})
		if err != nil {
			t.Fatal(err)
		}
		c, err := tls.X509KeyPair(f.Chain, f.Key)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Root())
	other, err := identitytest.NewCA("other.example")
	if err != nil {
		t.Fatal(err)
	}
	const productpageID = "spiffe://cluster.local/ns/default/sa/productpage"
	istioHTTP := []string{"istio-http/1.1", "istio", "http/1.1"}
	const reviewsID = "spiffe://cluster.local/ns/default/sa/reviews"
	peer := envoyPeer{cert: peerCert(ca, reviewsID), roots: roots, server: productpageID, alpn: istioHTTP}
	// The mesh's CA, another trust domain: istiod's chains accept spiffe://cluster.local/ only.
	foreign := envoyPeer{cert: peerCert(ca, "spiffe://evil.example/ns/default/sa/reviews"), roots: roots, server: productpageID, alpn: istioHTTP}
	peerH2 := envoyPeer{cert: peer.cert, roots: roots, server: productpageID, alpn: []string{"istio-h2", "istio", "h2"}}
	noCert := envoyPeer{roots: roots, server: productpageID, alpn: istioHTTP}
	otherCA := envoyPeer{cert: peerCert(other, reviewsID), roots: roots, server: productpageID, alpn: istioHTTP}

	s := startSidecar(t, "AMESH_WORKLOAD_CERT_DIR="+certDir)
	app := echo(t, s.pod, podIP+":19080")
	app8081 := echo(t, s.pod, podIP+":8081")
	tcpApp := tcpServe(t, s.pod, podIP+":19306", false)
	tcp8084 := tcpServe(t, s.pod, podIP+":8084", false)
	xds := s.serve(t)
	permissive, strict := peerAuthResources(t, "permissive"), peerAuthResources(t, "strict")
	withInboundCluster(t, permissive, 19306)
	withInboundCluster(t, strict, 19306)
	serveIstiod(xds, permissive, nil)
	s.waitReady(t)

	appAddr := net.JoinHostPort(podIP, "19080")
	mtlsOK := func(what string, p envoyPeer, addr string, h2 bool) {
		t.Helper()
		var code int
		var got seen
		var proto string
		var err error
		// The workload certificate reaches APISIX shortly after the configuration.
		waitFor(t, what, 30*time.Second, func() (bool, string) {
			code, got, proto, err = p.get(s.client, addr, h2)
			return err == nil, fmt.Sprintf("%d %v", code, err)
		})
		wantProto := map[bool]string{false: "HTTP/1.1", true: "HTTP/2.0"}[h2]
		if code != http.StatusOK || got.Server != addr || got.Remote != "127.0.0.6" || got.XFF != peerIP || proto != wantProto {
			t.Errorf("%s: %d %+v over %s; want the application's answer over %s to a connection from 127.0.0.6 for the client %s", what, code, got, proto, wantProto, peerIP)
		}
	}
	refused := func(what string, p envoyPeer, n func() int64) {
		t.Helper()
		for _, h2 := range []bool{false, true} {
			before := n()
			if code, _, _, err := tls12(p).get(s.client, appAddr, h2); !tlsAlert(err) {
				t.Errorf("%s (TLS 1.2, h2 %v): %d %v; want the handshake refused with a TLS alert", what, h2, code, err)
			}
			if code, _, _, err := p.get(s.client, appAddr, h2); !refusedTLS13(err) {
				t.Errorf("%s (TLS 1.3, h2 %v): %d %v; want the handshake refused", what, h2, code, err)
			}
			if n() != before {
				t.Errorf("%s (h2 %v) reached the application", what, h2)
			}
		}
	}

	mtlsOK("PERMISSIVE: a mesh peer's mTLS request to the application port", peer, appAddr, false)
	mtlsOK("PERMISSIVE: a mesh peer's mTLS request over HTTP/2", peerH2, appAddr, true)
	// A peer whose sidecar treats the port as TCP offers Istio's TCP ALPN only; istiod's
	// HTTP chain takes it, and the handshake goes on without ALPN (amesh_ssl_alpn_optional).
	peerTCP := envoyPeer{cert: peer.cert, roots: roots, server: productpageID, alpn: []string{"istio-peer-exchange", "istio"}}
	mtlsOK("PERMISSIVE: a mesh peer's mTLS request with Istio's TCP ALPN to the application's HTTP port", peerTCP, appAddr, false)
	mtlsOK("PERMISSIVE: a mesh peer's mTLS request to a port no chain names", peer, net.JoinHostPort(podIP, "8081"), false)
	if code, got, body, err := request(s.client, appAddr, "productpage"); err != nil || code != http.StatusOK || got.Remote != "127.0.0.6" {
		t.Errorf("PERMISSIVE: a plaintext request: %d %q %v; want the application's answer", code, body, err)
	}
	// TCP: Istio's TCP ALPN to the application's TCP port and to a port no chain names;
	// the application sees the plaintext, from 127.0.0.6.
	for _, port := range []string{"19306", "8084"} {
		addr := net.JoinHostPort(podIP, port)
		if pong, err := peerTCP.ping(s.client, addr); err != nil || pong != "PONG "+addr+" 127.0.0.6" {
			t.Errorf("PERMISSIVE: a mesh peer's mTLS to the TCP port %s: %q %v; want the application's answer to a connection from 127.0.0.6", port, pong, err)
		}
	}
	if _, pong, err := ping(s.client, net.JoinHostPort(podIP, "19306"), false); err != nil || pong != "PONG "+podIP+":19306 127.0.0.6" {
		t.Errorf("PERMISSIVE: plaintext to the TCP port: %q %v", pong, err)
	}
	foreignTCP := envoyPeer{cert: foreign.cert, roots: roots, server: productpageID, alpn: peerTCP.alpn}
	tcpRefused := func(what string, p envoyPeer, addr string, n func() int64) {
		t.Helper()
		before := n()
		if pong, err := p.ping(s.client, addr); err == nil || n() != before {
			t.Errorf("%s: %q %v, %d connections reached the application; want the connection closed", what, pong, err, n()-before)
		}
	}
	// tcpHandshakeRefused: refused in the handshake, with a TLS alert.
	tcpHandshakeRefused := func(what string, p envoyPeer, addr string, n func() int64) {
		t.Helper()
		before := n()
		if pong, err := tls12(p).ping(s.client, addr); !tlsAlert(err) || n() != before {
			t.Errorf("%s (TLS 1.2): %q %v, %d connections reached the application; want the handshake refused with a TLS alert", what, pong, err, n()-before)
		}
		if pong, err := p.ping(s.client, addr); !refusedTLS13(err) || n() != before {
			t.Errorf("%s (TLS 1.3): %q %v, %d connections reached the application; want the handshake refused", what, pong, err, n()-before)
		}
	}
	otherCATCP := envoyPeer{cert: otherCA.cert, roots: roots, server: productpageID, alpn: peerTCP.alpn}
	for _, port := range []string{"19306", "8084"} {
		addr, n := net.JoinHostPort(podIP, port), map[string]func() int64{"19306": tcpApp.Load, "8084": tcp8084.Load}[port]
		tcpHandshakeRefused("PERMISSIVE: a certificate of the mesh's CA for another trust domain to TCP port "+port, foreignTCP, addr, n)
		tcpHandshakeRefused("PERMISSIVE: TLS without a client certificate to TCP port "+port, noCertTCP(peerTCP), addr, n)
		tcpHandshakeRefused("PERMISSIVE: a client certificate from another CA to TCP port "+port, otherCATCP, addr, n)
	}
	refused("PERMISSIVE: TLS without a client certificate", noCert, app.Load)
	refused("PERMISSIVE: a client certificate from another CA", otherCA, app.Load)
	refused("PERMISSIVE: a certificate of the mesh's CA for another trust domain", foreign, app.Load)

	serveIstiod(xds, strict, nil)
	waitFor(t, "STRICT to refuse plaintext", 30*time.Second, func() (bool, string) {
		code, _, body, err := request(s.client, appAddr, "productpage")
		return err != nil, fmt.Sprintf("%d %q %v", code, body, err)
	})
	for _, port := range []string{"19080", "8081"} {
		before := app.Load() + app8081.Load()
		if code, _, body, err := request(s.client, net.JoinHostPort(podIP, port), "productpage"); err == nil {
			t.Errorf("STRICT: a plaintext request to %s: %d %q; want the connection closed", port, code, body)
		}
		if app.Load()+app8081.Load() != before {
			t.Errorf("STRICT: a plaintext request to %s reached the application", port)
		}
	}
	mtlsOK("STRICT: a mesh peer's mTLS request to the application port", peer, appAddr, false)
	tcpAddr := net.JoinHostPort(podIP, "19306")
	before := tcpApp.Load()
	if _, pong, err := ping(s.client, tcpAddr, false); err == nil || tcpApp.Load() != before {
		t.Errorf("STRICT: plaintext to the TCP port: %q %v; want the connection closed before it reaches the application", pong, err)
	}
	if pong, err := peerTCP.ping(s.client, tcpAddr); err != nil || pong != "PONG "+tcpAddr+" 127.0.0.6" {
		t.Errorf("STRICT: a mesh peer's mTLS to the TCP port: %q %v", pong, err)
	}
	tcpHandshakeRefused("STRICT: a certificate of the mesh's CA for another trust domain to the TCP port", foreignTCP, tcpAddr, tcpApp.Load)
	tcpHandshakeRefused("STRICT: TLS without a client certificate to the TCP port", noCertTCP(peerTCP), tcpAddr, tcpApp.Load)
	tcpHandshakeRefused("STRICT: a client certificate from another CA to the TCP port", otherCATCP, tcpAddr, tcpApp.Load)
	refused("STRICT: TLS without a client certificate", noCert, app.Load)
	refused("STRICT: a client certificate from another CA", otherCA, app.Load)
	refused("STRICT: a certificate of the mesh's CA for another trust domain", foreign, app.Load)

	// The TCP port's chain also accepts another trust domain: the next handshakes take
	// the new union of the chains' matchers (no reload), so a certificate of that trust
	// domain completes them everywhere; the HTTP port's chain, whose matchers do not
	// accept it, still refuses it after the handshake (no route: 404).
	partner := strictWithTCPSANs(t, strict, "spiffe://evil.example/")
	serveIstiod(xds, partner, nil)
	waitFor(t, "a new matcher of the TCP port's chain to reach the handshake", 30*time.Second, func() (bool, string) {
		pong, err := tls12(foreignTCP).ping(s.client, tcpAddr)
		return err == nil, fmt.Sprintf("%q %v", pong, err)
	})
	if pong, err := foreignTCP.ping(s.client, tcpAddr); err != nil || pong != "PONG "+tcpAddr+" 127.0.0.6" {
		t.Errorf("another trust domain the TCP port's chain accepts: %q %v", pong, err)
	}
	before = app.Load()
	if code, _, _, err := tls12(foreign).get(s.client, appAddr, false); err != nil || code != http.StatusNotFound || app.Load() != before {
		t.Errorf("another trust domain only the TCP port's chain accepts, to the HTTP port: %d %v; want the handshake completed and no route (404)", code, err)
	}
	refused("another CA, with a chain that accepts another trust domain", otherCA, app.Load)
	serveIstiod(xds, strict, nil)
	waitFor(t, "the trust domain's prefix alone to reach the handshake again", 30*time.Second, func() (bool, string) {
		pong, err := tls12(foreignTCP).ping(s.client, tcpAddr)
		return tlsAlert(err), fmt.Sprintf("%q %v", pong, err)
	})

	// Istio's AuthorizationPolicy on the TCP port (istiod's network RBAC filters):
	// reviews and ratings allowed to it, ratings and the source address 192.0.2.2
	// denied. A denied connection is closed before it reaches the application.
	authz := peerAuthResources(t, "strict-tcp-authz")
	withInboundCluster(t, authz, 19306)
	serveIstiod(xds, authz, nil)
	ratingsTCP := envoyPeer{cert: peerCert(ca, "spiffe://cluster.local/ns/default/sa/ratings"), roots: roots, server: productpageID, alpn: peerTCP.alpn}
	sleepTCP := envoyPeer{cert: peerCert(ca, "spiffe://cluster.local/ns/default/sa/sleep"), roots: roots, server: productpageID, alpn: peerTCP.alpn}
	waitFor(t, "the TCP AuthorizationPolicy to refuse ratings", 30*time.Second, func() (bool, string) {
		pong, err := ratingsTCP.ping(s.client, tcpAddr)
		return err != nil, fmt.Sprintf("%q %v", pong, err)
	})
	if pong, err := peerTCP.ping(s.client, tcpAddr); err != nil || pong != "PONG "+tcpAddr+" 127.0.0.6" {
		t.Errorf("TCP AuthorizationPolicy: an allowed principal (reviews): %q %v; want the application's answer", pong, err)
	}
	tcpRefused("TCP AuthorizationPolicy: a principal a DENY names (ratings)", ratingsTCP, tcpAddr, tcpApp.Load)
	tcpRefused("TCP AuthorizationPolicy: a principal no rule allows (sleep)", sleepTCP, tcpAddr, tcpApp.Load)
	const deniedIP = "192.0.2.2"
	s.client.MustRun(t, "ip", "addr", "add", deniedIP+"/32", "dev", clientLink(t, s.client))
	before = tcpApp.Load()
	if pong, err := peerTCP.pingFrom(s.client, deniedIP, tcpAddr); err == nil || tcpApp.Load() != before {
		t.Errorf("TCP AuthorizationPolicy: an allowed principal from the denied address %s: %q %v; want the connection closed", deniedIP, pong, err)
	}
	if pong, err := peerTCP.pingFrom(s.client, peerIP, tcpAddr); err != nil || pong != "PONG "+tcpAddr+" 127.0.0.6" {
		t.Errorf("TCP AuthorizationPolicy: an allowed principal from %s: %q %v", peerIP, pong, err)
	}
	// nginx logs a handshake that a client certificate fails at crit (what it cannot
	// verify, or none): those are the refused clients above.
	s.errorLogClean(t, "peer did not return a certificate", "certificate verify failed")
}

// strictWithTCPSANs returns res with a prefix matcher for prefix added to the client
// certificate matchers of virtualInbound's Istio mTLS chains for the TCP port 19306.
func strictWithTCPSANs(t *testing.T, res *dump.Resources, prefix string) *dump.Resources {
	t.Helper()
	out := *res
	out.Listeners = nil
	found := false
	for _, l := range res.Listeners {
		if l.GetName() == "virtualInbound" {
			l = proto.Clone(l).(*listenerv3.Listener)
			for _, fc := range l.GetFilterChains() {
				if fc.GetFilterChainMatch().GetDestinationPort().GetValue() != 19306 || fc.GetTransportSocket() == nil {
					continue
				}
				ctx := &tlsv3.DownstreamTlsContext{}
				if err := fc.GetTransportSocket().GetTypedConfig().UnmarshalTo(ctx); err != nil {
					t.Fatal(err)
				}
				vc := ctx.GetCommonTlsContext().GetCombinedValidationContext().GetDefaultValidationContext()
				//lint:ignore SA1019 istiod sets the deprecated field
				vc.MatchSubjectAltNames = append(vc.MatchSubjectAltNames, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: prefix}})
				a, err := anypb.New(ctx)
				if err != nil {
					t.Fatal(err)
				}
				fc.GetTransportSocket().ConfigType = &corev3.TransportSocket_TypedConfig{TypedConfig: a}
				found = true
			}
		}
		out.Listeners = append(out.Listeners, l)
	}
	if !found {
		t.Fatal("virtualInbound has no Istio mTLS chain for 19306")
	}
	return &out
}

// ping speaks the line protocol over mTLS from ns to addr and returns the answer.
func (p envoyPeer) ping(ns *netns.NS, addr string) (string, error) {
	return p.pingFrom(ns, "", addr)
}

// pingFrom is ping from the local address local of ns ("": any).
func (p envoyPeer) pingFrom(ns *netns.NS, local, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var raw net.Conn
	var err error
	if local == "" {
		raw, err = ns.Dial(ctx, "tcp", addr)
	} else {
		err = ns.Do(func() error {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
			var derr error
			raw, derr = d.DialContext(ctx, "tcp", addr)
			return derr
		})
	}
	if err != nil {
		return "", err
	}
	c := tls.Client(raw, p.config())
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := c.Handshake(); err != nil {
		return "", err
	}
	if _, err := io.WriteString(c, "PING\n"); err != nil {
		return "", err
	}
	pong, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSuffix(pong, "\n"), err
}

func noCertTCP(p envoyPeer) envoyPeer {
	p.cert = nil
	return p
}

// clientLink is the name of the link of ns that holds peerIP.
func clientLink(t *testing.T, ns *netns.NS) string {
	t.Helper()
	for _, line := range strings.Split(string(ns.MustRun(t, "ip", "-o", "-4", "addr", "show")), "\n") {
		if f := strings.Fields(line); len(f) > 3 && strings.HasPrefix(f[3], peerIP+"/") {
			return strings.TrimSuffix(f[1], ":")
		}
	}
	t.Fatalf("no link of the client's namespace holds %s", peerIP)
	return ""
}
