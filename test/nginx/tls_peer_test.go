package nginx

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// tlsPeerConf is stock nginx terminating inbound mTLS as the sidecar's TLS listener
// does (the workload certificate, client certificates verified against the mesh
// root), with a plaintext listener on the same server, nginx/original_dst's http module
// and peercheck.lua running amesh.xfcc and amesh.rbac in front of an upstream that
// echoes the x-forwarded-client-cert headers it gets. /vars shows the module's
// variables. The second server verifies client certificates optionally and trusts no
// root (optional_no_ca): a certificate is presented but not verified.
const tlsPeerConf = stockLuaNginx + `
    server {
        listen 127.0.0.1:{{.Plain}};
        listen 127.0.0.1:{{.TLS}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_client_certificate {{.CA}};
        ssl_verify_client on;
        location = /vars {
            return 200 "verified=$amesh_peer_verified\nuri=$amesh_peer_uri_sans\ndns=$amesh_peer_dns_sans\nsubject=$amesh_peer_subject\nhash=$amesh_peer_cert_sha256\nlocal=$amesh_local_uri_sans\n";
        }
        location / {
            rewrite_by_lua_block { require("peercheck").run("{{.Cases}}") }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://127.0.0.1:{{.Echo}};
        }
    }
    server {
        listen 127.0.0.1:{{.Optional}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_verify_client optional_no_ca;
        location = /vars {
            return 200 "verified=$amesh_peer_verified\nuri=$amesh_peer_uri_sans\ndns=$amesh_peer_dns_sans\nsubject=$amesh_peer_subject\nhash=$amesh_peer_cert_sha256\nlocal=$amesh_local_uri_sans\n";
        }
    }
}
`

type peerNginx struct {
	t                    *testing.T
	prefix, cases        string
	plain, tls, optional int
	ca                   *meshpeer.CA
	server               *meshpeer.Leaf
	serverID             string
}

func startPeerNginx(t *testing.T) *peerNginx {
	t.Helper()
	requireNginx(t)
	mods := nginxModules(t)
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	n := &peerNginx{t: t, prefix: t.TempDir(), ca: ca, serverID: ca.SPIFFE("default", "productpage"),
		plain: freePort(t), tls: freePort(t), optional: freePort(t)}
	if n.server, err = ca.Workload(n.serverID); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(n.prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	n.cases = filepath.Join(n.prefix, "cases")
	if err := os.Mkdir(n.cases, 0o755); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{"cert.pem": n.server.CertPEM, "key.pem": n.server.KeyPEM, "ca.pem": ca.PEM}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(n.prefix, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(r.Header.Values("X-Forwarded-Client-Cert"))
	}))
	t.Cleanup(echo.Close)
	u, _ := url.Parse(echo.URL)
	startStockNginx(t, n.prefix, tlsPeerConf, map[string]any{
		"Module": filepath.Join(mods, "ngx_http_amesh_original_dst_module.so"), "LogLevel": "debug",
		"Plain": n.plain, "TLS": n.tls, "Optional": n.optional, "Echo": u.Port(), "Cases": n.cases,
		"Cert": filepath.Join(n.prefix, "cert.pem"), "Key": filepath.Join(n.prefix, "key.pem"), "CA": filepath.Join(n.prefix, "ca.pem"),
	}, n.plain)
	return n
}

// client connects over mTLS with leaf (nil: plaintext); one client keeps one
// connection alive.
func (n *peerNginx) client(leaf *meshpeer.Leaf) (*http.Client, string) {
	if leaf == nil {
		return &http.Client{}, fmt.Sprintf("http://127.0.0.1:%d", n.plain)
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{
		Certificates: []tls.Certificate{leaf.TLS},
		// The server is checked by the test's expectations, not by name.
		InsecureSkipVerify: true, //nolint:gosec
	}}
	n.t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, fmt.Sprintf("https://127.0.0.1:%d", n.tls)
}

