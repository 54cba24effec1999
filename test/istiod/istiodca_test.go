package istiod_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"

	"github.com/amesh-dev/amesh/internal/identity/identitytest"
	"github.com/amesh-dev/amesh/internal/meshpeer"
	"github.com/amesh-dev/amesh/test/istiod/harness"
)

// istiod's CA service (istio.io/api security/v1alpha1, proto package istio.v1.auth),
// the RPC istio-agent makes for a workload certificate. amesh does not depend on
// istio.io/api (see internal/xds/resource/istioalpn.go), so the two messages are
// described here, with only the fields the test sends and reads:
//
//	message IstioCertificateRequest  { string csr = 1; int64 validity_duration = 3; }
//	message IstioCertificateResponse { repeated string cert_chain = 1; }
const createCertificate = "/istio.v1.auth.IstioCertificateService/CreateCertificate"

var certRequestDesc, certResponseDesc = caMessages()

func caMessages() (req, resp protoreflect.MessageDescriptor) {
	field := func(name string, n int32, typ descriptorpb.FieldDescriptorProto_Type, label descriptorpb.FieldDescriptorProto_Label) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{Name: proto.String(name), Number: proto.Int32(n), Type: typ.Enum(), Label: label.Enum()}
	}
	const opt, rep = descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL, descriptorpb.FieldDescriptorProto_LABEL_REPEATED
	fd := &descriptorpb.FileDescriptorProto{
		// Its own registry below: the name clashes with nothing even if istio.io/api is
		// linked one day.
		Name:    proto.String("security/v1alpha1/ca.proto"),
		Package: proto.String("istio.v1.auth"),
		Syntax:  proto.String("proto3"),
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: proto.String("IstioCertificateRequest"), Field: []*descriptorpb.FieldDescriptorProto{
				field("csr", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, opt),
				field("validity_duration", 3, descriptorpb.FieldDescriptorProto_TYPE_INT64, opt),
			}},
			{Name: proto.String("IstioCertificateResponse"), Field: []*descriptorpb.FieldDescriptorProto{
				field("cert_chain", 1, descriptorpb.FieldDescriptorProto_TYPE_STRING, rep),
			}},
		},
	}
	f, err := protodesc.NewFile(fd, new(protoregistry.Files))
	if err != nil {
		panic("istiod CA messages: " + err.Error())
	}
	return f.Messages().ByName("IstioCertificateRequest"), f.Messages().ByName("IstioCertificateResponse")
}

// istiodWorkload is a workload certificate from istiod's CA, as istio-agent keeps it.
type istiodWorkload struct {
	id string
	// chain is cert_chain as istiod answered it (leaf first, the root last), which
	// istio-agent writes as cert-chain.pem; key is the key of the CSR (PKCS#1 RSA 2048,
	// istio-agent's default).
	chain, key []byte
	certs      []*x509.Certificate
	tls        tls.Certificate
}

// istiodCertificate asks istiod's CA, on its TLS port (15012) trusted through the mesh
// root, for the certificate of service account sa of the workload namespace, as
// istio-agent does: a CSR for the SPIFFE ID, with the service account's token (audience
// istio-ca) as the bearer token istiod verifies with a TokenReview.
func istiodCertificate(t *testing.T, roots *x509.CertPool, sa string) istiodWorkload {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), mustHappen)
	defer cancel()
	w := istiodWorkload{id: fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", namespace, sa)}
	tok, err := env.kube.Client.TokenRequest(ctx, namespace, sa, "istio-ca", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	w.key = pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	u, err := url.Parse(w.id)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}

	conn, err := grpc.NewClient(env.istiod.SecureGRPCAddr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		RootCAs: roots, ServerName: env.istiod.ServerName, MinVersion: tls.VersionTLS12,
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	req := dynamicpb.NewMessage(certRequestDesc)
	req.Set(certRequestDesc.Fields().ByName("csr"), protoreflect.ValueOfString(string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))))
	req.Set(certRequestDesc.Fields().ByName("validity_duration"), protoreflect.ValueOfInt64(int64(time.Hour/time.Second)))
	resp := dynamicpb.NewMessage(certResponseDesc)
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
	if err := conn.Invoke(ctx, createCertificate, req, resp); err != nil {
		t.Fatalf("istiod's CreateCertificate for %s: %v", w.id, err)
	}
	list := resp.Get(certResponseDesc.Fields().ByName("cert_chain")).List()
	for i := range list.Len() {
		w.chain = append(w.chain, list.Get(i).String()...)
	}
	if w.certs, err = x509Chain(w.chain); err != nil {
		t.Fatalf("istiod's answer for %s: %v", w.id, err)
	}
	if w.tls, err = tls.X509KeyPair(w.chain, w.key); err != nil {
		t.Fatalf("istiod's certificate for %s is not for the CSR's key: %v", w.id, err)
	}
	return w
}

