package nginx

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/amesh-dev/amesh/internal/meshpeer"
)

// streamPeerConf is stock nginx's stream subsystem terminating mTLS as the sidecar's
// stream server does on its TLS socket (the workload certificate, client certificates
// verified against the mesh root) and answering each connection with the TLS peer's
// variables of nginx/original_dst's stream module; a plaintext server and one that
// verifies optionally against no root (optional_no_ca) answer the same.
const streamPeerConf = `{{if .Root}}user root root;
{{end}}worker_processes 1;
daemon off;
pid {{.Prefix}}/nginx.pid;
error_log {{.Prefix}}/error.log debug;
load_module /usr/lib/nginx/modules/ngx_stream_module.so;
load_module {{.Module}};
events {
    worker_connections 64;
}
stream {
    server {
        listen 127.0.0.1:{{.TLS}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_client_certificate {{.CA}};
        ssl_verify_client on;
        return "verified=$amesh_peer_verified\nuri=$amesh_peer_uri_sans\ndns=$amesh_peer_dns_sans\nsubject=$amesh_peer_subject\nhash=$amesh_peer_cert_sha256\nlocal=$amesh_local_uri_sans\n";
    }
    server {
        listen 127.0.0.1:{{.Plain}};
        return "verified=$amesh_peer_verified\nuri=$amesh_peer_uri_sans\ndns=$amesh_peer_dns_sans\nsubject=$amesh_peer_subject\nhash=$amesh_peer_cert_sha256\nlocal=$amesh_local_uri_sans\n";
    }
    server {
        listen 127.0.0.1:{{.Optional}} ssl;
        ssl_certificate {{.Cert}};
        ssl_certificate_key {{.Key}};
        ssl_verify_client optional_no_ca;
        return "verified=$amesh_peer_verified\nuri=$amesh_peer_uri_sans\ndns=$amesh_peer_dns_sans\nsubject=$amesh_peer_subject\nhash=$amesh_peer_cert_sha256\nlocal=$amesh_local_uri_sans\n";
    }
}
`

// streamAnswer connects to port (over TLS with leaf when tlsOn) and returns what the
// server writes before it closes.
func streamAnswer(t *testing.T, port int, tlsOn bool, leaf *meshpeer.Leaf) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var c net.Conn
	var err error
	if tlsOn {
		cfg := &tls.Config{InsecureSkipVerify: true} //nolint:gosec // the test checks the server by its answers
		if leaf != nil {
			cfg.Certificates = []tls.Certificate{leaf.TLS}
		}
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	} else {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading from %s: %v", addr, err)
	}
	return string(b)
}

// The stream module's TLS peer variables are those of the http module: the verified
// peer's names as Envoy reads them, read once per connection; a plaintext connection
// has none, and a certificate that did not verify names nobody.
func TestStreamTLSPeerVariables(t *testing.T) {
	requireNginx(t)
	mods := nginxModules(t)
	ca, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	serverID := ca.SPIFFE("default", "productpage")
	server, err := ca.Workload(serverID)
	if err != nil {
		t.Fatal(err)
	}
	prefix := t.TempDir()
	if err := os.Chmod(prefix, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"cert.pem": server.CertPEM, "key.pem": server.KeyPEM, "ca.pem": ca.PEM} {
		if err := os.WriteFile(filepath.Join(prefix, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	plain, tlsPort, optional := freePort(t), freePort(t), freePort(t)
	startStockNginx(t, prefix, streamPeerConf, map[string]any{
		"Module": filepath.Join(mods, "ngx_stream_amesh_original_dst_module.so"),
		"Plain":  plain, "TLS": tlsPort, "Optional": optional,
		"Cert": filepath.Join(prefix, "cert.pem"), "Key": filepath.Join(prefix, "key.pem"), "CA": filepath.Join(prefix, "ca.pem"),
	}, plain)

	id := ca.SPIFFE("default", "sleep")
	u, _ := url.Parse(id)
	u2, _ := url.Parse("spiffe://other.example/a,b")
	leaf, err := ca.Issue(&x509.Certificate{
		Subject: pkix.Name{CommonName: "sleep", Organization: []string{"Acme, Inc"}},
		URIs:    []*url.URL{u, u2}, DNSNames: []string{"sleep.default.svc", "sleep.example"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("verified=1\nuri=%s,spiffe://other.example/a%%2Cb\ndns=sleep.default.svc,sleep.example\nsubject=CN=sleep,O=Acme\\, Inc\nhash=%s\nlocal=%s\n",
		id, sha256Hex(leaf.TLS.Certificate[0]), serverID)
	if got := streamAnswer(t, tlsPort, true, leaf); got != want {
		t.Fatalf("over mTLS:\n%s\nwant\n%s", got, want)
	}
	log, _ := os.ReadFile(filepath.Join(prefix, "error.log"))
	if reads := bytes.Count(log, []byte("amesh tls peer: uri sans")); reads != 1 {
		t.Errorf("the peer was read %d times for six variables of one connection, want once", reads)
	}
	if got := streamAnswer(t, plain, false, nil); got != "verified=\nuri=\ndns=\nsubject=\nhash=\nlocal=\n" {
		t.Errorf("plaintext:\n%s", got)
	}
	// A certificate of another root where none has to verify.
	other, err := meshpeer.NewCA("cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	forged, err := other.Workload(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := streamAnswer(t, optional, true, forged); got != "verified=0\nuri=\ndns=\nsubject=\nhash=\nlocal="+serverID+"\n" {
		t.Errorf("unverified certificate:\n%s", got)
	}
	// TLS without a client certificate.
	if got := streamAnswer(t, optional, true, nil); got != "verified=0\nuri=\ndns=\nsubject=\nhash=\nlocal="+serverID+"\n" {
		t.Errorf("no client certificate:\n%s", got)
	}
}