// get sends GET path for case c with headers (repeated names repeat) and returns the
// status and body.
func get(t *testing.T, cl *http.Client, base, path, c string, headers ...[2]string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Peer-Case", c)
	for _, h := range headers {
		req.Header.Add(h[0], h[1])
	}
	resp, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// writeCase writes the plugin configs the translator gives the route of a connection
// manager changed by hcm, with filters in front of the router.
func (n *peerNginx) writeCase(name string, hcm func(*hcmv3.HttpConnectionManager), filters ...*hcmv3.HttpFilter) {
	n.t.Helper()
	ps := routePlugins(n.t, hcm, filters...)
	if _, ok := ps["amesh-xfcc"]; !ok {
		n.t.Fatalf("case %s: the route has no amesh-xfcc: %v", name, ps)
	}
	b, err := json.Marshal(ps)
	if err != nil {
		n.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(n.cases, name+".json"), b, 0o644); err != nil {
		n.t.Fatal(err)
	}
}

func sha256Hex(der []byte) string {
	h := sha256.Sum256(der)
	return hex.EncodeToString(h[:])
}

// The module's variables are the verified peer's names as Envoy reads them, once per
// connection (keepalive requests share one read); a plaintext connection has none, and
// a certificate that did not verify names nobody.
func TestTLSPeerVariables(t *testing.T) {
	n := startPeerNginx(t)
	id := n.ca.SPIFFE("default", "sleep")
	u, _ := url.Parse(id)
	u2, _ := url.Parse("spiffe://other.example/a,b")
	leaf, err := n.ca.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "sleep", Organization: []string{"Acme, Inc"}},
		URIs:    []*url.URL{u, u2}, DNSNames: []string{"sleep.default.svc", "sleep.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	cl, base := n.client(leaf)
	want := fmt.Sprintf("verified=1\nuri=%s,spiffe://other.example/a%%2Cb\ndns=sleep.default.svc,sleep.example\nsubject=CN=sleep,O=Acme\\, Inc\nhash=%s\nlocal=%s\n",
		id, sha256Hex(leaf.TLS.Certificate[0]), n.serverID)
	for i := 0; i < 2; i++ {
		if code, body := get(t, cl, base, "/vars", ""); code != 200 || body != want {
			t.Fatalf("request %d over mTLS: %d\n%s\nwant\n%s", i, code, body, want)
		}
	}
	if reads := bytes.Count(n.errorLog(), []byte("amesh tls peer: uri sans")); reads != 1 {
		t.Errorf("the peer was read %d times for two requests on one connection, want once", reads)
	}
	plain, pbase := n.client(nil)
	if code, body := get(t, plain, pbase, "/vars", ""); code != 200 || body != "verified=\nuri=\ndns=\nsubject=\nhash=\nlocal=\n" {
		t.Errorf("plaintext: %d\n%s", code, body)
	}
	// A certificate of another root on the server that does not require a valid one.
	other, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Workload(id)
	if err != nil {
		t.Fatal(err)
	}
	ocl, _ := n.client(forged)
	if code, body := get(t, ocl, fmt.Sprintf("https://127.0.0.1:%d", n.optional), "/vars", ""); code != 200 ||
		body != "verified=0\nuri=\ndns=\nsubject=\nhash=\nlocal="+n.serverID+"\n" {
		t.Errorf("unverified certificate: %d\n%s", code, body)
	}
}

func (n *peerNginx) errorLog() []byte {
	b, _ := os.ReadFile(filepath.Join(n.prefix, "error.log"))
	return b
}

func authenticated(m *rbacv3.Principal_Authenticated) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: m}}
}