// checkFromIstiod checks that w is istiod's work: its one identity is the SPIFFE ID
// asked for, it chains to istiod's root (the ConfigMap's, also the chain's last
// certificate) and to none of the test CAs.
func checkFromIstiod(t *testing.T, w istiodWorkload, rootPEM string, roots *x509.CertPool, testCAs ...*x509.Certificate) {
	t.Helper()
	leaf := w.certs[0]
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != w.id || len(leaf.DNSNames) != 0 {
		t.Errorf("istiod's certificate for %s has URIs %v and DNS names %v", w.id, leaf.URIs, leaf.DNSNames)
	}
	// The hour the request asked for (istiod backdates NotBefore a little), not istiod's
	// default day: istiod read the request's fields as this file describes them.
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life < time.Hour || life > 2*time.Hour {
		t.Errorf("istiod's certificate for %s is valid for %v, want the hour asked for", w.id, life)
	}
	root, _ := pem.Decode([]byte(rootPEM))
	if last := w.certs[len(w.certs)-1]; len(w.certs) < 2 || root == nil || !bytes.Equal(last.Raw, root.Bytes) {
		t.Errorf("the chain for %s does not end with the mesh root of ConfigMap istio-ca-root-cert", w.id)
	}
	verify := func(pool *x509.CertPool) error {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}})
		return err
	}
	if err := verify(roots); err != nil {
		t.Errorf("istiod's certificate for %s does not chain to the mesh root: %v", w.id, err)
	}
	for _, ca := range testCAs {
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		if verify(pool) == nil {
			t.Errorf("istiod's certificate for %s chains to a test CA (%s)", w.id, ca.Subject)
		}
	}
}

// requireIstiodNginx returns the directory of the nginx modules scripts/nginx-module/build.sh
// builds for Debian's nginx (built on first use), for a test that runs that nginx with
// workload certificates from istiod. Missing binaries or packages skip the test, and
// fail it when CI is set, as requireEnv does.
func requireIstiodNginx(t *testing.T) string {
	t.Helper()
	requireEnv(t)
	module, err := harness.OriginalDstModule()
	if errors.Is(err, harness.ErrNoBinaries) {
		skipOrFail(t, err)
	} else if err != nil {
		t.Fatal(err)
	}
	for _, p := range nginxDeps {
		if _, err := os.Stat(p); err != nil {
			skipOrFail(t, fmt.Errorf("%s is missing: run scripts/install-test-deps.sh", p))
		}
	}
	return module
}

// skipOrFail skips the test for err, or fails it when CI is set, as requireEnv does.
func skipOrFail(t *testing.T, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("CI is set but the test cannot run: %v", err)
	}
	t.Skip(err)
}

// istiodMesh is the mesh of the tests with istiod's certificates: the root of ConfigMap
// istio-ca-root-cert, the workload certificates istiod's CA issues for default/productpage
// and default/reviews (each checked by checkFromIstiod), and another CA of the same trust
// domain, as identitytest (and the tiers without istiod) make workload certificates.
type istiodMesh struct {
	rootPEM              string
	roots                *x509.CertPool
	productpage, reviews istiodWorkload
	other                *identitytest.CA
}

func newIstiodMesh(t *testing.T) istiodMesh {
	t.Helper()
	// The scenario has productpage's service account only; istiod signs for a token's
	// service account, which the API server issues only while the account exists.
	sa := harness.Object{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "reviews", "namespace": namespace}}
	apply(t, sa)
	t.Cleanup(func() { deleteAll(t, []harness.Object{sa}) })

	m := istiodMesh{rootPEM: rootCert(t), roots: x509.NewCertPool()}
	if !m.roots.AppendCertsFromPEM([]byte(m.rootPEM)) {
		t.Fatal("ConfigMap istio-ca-root-cert holds no certificate")
	}
	m.productpage = istiodCertificate(t, m.roots, "productpage")
	m.reviews = istiodCertificate(t, m.roots, "reviews")
	var err error
	if m.other, err = identitytest.NewCA("cluster.local"); err != nil {
		t.Fatal(err)
	}
	shaped, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []istiodWorkload{m.productpage, m.reviews} {
		checkFromIstiod(t, w, m.rootPEM, m.roots, m.other.Root(), shaped.Cert)
	}
	return m
}