// Istio's principals and namespaces (source.principal, source.namespace) are Envoy's
// authenticated principal matched against the mTLS peer's SPIFFE ID: allowed and denied
// by the peer's identity over mTLS, and never matched on plaintext, where the same
// ALLOW rules deny and the same DENY rules let the request through.
func TestRBACAuthenticatedPrincipal(t *testing.T) {
	n := startPeerNginx(t)
	sleepID, fooID := n.ca.SPIFFE("default", "sleep"), n.ca.SPIFFE("foo", "bar")
	sleep, err := n.ca.Workload(sleepID)
	if err != nil {
		t.Fatal(err)
	}
	foo, err := n.ca.Workload(fooID)
	if err != nil {
		t.Fatal(err)
	}
	dnsOnly, err := n.ca.Server("db.example")
	if err != nil {
		t.Fatal(err)
	}
	// The shapes istiod emits (pilot/pkg/security/authz/model): principals exact,
	// namespaces a regex on the SPIFFE ID, "*" any authenticated peer.
	principal := authenticated(&rbacv3.Principal_Authenticated{PrincipalName: sm("exact", sleepID, false)})
	namespace := authenticated(&rbacv3.Principal_Authenticated{PrincipalName: sm("regex", ".*/ns/foo/.*", false)})
	anyPeer := authenticated(&rbacv3.Principal_Authenticated{})
	// A DNS SAN is matched when no URI SAN matches, the subject last.
	byDNS := authenticated(&rbacv3.Principal_Authenticated{PrincipalName: sm("exact", "db.example", false)})
	bySubject := authenticated(&rbacv3.Principal_Authenticated{PrincipalName: sm("exact", "CN=db.example", false)})
	rules := func(action rbacv3.RBAC_Action, p *rbacv3.Principal) *hcmv3.HttpFilter {
		return rbacHTTP("envoy.filters.http.rbac", &rbacv3.RBAC{Action: action, Policies: map[string]*rbacv3.Policy{
			"p": policy([]*rbacv3.Permission{permAny()}, &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{
				{Identifier: &rbacv3.Principal_OrIds{OrIds: &rbacv3.Principal_Set{Ids: []*rbacv3.Principal{p}}}},
			}}}}),
		}})
	}
	n.writeCase("allow-principal", nil, rules(rbacv3.RBAC_ALLOW, principal))
	n.writeCase("allow-namespace", nil, rules(rbacv3.RBAC_ALLOW, namespace))
	n.writeCase("allow-any", nil, rules(rbacv3.RBAC_ALLOW, anyPeer))
	n.writeCase("deny-principal", nil, rules(rbacv3.RBAC_DENY, principal))
	n.writeCase("allow-dns", nil, rules(rbacv3.RBAC_ALLOW, byDNS))
	n.writeCase("allow-subject", nil, rules(rbacv3.RBAC_ALLOW, bySubject))

	type peer struct {
		name string
		leaf *meshpeer.Leaf
	}
	sleepP, fooP, dnsP, plainP := peer{"sleep", sleep}, peer{"foo/bar", foo}, peer{"db.example", dnsOnly}, peer{"plaintext", nil}
	for _, tc := range []struct {
		c     string
		from  peer
		allow bool
	}{
		{"allow-principal", sleepP, true},
		{"allow-principal", fooP, false},
		{"allow-principal", plainP, false},
		{"allow-namespace", fooP, true},
		{"allow-namespace", sleepP, false},
		{"allow-namespace", plainP, false},
		{"allow-any", sleepP, true},
		{"allow-any", plainP, false},
		{"deny-principal", sleepP, false},
		{"deny-principal", fooP, true},
		{"deny-principal", plainP, true},
		{"allow-dns", dnsP, true},
		{"allow-dns", sleepP, false},
		{"allow-subject", dnsP, true},
		{"allow-subject", fooP, false},
	} {
		cl, base := n.client(tc.from.leaf)
		code, body := get(t, cl, base, "/", tc.c)
		if allowed := code == 200; allowed != tc.allow || (!allowed && (code != 403 || body != "RBAC: access denied")) {
			t.Errorf("%s from %s: %d %q, want allowed %v", tc.c, tc.from.name, code, body, tc.allow)
		}
	}
}