// upstreamTLSRoute is a route of test/nginx's upstreamtlscheck.lua (its file documents
// the format): one TLS node and the profile attached for it, files as istio-agent
// writes them.
type upstreamTLSRoute struct {
	Nodes   []upstreamTLSNode  `json:"nodes"`
	Profile upstreamTLSProfile `json:"profile"`
}

type upstreamTLSNode struct {
	Addr string `json:"addr"`
	Port int    `json:"port"`
	TLS  bool   `json:"tls"`
}

type upstreamTLSProfile struct {
	SNI      string              `json:"sni"`
	ALPN     []string            `json:"alpn"`
	CertFile string              `json:"cert_file"`
	KeyFile  string              `json:"key_file"`
	CAFile   string              `json:"ca_file"`
	SANs     []map[string]string `json:"sans"`
}

// testNginx is Debian's nginx running a configuration of testdata, listening on port.
type testNginx struct {
	prefix string
	port   int
}

// startNginx runs Debian's nginx with testdata's template tmpl, executed with data plus
// Prefix (nginx's own temporary directory), Port (a free port the configuration listens
// on, on 127.0.0.1) and Root (the test runs as root: the template makes root the
// workers' user, so files the test writes can be its own). It returns once nginx
// accepts connections, and stops it at the test's end, logging its error log on
// failure.
func startNginx(t *testing.T, tmpl string, data map[string]any) *testNginx {
	t.Helper()
	n := &testNginx{prefix: t.TempDir(), port: freePort(t)}
	parsed, err := template.New(tmpl).Option("missingkey=error").ParseFiles(filepath.Join("testdata", tmpl))
	if err != nil {
		t.Fatal(err)
	}
	data["Prefix"], data["Port"], data["Root"] = n.prefix, n.port, os.Geteuid() == 0
	var conf bytes.Buffer
	if err := parsed.Execute(&conf, data); err != nil {
		t.Fatal(err)
	}
	confPath := filepath.Join(n.prefix, "nginx.conf")
	if err := os.WriteFile(confPath, conf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	exited, stderr := runNginx(t, n.prefix, confPath, nil, "error.log")
	waitUntil(t, "nginx listens", func() bool {
		select {
		case <-exited:
			t.Fatalf("nginx exited: %s", stderr.String())
		default:
		}
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(n.port))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return n
}

func (n *testNginx) errorLog() []byte {
	b, _ := os.ReadFile(filepath.Join(n.prefix, "error.log"))
	return b
}

// startUpstreamTLSNginx starts Debian's nginx with ngx_http_amesh_upstream_tls_module,
// sending each route's requests to its node with its profile.
func startUpstreamTLSNginx(t *testing.T, module string, routes map[string]upstreamTLSRoute) *testNginx {
	t.Helper()
	checkDir, err := filepath.Abs(filepath.Join("..", "nginx"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(routes)
	if err != nil {
		t.Fatal(err)
	}
	routesFile := writeTestFile(t, t.TempDir(), "routes.json", b)
	return startNginx(t, "upstreamtls-nginx.conf.tmpl", map[string]any{
		"Module":   filepath.Join(module, "ngx_http_amesh_upstream_tls_module.so"),
		"CheckDir": checkDir, "LuaDir": filepath.Join(checkDir, "..", "..", "lua"), "Routes": routesFile,
	})
}

// writeTestFile writes b to dir/name, readable by the test's user only: nginx's workers
// run as that user (or as root), and a key must not be more readable than
// istio-agent's.
func writeTestFile(t *testing.T, dir, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// get sends GET path with Host host through nginx and returns the status and what the
// peer saw (zero unless it answered).
func (n *testNginx) get(t *testing.T, host, path string) (int, meshpeer.Seen) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d%s", n.port, path), nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s meshpeer.Seen
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &s); err != nil {
			t.Fatalf("%s: %v: %s", path, err, b)
		}
	}
	return resp.StatusCode, s
}

// TestOutboundMTLSWithIstiodCerts: Istio mTLS from nginx with amesh's upstream TLS
// module, as amesh configures it for istiod's auto-mTLS cluster
// outbound|9080||reviews.default.svc.cluster.local, with workload certificates issued by
// the real istiod's CA (not a Go CA shaped like it): productpage's as the client
// certificate, reviews' served by a peer that answers as a sidecar's inbound listener
// and requires clients of istiod's root. The request goes through with Istio's SNI and
// ALPN and the peer sees productpage's identity; a SAN matcher for another service
// account, or a client certificate of another CA, fails the connection (502).
func TestOutboundMTLSWithIstiodCerts(t *testing.T) {
	module := requireIstiodNginx(t)
	m := newIstiodMesh(t)
	productpage, reviewsW, rootPEM, roots := m.productpage, m.reviews, m.rootPEM, m.roots
	foreign, err := m.other.Issue(identitytest.Options{SPIFFE: productpage.id})
	if err != nil {
		t.Fatal(err)
	}

	peer, err := meshpeer.StartPeerTrusting("cluster.local", roots, reviewsW.tls)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = peer.Close() })

	// OUTPUT_CERTS as istio-agent writes it for productpage, and a foreign one.
	dir := t.TempDir()
	write := func(name string, b []byte) string { return writeTestFile(t, dir, name, b) }
	rootFile := write("root-cert.pem", []byte(rootPEM))
	certFile, keyFile := write("cert-chain.pem", productpage.chain), write("key.pem", productpage.key)
	foreignCert, foreignKey := write("foreign-cert-chain.pem", foreign.Chain), write("foreign-key.pem", foreign.Key)

	const sni = "outbound_.9080_._.reviews.default.svc.cluster.local"
	alpn := []string{"istio-http/1.1", "istio", "http/1.1"}
	profile := func(san, cert, key string) upstreamTLSProfile {
		return upstreamTLSProfile{SNI: sni, ALPN: alpn, CertFile: cert, KeyFile: key, CAFile: rootFile,
			SANs: []map[string]string{{"value": san}}}
	}
	node := func() []upstreamTLSNode {
		host, port, err := net.SplitHostPort(peer.Addr)
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.Atoi(port)
		return []upstreamTLSNode{{Addr: host, Port: p, TLS: true}}
	}
	ratingsID := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/ratings", namespace)
	n := startUpstreamTLSNginx(t, module, map[string]upstreamTLSRoute{
		"reviews":        {Nodes: node(), Profile: profile(reviewsW.id, certFile, keyFile)},
		"ratings-san":    {Nodes: node(), Profile: profile(ratingsID, certFile, keyFile)},
		"foreign-client": {Nodes: node(), Profile: profile(reviewsW.id, foreignCert, foreignKey)},
	})
	const host = "reviews.default.svc.cluster.local:9080"

	code, s := n.get(t, host, "/reviews/0")
	if code != http.StatusOK {
		t.Fatalf("reviews: %d", code)
	}
	want := meshpeer.Seen{Chain: meshpeer.ChainMTLSHTTP, ALPNOffered: alpn, ALPN: "http/1.1", SNI: sni,
		ClientID: productpage.id, Host: host, Path: "/reviews/0", Conn: s.Conn}
	if fmt.Sprint(s) != fmt.Sprint(want) {
		t.Errorf("reviews: the peer saw\n %+v\nwant\n %+v", s, want)
	}

	for _, c := range []struct{ path, logged string }{
		// nginx verifies the peer: istiod's certificate for reviews is not ratings'.
		{"/ratings-san/0", "none of the expected subject alt names"},
		// The peer verifies nginx: a certificate for productpage's identity that istiod
		// did not issue.
		{"/foreign-client/0", "alert unknown ca"},
	} {
		before, hs := len(n.errorLog()), peer.Handshakes.Load()
		if code, _ := n.get(t, host, c.path); code != http.StatusBadGateway {
			t.Errorf("%s: %d, want 502", c.path, code)
		}
		if logged := string(n.errorLog()[before:]); !strings.Contains(logged, c.logged) {
			t.Errorf("%s: the error log does not say %q:\n%s", c.path, c.logged, logged)
		}
		if peer.Handshakes.Load() == hs {
			t.Errorf("%s: the peer was not even contacted", c.path)
		}
	}
}

// TestInboundMTLSWithIstiodCerts: Istio mTLS into nginx, terminated as the sidecar's TLS
// socket terminates inbound mTLS for productpage (testdata/inboundtls-nginx.conf.tmpl):
// productpage's certificate and key from the real istiod's CA, client certificates
// required and verified against istiod's root, nginx/original_dst's http module reporting
// the TLS peer. The client is reviews' sidecar as Envoy connects to productpage's
// auto-mTLS endpoint: reviews' certificate from istiod, Istio's SNI and ALPN, the server
// verified against istiod's root and matched by its SPIFFE ID (match_subject_alt_names)
// rather than by the SNI. nginx's variables name reviews as the verified peer and
// productpage as the local identity; a client certificate of another CA, or none, is
// refused.
func TestInboundMTLSWithIstiodCerts(t *testing.T) {
	module := requireIstiodNginx(t)
	m := newIstiodMesh(t)
	dir := t.TempDir()
	n := startNginx(t, "inboundtls-nginx.conf.tmpl", map[string]any{
		"Module": filepath.Join(module, "ngx_http_amesh_original_dst_module.so"),
		"Cert":   writeTestFile(t, dir, "cert-chain.pem", m.productpage.chain),
		"Key":    writeTestFile(t, dir, "key.pem", m.productpage.key),
		"CA":     writeTestFile(t, dir, "root-cert.pem", []byte(m.rootPEM)),
	})
	// reviews' SPIFFE ID in a certificate istiod did not issue.
	files, err := m.other.Issue(identitytest.Options{SPIFFE: m.reviews.id})
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := tls.X509KeyPair(files.Chain, files.Key)
	if err != nil {
		t.Fatal(err)
	}

	const sni = "outbound_.9080_._.productpage.default.svc.cluster.local"
	alpn := []string{"istio-http/1.1", "istio", "http/1.1"}
	// get sends GET /vars over a connection of its own, with client certificate cert
	// (nil: none), and returns the response with its body.
	get := func(cert *tls.Certificate) (*http.Response, string, error) {
		cfg := &tls.Config{
			ServerName: sni,
			NextProtos: alpn,
			MinVersion: tls.VersionTLS12,
			// Envoy checks the server's chain against the mesh root and its SANs against
			// the cluster's matchers, never the SNI (an outbound_ name, in no
			// certificate): VerifyConnection does that, so the name check is off.
			InsecureSkipVerify: true, //nolint:gosec
			VerifyConnection: func(cs tls.ConnectionState) error {
				leaf := cs.PeerCertificates[0]
				inter := x509.NewCertPool()
				for _, c := range cs.PeerCertificates[1:] {
					inter.AddCert(c)
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: m.roots, Intermediates: inter}); err != nil {
					return err
				}
				for _, u := range leaf.URIs {
					if u.String() == m.productpage.id {
						return nil
					}
				}
				return fmt.Errorf("the server's URI SANs %v are not %s", leaf.URIs, m.productpage.id)
			},
		}
		if cert != nil {
			cfg.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
		resp, err := c.Get(fmt.Sprintf("https://127.0.0.1:%d/vars", n.port))
		if err != nil {
			return nil, "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp, string(b), err
	}

	resp, body, err := get(&m.reviews.tls)
	if err != nil {
		t.Fatalf("reviews' certificate: %v", err)
	}
	if p := resp.TLS.NegotiatedProtocol; p != "http/1.1" {
		t.Errorf("ALPN %q, want http/1.1", p)
	}
	h := sha256.Sum256(m.reviews.certs[0].Raw)
	want := fmt.Sprintf("verified=1\nuri=%s\ndns=\nsubject=\nhash=%s\nlocal=%s\n", m.reviews.id, hex.EncodeToString(h[:]), m.productpage.id)
	if resp.StatusCode != http.StatusOK || body != want {
		t.Errorf("reviews' certificate: %d\n%s\nwant\n%s", resp.StatusCode, body, want)
	}

	// nginx's verify callback lets every handshake complete (unlike Envoy, which fails
	// it): ssl_verify_client on refuses the request instead, with a 400 page and an info
	// line in the error log.
	for _, c := range []struct {
		name   string
		cert   *tls.Certificate
		body   string
		logged string
	}{
		// identitytest's chain ends with its own root, which is not istiod's:
		// X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN.
		{"another CA's certificate", &foreign, "The SSL certificate error", "client SSL certificate verify error: (19:"},
		{"no certificate", nil, "No required SSL certificate was sent", "client sent no required SSL certificate"},
	} {
		before := len(n.errorLog())
		resp, body, err := get(c.cert)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(body, c.body) {
			t.Errorf("%s: %d %q, want 400 %q", c.name, resp.StatusCode, body, c.body)
		}
		if logged := string(n.errorLog()[before:]); !strings.Contains(logged, c.logged) {
			t.Errorf("%s: the error log does not say %q:\n%s", c.name, c.logged, logged)
		}
	}
}