// x-forwarded-client-cert reaches the upstream exactly as Envoy's connection manager
// leaves it, for each forward_client_cert_details, over mTLS and on plaintext, with a
// header the client forged; and the header amesh-rbac reads is the rewritten one.
func TestXFCC(t *testing.T) {
	n := startPeerNginx(t)
	id := n.ca.SPIFFE("default", "sleep")
	u, _ := url.Parse(id)
	leaf, err := n.ca.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "sleep"},
		URIs:    []*url.URL{u}, DNSNames: []string{"a.example", "b.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	noURI, err := n.ca.Server("db.example")
	if err != nil {
		t.Fatal(err)
	}
	mode := func(m hcmv3.HttpConnectionManager_ForwardClientCertDetails) func(*hcmv3.HttpConnectionManager) {
		return func(h *hcmv3.HttpConnectionManager) {
			h.ForwardClientCertDetails = m
			// Istio's inbound details.
			h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Subject: wrapperspb.Bool(true), Dns: true, Uri: true}
		}
	}
	n.writeCase("default", nil)
	n.writeCase("sanitize", mode(hcmv3.HttpConnectionManager_SANITIZE))
	n.writeCase("forward-only", mode(hcmv3.HttpConnectionManager_FORWARD_ONLY))
	n.writeCase("append-forward", mode(hcmv3.HttpConnectionManager_APPEND_FORWARD))
	n.writeCase("sanitize-set", mode(hcmv3.HttpConnectionManager_SANITIZE_SET))
	n.writeCase("always-forward-only", mode(hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY))
	n.writeCase("uri-only", func(h *hcmv3.HttpConnectionManager) {
		h.ForwardClientCertDetails = hcmv3.HttpConnectionManager_SANITIZE_SET
		h.SetCurrentClientCertDetails = &hcmv3.HttpConnectionManager_SetCurrentClientCertDetails{Uri: true}
	})
	// A DENY rule on the header: Envoy's RBAC filter sees the header after the rewrite.
	denyXFCC := rbacHTTP("envoy.filters.http.rbac", &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{
		"p": policy([]*rbacv3.Permission{permHeader(hdrStr("x-forwarded-client-cert", "contains", "evil"))}),
	}})
	n.writeCase("sanitize-rbac", mode(hcmv3.HttpConnectionManager_SANITIZE), denyXFCC)
	n.writeCase("always-forward-only-rbac", mode(hcmv3.HttpConnectionManager_ALWAYS_FORWARD_ONLY), denyXFCC)

	forged := [2]string{"X-Forwarded-Client-Cert", "By=spiffe://evil;URI=spiffe://evil"}
	forged2 := [2]string{"X-Forwarded-Client-Cert", "URI=spiffe://evil2"}
	hash := sha256Hex(leaf.TLS.Certificate[0])
	mine := "By=" + n.serverID + ";Hash=" + hash + `;Subject="CN=sleep";URI=` + id + ";DNS=a.example;DNS=b.example"
	mineNoURI := "By=" + n.serverID + ";Hash=" + sha256Hex(noURI.TLS.Certificate[0]) + `;Subject="CN=db.example";URI=;DNS=db.example`
	none := "null" // the upstream got no such header
	one := func(v string) string { b, _ := json.Marshal([]string{v}); return string(b) }
	for _, tc := range []struct {
		c       string
		leaf    *meshpeer.Leaf
		headers [][2]string
		code    int
		want    string
	}{
		{"default", leaf, [][2]string{forged}, 200, none},
		{"default", nil, [][2]string{forged}, 200, none},
		{"sanitize", leaf, [][2]string{forged}, 200, none},
		{"sanitize", nil, [][2]string{forged}, 200, none},
		{"forward-only", leaf, [][2]string{forged}, 200, one(forged[1])},
		{"forward-only", nil, [][2]string{forged}, 200, none},
		{"append-forward", leaf, [][2]string{forged}, 200, one(forged[1] + "," + mine)},
		{"append-forward", leaf, [][2]string{forged, forged2}, 200, one(forged[1] + "," + forged2[1] + "," + mine)},
		{"append-forward", leaf, nil, 200, one(mine)},
		{"append-forward", noURI, nil, 200, one(mineNoURI)},
		{"append-forward", nil, [][2]string{forged}, 200, none},
		{"sanitize-set", leaf, [][2]string{forged}, 200, one(mine)},
		{"sanitize-set", nil, [][2]string{forged}, 200, none},
		{"always-forward-only", leaf, [][2]string{forged}, 200, one(forged[1])},
		{"always-forward-only", nil, [][2]string{forged}, 200, one(forged[1])},
		{"uri-only", leaf, [][2]string{forged}, 200, one("By=" + n.serverID + ";Hash=" + hash + ";URI=" + id)},
		{"sanitize-rbac", nil, [][2]string{forged}, 200, none},
		{"always-forward-only-rbac", nil, [][2]string{forged}, 403, ""},
	} {
		cl, base := n.client(tc.leaf)
		code, body := get(t, cl, base, "/", tc.c, tc.headers...)
		if code != tc.code || (code == 200 && strings.TrimSpace(body) != tc.want) {
			t.Errorf("%s (mTLS %v, %d forged): %d %s, want %d %s", tc.c, tc.leaf != nil, len(tc.headers), code, body, tc.code, tc.want)
		}
	}
}
